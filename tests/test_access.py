"""Not an open proxy: probe_access limits what /probe may be asked to probe."""

from __future__ import annotations

import pytest

from exporter.config.access import Denied, ProbeGate, _TokenBuckets
from exporter.config.loader import RateLimit, parse_config
from exporter.core.address import parse_host_port
from tests.helpers.metrics_text import state_of, value

LOCKED = """
modules:
  tcp_connect: {prober: tcp, timeout: 1s}
  internal: {prober: tcp, timeout: 1s}
probe_access:
  allowed_modules: [tcp_connect]
  allowed_networks: [127.0.0.0/8]
  allowed_hosts: ["*.example.com", localhost]
  allowed_ports: [25, "1024-65535"]
"""


def gate(text: str = LOCKED) -> ProbeGate:
    return ProbeGate(parse_config(text).probe_access)


@pytest.mark.parametrize(
    "target, module, reason",
    [
        ("127.0.0.1:25", "tcp_connect", None),
        ("127.9.9.9:4000", "tcp_connect", None),
        ("mx.example.com:25", "tcp_connect", None),
        ("MX.Example.COM.:25", "tcp_connect", None),
        ("localhost:2000", "tcp_connect", None),
        ("127.0.0.1:25", "internal", "module"),
        ("127.0.0.1:22", "tcp_connect", "port"),
        ("10.0.0.1:25", "tcp_connect", "network"),
        ("[::1]:25", "tcp_connect", "network"),
        ("[::ffff:10.0.0.1]:25", "tcp_connect", "network"),
        ("example.com:25", "tcp_connect", "host"),
        ("evil.example.com.attacker.net:25", "tcp_connect", "host"),
    ],
)
def test_allowlist(target, module, reason):
    check = gate()
    if reason is None:
        check.check(parse_host_port(target), module, "192.0.2.7")
    else:
        with pytest.raises(Denied) as caught:
            check.check(parse_host_port(target), module, "192.0.2.7")
        assert caught.value.reason == reason


def test_without_probe_access_everything_is_allowed():
    gate("modules: {tcp_connect: {prober: tcp}}").check(parse_host_port("10.0.0.1:22"), "tcp_connect", "c")


def test_only_ports_restricted_leaves_hosts_open():
    check = gate("modules: {m: {prober: tcp}}\nprobe_access: {allowed_ports: [25]}")
    check.check(parse_host_port("anything.example.net:25"), "m", "c")
    with pytest.raises(Denied):
        check.check(parse_host_port("anything.example.net:26"), "m", "c")


def test_token_bucket_refills_and_forgets_old_clients():
    buckets = _TokenBuckets(RateLimit(requests_per_second=2, burst=3))
    assert [buckets.allow("a", 0.0) for _ in range(4)] == [True, True, True, False]
    assert buckets.allow("b", 0.0)  # another client has its own bucket
    assert not buckets.allow("a", 0.2)  # 0.4 tokens: not yet
    assert buckets.allow("a", 0.6)  # 1.2 tokens
    for index in range(10_001):
        buckets.allow(f"client-{index}", 1.0)
    assert len(buckets._buckets) == 10_000


async def test_http_forbidden_and_counted(make_client, listener):
    client = await make_client(parse_config(LOCKED))
    allowed = await client.get("/probe", params={"target": f"127.0.0.1:{listener}"})
    assert allowed.status == 200
    assert state_of(await allowed.text()) == "open"
    denied = await client.get("/probe", params={"target": "10.0.0.1:25"})
    assert denied.status == 403
    assert await denied.text() == "address 10.0.0.1 is not in probe_access.allowed_networks\n"
    denied = await client.get("/probe", params={"target": f"127.0.0.1:{listener}", "module": "internal"})
    assert denied.status == 403
    metrics = await (await client.get("/metrics")).text()
    assert value(metrics, "connectivity_exporter_probe_requests_denied_total", reason="network") == 1
    assert value(metrics, "connectivity_exporter_probe_requests_denied_total", reason="module") == 1


async def test_http_rate_limit_is_429(make_client, listener):
    client = await make_client(
        parse_config(
            "modules: {tcp_connect: {prober: tcp}}\nprobe_access: {rate_limit: {requests_per_second: 0.01, burst: 2}}"
        )
    )
    statuses = [(await client.get("/probe", params={"target": f"127.0.0.1:{listener}"})).status for _ in range(3)]
    assert statuses == [200, 200, 429]
