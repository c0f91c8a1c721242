"""The HTTP server against real loopback listeners and closed ports."""

from __future__ import annotations

import subprocess

import pytest

from exporter.config.loader import parse_config
from tests.helpers.configs import require_binary, tcp_config
from tests.helpers.metrics_text import samples, state_of, value


async def test_metrics_probes_every_target_and_tells_open_from_refused(make_client, listener, closed_port):
    config = parse_config(f"""
modules: {{tcp_connect: {{prober: tcp, timeout: 2s}}}}
targets:
  - {{target: "127.0.0.1:{listener}", module: tcp_connect, labels: {{site: hq}}}}
  - {{target: "127.0.0.1:{closed_port}", module: tcp_connect}}
  - {{target: "localhost:{listener}", module: tcp_connect}}
""")
    client = await make_client(config)
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = await response.text()

    open_labels = {"target": f"127.0.0.1:{listener}", "module": "tcp_connect", "site": "hq"}
    assert state_of(text, **open_labels) == "open"
    assert value(text, "probe_success", **open_labels) == 1
    assert value(text, "probe_ip_protocol", **open_labels) == 4
    assert value(text, "probe_dns_lookup_time_seconds", **open_labels) == 0  # IP literal: no lookup
    assert 0 < value(text, "probe_tcp_connect_duration_seconds", **open_labels) < 2  # below the timeout

    refused = {"target": f"127.0.0.1:{closed_port}"}
    assert state_of(text, **refused) == "refused"
    assert value(text, "probe_success", **refused) == 0
    # A refused connect has a connect time too: the time until the RST came back.
    assert 0 < value(text, "probe_tcp_connect_duration_seconds", **refused) < 2

    by_name = {"target": f"localhost:{listener}"}
    assert state_of(text, **by_name) == "open"
    assert value(text, "probe_dns_lookup_time_seconds", **by_name) > 0
    assert value(text, "probe_duration_seconds", **by_name) >= value(
        text, "probe_tcp_connect_duration_seconds", **by_name
    )
    assert value(text, "connectivity_exporter_probes_total", module="tcp_connect", state="refused") == 1
    assert value(text, "connectivity_exporter_probes_total", module="tcp_connect", state="open") == 2
    assert value(text, "connectivity_exporter_scrape_duration_seconds_count", endpoint="metrics") == 1


async def test_one_hot_state_has_exactly_one_series_at_one(make_client, closed_port):
    client = await make_client(tcp_config(f"127.0.0.1:{closed_port}"))
    text = await (await client.get("/metrics")).text()
    series = {dict(labels)["state"]: v for (name, labels), v in samples(text).items() if name == "probe_tcp_state"}
    assert series == {"open": 0, "refused": 1, "timeout": 0, "unreachable": 0, "dns_error": 0, "error": 0}


async def test_probe_endpoint_has_no_target_labels(make_client, listener):
    client = await make_client(tcp_config())
    response = await client.get("/probe", params={"target": f"127.0.0.1:{listener}", "module": "tcp_connect"})
    assert response.status == 200
    text = await response.text()
    assert value(text, "probe_success") == 1
    assert state_of(text) == "open"
    assert "target=" not in text and "module=" not in text


async def test_probe_ipv6_literal(make_client):
    import socket

    sock = socket.socket(socket.AF_INET6)
    try:
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    sock.listen(8)
    try:
        client = await make_client(tcp_config())
        text = await (await client.get("/probe", params={"target": f"[::1]:{sock.getsockname()[1]}"})).text()
    finally:
        sock.close()
    assert state_of(text) == "open"
    assert value(text, "probe_ip_protocol") == 6


async def test_debug_output_explains_the_outcome(make_client, closed_port):
    client = await make_client(tcp_config())
    response = await client.get("/probe", params={"target": f"127.0.0.1:{closed_port}", "debug": "true"})
    assert response.status == 200
    text = await response.text()
    assert "Verdict: FAILURE, state refused" in text
    assert "nothing listens on this port or access is rejected" in text
    assert f"Trying 127.0.0.1:{closed_port}..." in text
    assert "ECONNREFUSED" in text
    assert 'probe_tcp_state{state="refused"} 1' in text


@pytest.mark.parametrize(
    "params, reason",
    [
        ({}, "missing parameter 'target' (expected target=HOST:PORT)"),
        ({"target": ""}, "missing parameter 'target' (expected target=HOST:PORT)"),
        ({"target": "db"}, "invalid parameter 'target': target 'db': missing port (expected host:port)"),
        ({"target": "db:99999"}, "invalid parameter 'target': target 'db:99999': port 99999 is out of range 1-65535"),
        ({"target": "a:1", "module": "nope"}, "unknown module 'nope' (defined: tcp_connect)"),
        ({"target": "a:1", "debug": "yes"}, "invalid parameter 'debug' 'yes': expected true or false"),
    ],
)
async def test_bad_probe_requests_get_400_with_one_line(make_client, params, reason):
    client = await make_client(tcp_config())
    response = await client.get("/probe", params=params)
    assert response.status == 400
    assert await response.text() == reason + "\n"


@pytest.mark.parametrize("header", ["abc", "-1", "0", "nan", "inf"])
async def test_bad_scrape_timeout_header_gets_400(make_client, header):
    client = await make_client(tcp_config())
    response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": header})
    assert response.status == 400
    assert "X-Prometheus-Scrape-Timeout-Seconds" in await response.text()


async def test_health_ready_and_landing_page(make_client):
    client = await make_client(tcp_config("127.0.0.1:1"))
    assert await (await client.get("/-/healthy")).text() == "Healthy\n"
    assert (await client.get("/-/ready")).status == 200
    page = await (await client.get("/")).text()
    assert 'href="/metrics"' in page and 'href="/-/healthy"' in page and "1 configured targets" in page


async def test_exposition_passes_promtool(make_client, listener, closed_port):
    promtool = require_binary("promtool")
    config = parse_config(f"""
modules: {{tcp_connect: {{prober: tcp, timeout: 2s}}}}
targets:
  - {{target: "127.0.0.1:{listener}", module: tcp_connect, labels: {{note: "quote \\" backslash \\\\ newline \\n"}}}}
  - {{target: "127.0.0.1:{closed_port}", module: tcp_connect}}
""")
    client = await make_client(config)
    text = await (await client.get("/metrics")).text()
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    # The escaped label survives a round trip through a real parser.
    assert value(text, "probe_success", note='quote " backslash \\ newline \n') == 1
