"""Scenario for tests/test_continuous_loss.py, run inside ``unshare -n`` (only ``lo``, private rules).

nftables drops one SYN in five (``numgen random mod 5 == 0``) on two ports:
- LOSS_PORT, module timeout 500 ms: a dropped SYN is never retransmitted in time -> a timeout,
  so ~20 % of the background probes must be counted as timeouts;
- DELAY_PORT, module timeout 5 s: a dropped SYN is retransmitted after the initial RTO (~1 s), so
  the connect-time histogram holds a fast mode and a ~1 s mode (and ~3 s for two drops), which
  tcpdump on lo sees on the wire (first SYN -> SYN-ACK, captured before the input hook).

Prints one JSON line: counts by state, the delay module's summed histogram and the wire's times.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from bench.pcap import handshakes
from exporter.config.loader import parse_config
from exporter.web.app import EXPORTER, create_app
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples

LOSS_PORT, DELAY_PORT = 9301, 9302
DELAY_BUCKETS = [0.005, 0.5, 0.9, 1.0, 1.02, 1.05, 1.1, 1.25, 1.5, 2.5, 3.0, 3.1, 3.5, 5.0]


def firewall(table: str) -> str:
    rules = "\n".join(
        f"    tcp dport {port} tcp flags & (syn | ack) == syn numgen random mod 5 == 0 drop"
        for port in (LOSS_PORT, DELAY_PORT)
    )
    return f"table inet {table} {{\n  chain input {{\n    type filter hook input priority 0;\n{rules}\n  }}\n}}\n"


def acceptor(port: int, stop: threading.Event) -> None:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", port))  # inside the namespace: only lo exists
    sock.listen(4096)
    sock.settimeout(0.2)
    while not stop.is_set():
        try:
            conn, _ = sock.accept()
        except TimeoutError:
            continue
        conn.close()
    sock.close()


def wire_handshakes(path: str, port: int) -> list[float]:
    """Seconds from each connection's first SYN to its SYN-ACK (pcap from ``tcpdump -i lo``)."""
    return [seconds for _, _, seconds in handshakes(path, port)]


async def main(loss_samples: int) -> dict:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    table = f"ce_continuous_{os.getpid()}"
    subprocess.run(["nft", "-f", "-"], input=firewall(table), text=True, check=True)
    stop = threading.Event()
    threads = [threading.Thread(target=acceptor, args=(port, stop), daemon=True) for port in (LOSS_PORT, DELAY_PORT)]
    for thread in threads:
        thread.start()
    capture_dir = tempfile.mkdtemp(prefix="ce-continuous-")
    pcap = os.path.join(capture_dir, "syn.pcap")
    tcpdump = shutil.which("tcpdump")
    capture = None
    if tcpdump:
        capture = subprocess.Popen(
            [
                tcpdump,
                "-i",
                "lo",
                "-n",
                "-U",
                "-B",
                "16384",
                "-s",
                "96",
                "-w",
                pcap,
                f"tcp port {DELAY_PORT} and tcp[tcpflags] & tcp-syn != 0",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        capture.stderr.readline()  # "listening on lo ..." once it captures
    loss_targets = "".join(f"  - {{target: '127.0.1.{i}:{LOSS_PORT}', module: lossy}}\n" for i in range(1, 101))
    delay_targets = "".join(f"  - {{target: '127.0.2.{i}:{DELAY_PORT}', module: delayed}}\n" for i in range(1, 21))
    config = parse_config(f"""
modules:
  lossy: {{prober: tcp, interval: 1s, timeout: 500ms}}
  delayed:
    prober: tcp
    interval: 1s
    timeout: 5s
    histogram_buckets: {{connect: {DELAY_BUCKETS}}}
targets:
{loss_targets}{delay_targets}""")
    app = create_app(config, registry=CollectorRegistry())
    try:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            exporter = app[EXPORTER]

            async def counted() -> int:  # async: the probes run on this loop meanwhile
                return sum(entry.tally.total for entry in exporter.continuous.targets if entry.module.name == "lossy")

            # ~25 s expected; the limit is generous for a loaded machine.
            await eventually(
                counted, until=lambda n: n >= loss_samples, what=f"{loss_samples} lossy probes", timeout=120
            )
            await exporter.continuous.stop()  # no more probes: the capture below sees them all
            text = await (await client.get("/metrics")).text()
        if capture is not None:
            # tcpdump -U writes each packet as it handles it: every delayed probe that connected has its
            # handshake in the file once tcpdump has caught up (a record still being written is "not yet").
            connected = sum(
                value
                for (name, labels), value in samples(text).items()
                if name == "probe_results_total" and ("module", "delayed") in labels and ("state", "open") in labels
            )
            eventually(
                lambda: len(wire_handshakes(pcap, DELAY_PORT)),
                until=lambda n: n >= connected,
                what=f"tcpdump to have written the {connected:g} handshakes of the delayed probes",
                ignoring=(struct.error, IndexError, FileNotFoundError),
            )
    finally:
        if capture is not None:
            capture.terminate()
            capture.wait(timeout=10)
        stop.set()
        subprocess.run(["nft", "delete", "table", "inet", table], check=False)
    found = samples(text)
    states: dict[str, dict[str, float]] = {"lossy": {}, "delayed": {}}
    buckets: dict[str, float] = {}
    for (name, labels), value in found.items():
        labels = dict(labels)
        if name == "probe_results_total":
            module_states = states[labels["module"]]
            module_states[labels["state"]] = module_states.get(labels["state"], 0) + value
        elif name == "probe_tcp_connect_time_seconds_bucket" and labels["module"] == "delayed":
            buckets[labels["le"]] = buckets.get(labels["le"], 0) + value
    cumulative = [buckets[repr(float(b))] for b in DELAY_BUCKETS] + [buckets["+Inf"]]
    return {
        "states": states,
        "bounds": DELAY_BUCKETS,
        "cumulative": cumulative,
        "wire": wire_handshakes(pcap, DELAY_PORT) if capture is not None else None,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(int(sys.argv[1])))))
