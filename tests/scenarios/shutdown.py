"""SIGTERM during an in-flight /probe, run inside a private network namespace (``unshare -n``).

Run as ``unshare -n python3 -m tests.scenarios.shutdown GRACE PROBE_TIMEOUT``; prints one JSON object of
observations for tests/test_shutdown.py to assert on. Inside the namespace an nftables rule drops SYNs
to port 9001, so a probe of 127.0.0.1:9001 stays in flight until its module timeout.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from tests.helpers.eventually import GaveUp, eventually
from tests.helpers.exporter_process import start_exporter

DROPPED_PORT = 9001
EXPORTER_PORT = 9816


def syn_sent_to(port: int) -> bool:
    """Whether a socket in SYN-SENT (state 02 in /proc/net/tcp) targets ``port``: the probe is in flight."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[3] == "02" and int(fields[2].split(":")[1], 16) == port:
            return True
    return False


def main(grace: str, probe_timeout: str) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(
        ["nft", "-f", "-"],
        check=True,
        text=True,
        input=f"""
table inet shutdown_test {{
  chain input {{ type filter hook input priority 0; tcp dport {DROPPED_PORT} drop; }}
}}""",
    )
    directory = tempfile.mkdtemp()
    config = Path(directory) / "config.yml"
    config.write_text(f"modules:\n  slow: {{prober: tcp, timeout: {probe_timeout}}}\n")
    process = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}", f"--web.shutdown-timeout={grace}"
    )
    reply: dict = {}

    def scrape() -> None:
        url = f"http://127.0.0.1:{EXPORTER_PORT}/probe?target=127.0.0.1:{DROPPED_PORT}&module=slow"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                reply.update(status=response.status, body=response.read().decode())
        except Exception as exc:
            reply.update(error=type(exc).__name__)
        reply["finished"] = time.monotonic()

    client = threading.Thread(target=scrape)
    client.start()
    try:  # reported, not raised: the test says what it means if the probe never got its SYN out
        in_flight = eventually(
            lambda: syn_sent_to(DROPPED_PORT), what="the probe's SYN to the dropped port", interval=0.01
        )
    except GaveUp:
        in_flight = False

    signalled = time.monotonic()
    process.signal(signal.SIGTERM)
    process.wait_for_log("shutting down")
    with socket.socket() as late:
        late_connect = late.connect_ex(("127.0.0.1", EXPORTER_PORT))
    try:
        exit_code = process.wait(30)
    finally:
        process.stop()
    exited = time.monotonic()
    client.join(30)
    return {
        "in_flight": in_flight,
        "late_connect_errno": late_connect,
        "exit_code": exit_code,
        "exit_after": exited - signalled,
        "reply": {k: v for k, v in reply.items() if k != "finished"},
        "reply_after": reply.get("finished", exited) - signalled,
        "log": process.log,
    }


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:3])))
