"""Query parameters with Unicode digits or IPv6 zone identifiers: a one-line 400, never a 500.

('²'.isdigit() is True but int('²') fails; a zone identifier names an interface of this host.)"""

from __future__ import annotations

import pytest

from exporter.core.address import AddressError, parse_host_port
from tests.helpers.configs import tcp_config


@pytest.mark.parametrize(
    "path, params",
    [
        ("/probe", {"target": "127.0.0.1:\u00b2"}),
        ("/probe", {"target": "[fe80::1%lo]:9"}),
    ],
)
async def test_unicode_digits_and_zone_ids_are_400(make_client, path, params):
    client = await make_client(tcp_config())
    response = await client.get(path, params=params)
    assert response.status == 400
    assert (await response.text()).count("\n") == 1


@pytest.mark.parametrize(
    "path, status, starts",
    [
        ("/?refresh=\u00b2", 200, "<!doctype html>"),  # a refresh it cannot read is no refresh: the page itself
        ("/history?id=\u00b2", 404, "no probe '\u00b2' in the history"),  # no probe has that id
    ],
)
async def test_unicode_digits_on_the_status_page_are_not_500(make_client, path, status, starts):
    client = await make_client(tcp_config())
    response = await client.get(path)
    assert (response.status, (await response.text())[: len(starts)]) == (status, starts)


def test_zone_identifier_is_refused_with_a_reason():
    with pytest.raises(AddressError) as caught:
        parse_host_port("[fe80::1%eth0]:25")
    assert str(caught.value) == "target '[fe80::1%eth0]:25': IPv6 zone identifiers (%interface) are not supported"
