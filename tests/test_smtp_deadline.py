"""An SMTP probe that runs out of time during DNS says so (issue 11, item 5), through the real /probe path.

A resolver that never answers (a silent UDP socket on 127.0.0.1:53, in a private network and mount namespace
whose /etc/resolv.conf points at it) and an event loop that is busy across the deadline (as on a loaded
machine): the prober's own deadline must still decide the state — connect_failed with probe_tcp_state
dns_error — instead of the scrape-level cut reporting the SMTP state `timeout` ("stalled after the greeting").
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.netns,
    pytest.mark.skipif(
        os.geteuid() != 0 or shutil.which("unshare") is None or shutil.which("ip") is None,
        reason="needs root, unshare and ip (a private network and mount namespace)",
    ),
]

CHILD = textwrap.dedent("""
    import asyncio, socket, time
    from aiohttp.test_utils import TestClient, TestServer
    from prometheus_client import CollectorRegistry
    from exporter.web.app import create_app
    from exporter.config.loader import parse_config

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 53))  # receives the queries, never answers
    config = parse_config("modules: {smtp_m: {prober: smtp, timeout: 2s, smtp: {ehlo: probe.test}}}\\n", "t.yml")

    async def main():
        client = TestClient(TestServer(create_app(config, registry=CollectorRegistry())))
        await client.start_server()
        try:
            # Busy from 1.5 s to 2.5 s after now: across the probe's 2 s deadline, whatever the machine's load.
            asyncio.get_running_loop().call_later(1.5, time.sleep, 1.0)
            response = await client.get("/probe", params={"target": "mx.hang.test:25", "module": "smtp_m"})
            print(await response.text())
        finally:
            await client.close()
    asyncio.run(main())
""")


def test_a_probe_out_of_time_during_dns_is_a_dns_failure_not_a_dialogue_timeout(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.1\noptions timeout:4 attempts:1\n")
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    run = subprocess.run(
        [
            "unshare",
            "-n",
            "-m",
            "sh",
            "-c",
            f"mount --make-rprivate / && ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
            f"exec {sys.executable} {script}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert run.returncode == 0, run.stderr
    metrics = run.stdout
    assert 'probe_smtp_state{state="connect_failed"} 1' in metrics, metrics
    assert 'probe_tcp_state{state="dns_error"} 1' in metrics
    assert 'probe_smtp_state{state="timeout"}' not in metrics  # only the current state's series is written
