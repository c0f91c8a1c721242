"""Edge cases found in review: each once gave a 500, a traceback or a wrong state."""

from __future__ import annotations

import asyncio

import pytest

from exporter.address import AddressError, parse_host_port
from exporter.config import parse_config
from exporter.probers.connect import connect_target
from exporter.probers.resolve import Resolver
from exporter.probers.result import ProbeResult, TcpState
from tests.conftest import tcp_config
from tests.metrics_text import state_of


@pytest.mark.parametrize("path, params", [
    ("/probe", {"target": "127.0.0.1:\u00b2"}),  # '²'.isdigit() is True, int('²') fails
    ("/probe", {"target": "[fe80::1%lo]:9"}),
])
async def test_unicode_digits_and_zone_ids_are_400(make_client, path, params):
    client = await make_client(tcp_config())
    response = await client.get(path, params=params)
    assert response.status == 400
    assert (await response.text()).count("\n") == 1


@pytest.mark.parametrize("path", ["/?refresh=\u00b2", "/history?id=\u00b2"])
async def test_unicode_digits_on_the_status_page_are_not_500(make_client, path):
    client = await make_client(tcp_config())
    assert (await client.get(path)).status in (200, 404)


def test_zone_identifier_is_refused_with_a_reason():
    with pytest.raises(AddressError) as caught:
        parse_host_port("[fe80::1%eth0]:25")
    assert str(caught.value) == "target '[fe80::1%eth0]:25': IPv6 zone identifiers (%interface) are not supported"


async def test_no_connect_starts_after_the_deadline(listener):
    module = tcp_config().modules["tcp_connect"]
    result = ProbeResult()
    resolver = Resolver(max_workers=1)
    try:
        loop = asyncio.get_running_loop()
        sock = await connect_target(result, parse_host_port(f"127.0.0.1:{listener}"), module, loop.time() - 0.001,
                                    resolver)
    finally:
        resolver.close()
    assert sock is None
    assert result.tcp_state is TcpState.TIMEOUT
    assert result.connect_seconds is None


async def test_a_shorter_deadline_in_flight_does_not_decide_a_longer_one(make_client):
    # An SMTP server whose greeting comes after 400 ms: a /probe with a 150 ms budget times out,
    # and a /metrics scrape arriving meanwhile with a 5 s budget must still see the greeting.
    async def slow_greeting(reader, writer):
        await asyncio.sleep(0.4)
        writer.write(b"220 mx.test ready\r\n")
        await writer.drain()
        for _ in range(10):
            line = await reader.readline()
            if not line:
                break
            writer.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 mx.test\r\n")
            await writer.drain()
        writer.close()
    server = await asyncio.start_server(slow_greeting, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(parse_config(f"""
modules: {{smtp_banner: {{prober: smtp, timeout: 5s, smtp: {{ehlo: probe.test}}}}}}
targets: [{{target: "127.0.0.1:{port}", module: smtp_banner}}]
"""))
        short = asyncio.ensure_future(client.get("/probe", params={"target": f"127.0.0.1:{port}", "module": "smtp_banner"},
                                                 headers={"X-Prometheus-Scrape-Timeout-Seconds": "0.3"}))
        await asyncio.sleep(0.05)
        long = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "5.5"})
        short_text, long_text = await (await short).text(), await long.text()
    finally:
        server.close()
    assert state_of(short_text, "probe_smtp_state") == "banner_timeout"
    assert state_of(long_text, "probe_smtp_state", target=f"127.0.0.1:{port}") == "ok"


async def test_reload_applies_max_concurrency_and_keeps_rate_limit_state(make_client, tmp_path):
    from exporter.app import EXPORTER
    from exporter.config import load_config

    path = tmp_path / "config.yml"
    base = ("modules: {tcp_connect: {prober: tcp}}\n"
            "probe_access: {rate_limit: {requests_per_second: 0.01, burst: 1}}\n")
    path.write_text(base + "global: {max_concurrency: 64}\n")
    client = await make_client(load_config(str(path)))
    exporter = client.server.app[EXPORTER]
    assert exporter.runner.max_concurrency == 64
    assert (await client.get("/probe", params={"target": "127.0.0.1:1"})).status == 200
    path.write_text(base + "global: {max_concurrency: 8}\n")
    assert (await client.post("/-/reload")).status == 200
    assert exporter.runner.max_concurrency == 8
    # The same probe_access: the client's spent token is not handed back by a reload.
    assert (await client.get("/probe", params={"target": "127.0.0.1:1"})).status == 429
