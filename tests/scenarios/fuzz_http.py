"""Property-based requests to /probe and /metrics, run inside ``unshare -n`` by tests/test_fuzz_http.py.

Inside the namespace only ``lo`` exists: whatever target hypothesis invents, a name fails to
resolve at once and a non-loopback address has no route, so nothing leaves the machine.
Prints one JSON line: the number of requests and any violations found.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time

from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from exporter.config.loader import parse_config
from exporter.web.app import create_app

CONFIG = """
modules:
  tcp_connect: {prober: tcp, timeout: 300ms}
  v6: {prober: tcp, timeout: 300ms, tcp: {preferred_ip_protocol: ip6, ip_protocol_fallback: false}}
targets:
  - {target: '127.0.0.1:1', module: tcp_connect}
"""
LATIN1 = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, blacklist_characters="\x7f"), max_size=40)
TARGETS = st.one_of(
    st.text(max_size=60),
    st.builds(
        lambda h, p: f"{h}:{p}",
        st.sampled_from(
            [
                "127.0.0.1",
                "localhost",
                "[::1]",
                "::1",
                "0.0.0.0",
                "127.1.2.3",
                "a..b",
                "-x",
                "x" * 300,
                "[::ffff:1.2.3.4]",
            ]
        ),
        st.one_of(st.integers(-5, 70000).map(str), st.text(max_size=6)),
    ),
)
PARAMS = st.fixed_dictionaries(
    {},
    optional={
        "target": TARGETS,
        "module": st.one_of(st.sampled_from(["tcp_connect", "v6", "", "nope"]), st.text(max_size=20)),
        "debug": st.one_of(st.sampled_from(["true", "false", "TRUE", "1"]), st.text(max_size=5)),
        "timeout": st.text(max_size=5),
    },
)
HEADERS = st.fixed_dictionaries({}, optional={"X-Prometheus-Scrape-Timeout-Seconds": LATIN1})


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    loop = asyncio.new_event_loop()
    app = create_app(parse_config(CONFIG), registry=CollectorRegistry())
    client = TestClient(TestServer(app, host="127.0.0.1"), loop=loop)
    loop.run_until_complete(client.start_server())
    violations: list[str] = []
    count = 0

    async def call(path: str, params: dict, headers: dict) -> tuple[int, str, float]:
        started = time.monotonic()
        response = await asyncio.wait_for(client.get(path, params=params, headers=headers), 10)
        return response.status, await response.text(), time.monotonic() - started

    @settings(max_examples=int(sys.argv[1]), deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(["/probe", "/probe", "/metrics"]), PARAMS, HEADERS)
    def request(path, params, headers):
        nonlocal count
        count += 1
        try:
            status, body, elapsed = loop.run_until_complete(call(path, params, headers))
        except TimeoutError:
            violations.append(f"hang: {path} {params!r} {headers!r}")
            return
        if not (200 <= status < 300 or 400 <= status < 500):
            violations.append(f"status {status}: {path} {params!r} {headers!r}: {body[:200]!r}")
        if 400 <= status < 500 and (not body.endswith("\n") or "\n" in body[:-1] or "Traceback" in body):
            violations.append(f"reason is not one line: {path} {params!r}: {body[:300]!r}")
        if elapsed > 8:  # every module times out after 300 ms; the hang guard is 10 s
            violations.append(f"slow ({elapsed:.1f}s): {path} {params!r} {headers!r}")

    try:
        request()
    finally:
        loop.run_until_complete(client.close())
        loop.close()
    print(json.dumps({"requests": count, "violations": violations[:20]}))


if __name__ == "__main__":
    main()
