"""Target parsing: host:port, bracketed IPv6, default ports, and clear errors."""

from __future__ import annotations

import ipaddress

import pytest

from exporter.core.address import AddressError, parse_host_port
from tests.helpers.configs import tcp_config


@pytest.mark.parametrize(
    "text, host, port, version",
    [
        ("db.example.com:5432", "db.example.com", 5432, None),
        ("127.0.0.1:25", "127.0.0.1", 25, 4),
        ("[::1]:25", "::1", 25, 6),
        ("[2001:DB8::1]:443", "2001:db8::1", 443, 6),
        ("localhost:1", "localhost", 1, None),
        ("mx_1.example.:65535", "mx_1.example.", 65535, None),
    ],
)
def test_valid_targets(text, host, port, version):
    parsed = parse_host_port(text)
    assert (parsed.host, parsed.port) == (host, port)
    assert (parsed.ip.version if parsed.ip else None) == version


def test_ip_literals_are_parsed_once_for_the_hot_path():
    assert parse_host_port("10.0.0.1:1").ip == ipaddress.IPv4Address("10.0.0.1")


@pytest.mark.parametrize(
    "text, default, port", [("mx.example", 25, 25), ("[::1]", 465, 465), ("mx.example:587", 25, 587)]
)
def test_default_port(text, default, port):
    assert parse_host_port(text, default).port == port


def test_str_round_trips():
    for text in ("a.example:1", "[::1]:25", "127.0.0.1:9"):
        assert str(parse_host_port(text)) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty target"),
        ("db:0", "target 'db:0': port 0 is out of range 1-65535"),
        ("db:http", "target 'db:http': port 'http' is not a number"),
        ("db", "target 'db': missing port (expected host:port)"),
        ("::1", "target '::1': write IPv6 addresses in brackets, e.g. [::1]:PORT"),
        # '::1:9816' is also an IPv6 address: both readings are named, the host:port one first.
        (
            "::1:9816",
            "target '::1:9816': write IPv6 addresses in brackets: [::1]:9816 for port 9816 of ::1, or [::1:9816]:PORT",
        ),
        (
            "1:2:3:4:5:6:7:8:25",
            "target '1:2:3:4:5:6:7:8:25': write IPv6 addresses in brackets, e.g. [1:2:3:4:5:6:7:8]:25",
        ),
        (
            "::ffff:192.0.2.1:25",
            "target '::ffff:192.0.2.1:25': write IPv6 addresses in brackets, e.g. [::ffff:192.0.2.1]:25",
        ),
        ("a:b:c", "target 'a:b:c': expected host:port"),
        ("[::1:25", "target '[::1:25': missing ']' after the IPv6 address"),
        ("[nothost]:25", "target '[nothost]:25': 'nothost' is not an IPv6 address"),
        ("a b:1", "target 'a b:1' contains whitespace, control characters or '/'; expected host:port"),
        ("http://x:1", "target 'http://x:1' contains whitespace, control characters or '/'; expected host:port"),
        ("-bad-.example:1", "target '-bad-.example:1': '-bad-.example' is not a valid host name or IPv4 address"),
        (":25", "target ':25': missing host"),
        ("a" * 301, "target is longer than 300 characters"),
    ],
)
def test_invalid_targets(text, message):
    with pytest.raises(AddressError) as caught:
        parse_host_port(text)
    assert str(caught.value) == message


async def test_probe_query_with_an_unbracketed_ipv6_target_suggests_the_brackets(make_client):
    client = await make_client(tcp_config())
    response = await client.get("/probe", params={"target": "::1:9816"})
    assert response.status == 400
    text = await response.text()
    assert text.count("\n") == 1 and "[::1]:9816 for port 9816 of ::1" in text
