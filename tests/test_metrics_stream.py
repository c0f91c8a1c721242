"""/metrics is streamed: written as it is rendered, in the serving process and in a probe worker (issue 23).

A real exporter with ``--runtime.probe-processes=2`` and thousands of continuous targets (every one refused by a
closed loopback port, so nothing needs to accept them) plus a few scrape-time targets. The checks: a large reply
is valid exposition, each family once with all its lines together (the serving process's and the worker's lines
of a family are merged under one header), plain and gzip; a client that reads slowly does not make the serving
process hold the reply (its peak RSS, VmHWM, grows by far less than the reply); a worker killed in the middle of
a scrape leaves a reply that is still well-formed, and the scrape ends (never a hang).
"""

from __future__ import annotations

import gzip
import os
import signal
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import ExporterProcess, free_port, start_exporter

pytestmark = pytest.mark.slow

TARGETS = 12_000  # ~6,000 per process: several pieces (1,000 targets each) of every family in both
SCRAPED = 5  # scrape-time targets: their lines share families with the continuous targets'
READ_TIMEOUT = 120.0  # bounds a hang; a passing test never waits for it


def config_text(closed_port: int) -> str:
    continuous = [
        f"  - {{target: '127.{1 + i // 62500}.{i // 250 % 250 + 1}.{i % 250 + 1}:{closed_port}', module: every}}"
        for i in range(TARGETS)
    ]
    scraped = [f"  - {{target: '127.0.9.{i + 1}:{closed_port}', module: once}}" for i in range(SCRAPED)]
    return (
        "global: {max_concurrency: 256}\n"
        "modules:\n"
        "  every: {prober: tcp, timeout: 2s, interval: 10s}\n"
        "  once: {prober: tcp, timeout: 2s}\n"
        "targets:\n" + "\n".join([*continuous, *scraped]) + "\n"
    )


def get(port: int, encoding: str = "identity") -> bytes:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Accept-Encoding": encoding})
    with urllib.request.urlopen(request, timeout=READ_TIMEOUT) as response:
        assert response.headers["Transfer-Encoding"] == "chunked"
        body = response.read()
        assert response.headers.get("Content-Encoding", "identity") == encoding
    return gzip.decompress(body) if encoding == "gzip" else body


def families_of(text: str) -> dict[str, list]:
    """Family name -> its samples, asserting the text is well-formed: parsable, each family's HELP once, and each
    family's samples together (the parser starts a new family whenever the name changes, so a family split in
    two would come out twice)."""
    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        assert family.name not in families, f"family {family.name} split or written twice"
        families[family.name] = family.samples
    helps = [line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")]
    assert len(helps) == len(set(helps)), "a HELP line written twice"
    assert text.endswith("\n")
    return families


def targets_in(samples: list) -> set[str]:
    return {sample.labels["target"] for sample in samples if "target" in sample.labels}


def pid_status(pid: int, key: str) -> float:
    """A /proc/PID/status memory field (VmRSS, VmHWM) in MB."""
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def worker_pids(exporter: ExporterProcess) -> list[int]:
    with open(f"/proc/{exporter.proc.pid}/task/{exporter.proc.pid}/children") as f:
        return [int(pid) for pid in f.read().split()]


def slow_get(port: int, after_start=None) -> tuple[bytes, bool]:
    """GET /metrics read slowly through a small receive buffer: (the body, de-chunked; whether it came whole,
    i.e. ended with the last chunk). ``after_start`` is called once the first 64 KB are in."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        sock.sendall(
            b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept-Encoding: identity\r\nConnection: close\r\n\r\n"
        )
        data = bytearray()
        while chunk := sock.recv(16384):
            data += chunk
            if after_start is not None and len(data) >= 65536:
                after_start()
                after_start = None
            time.sleep(0.001)  # a slow reader (the pace, not a wait for anything)
    head, _, raw = bytes(data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert b"transfer-encoding: chunked" in head.lower()
    return dechunked(raw)


def dechunked(raw: bytes) -> tuple[bytes, bool]:
    body, at = bytearray(), 0
    while True:
        line_end = raw.find(b"\r\n", at)
        if line_end < 0:
            return bytes(body), False
        size = int(raw[at:line_end].split(b";")[0], 16)
        if size == 0:
            return bytes(body), True
        if line_end + 2 + size > len(raw):
            return bytes(body), False
        body += raw[line_end + 2 : line_end + 2 + size]
        at = line_end + 2 + size + 2


@pytest.fixture(scope="module")
def exporter(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ExporterProcess, int]]:
    config = Path(tmp_path_factory.mktemp("stream")) / "config.yml"
    config.write_text(config_text(free_port()))
    port = free_port()
    process = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--runtime.probe-processes=2"
    )
    try:
        process.wait_for_log('msg="probe worker 1 ready"', timeout=READ_TIMEOUT)
        # Every continuous target probed once (each is probed within its first 10 s interval), on both processes.
        eventually(
            lambda: families_of(get(port).decode()),
            until=lambda families: len(targets_in(families["probe_success"])) == TARGETS + SCRAPED,
            what="every target in probe_success",
            timeout=READ_TIMEOUT,
        )
        yield process, port
    finally:
        process.stop()


def test_a_large_two_process_reply_is_well_formed_plain_and_gzip(exporter: tuple[ExporterProcess, int]) -> None:
    process, port = exporter
    assert "continuous targets per process: 0=" in process.log
    for encoding in ("identity", "gzip"):
        families = families_of(get(port, encoding).decode())
        # Every target under one header per family: the scrape-time targets', and both processes' continuous ones.
        assert len(targets_in(families["probe_success"])) == TARGETS + SCRAPED
        assert len(targets_in(families["probe_results"])) == TARGETS  # counters: continuous targets only
        assert families["connectivity_exporter_continuous_targets"][0].value == TARGETS


def test_a_slow_client_does_not_make_the_serving_process_hold_the_reply(exporter: tuple[ExporterProcess, int]) -> None:
    process, port = exporter
    serving = process.proc.pid
    get(port)  # one whole scrape first: what any scrape allocates once is not counted below
    with open(f"/proc/{serving}/clear_refs", "w") as f:
        f.write("5")  # VmHWM := VmRSS now, so the peak below is this scrape's
    resident = pid_status(serving, "VmRSS")
    body, whole = slow_get(port)
    peak = pid_status(serving, "VmHWM")
    assert whole
    families_of(body.decode())
    reply_mb = len(body) / 2**20
    assert reply_mb > 15  # large enough that holding it would show
    # Holding the reply (the old way) costs at least its size; streamed, the serving process holds a few pieces,
    # the worker's credit window and the socket's buffer. Half the reply is a generous bound between the two.
    assert peak - resident < reply_mb / 2, (peak, resident, reply_mb)


def test_a_client_gone_mid_reply_is_one_log_line_and_the_next_scrape_is_whole(
    exporter: tuple[ExporterProcess, int],
) -> None:
    process, port = exporter
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.settimeout(READ_TIMEOUT)
        sock.connect(("127.0.0.1", port))
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = 0
        while received < 65536 and (chunk := sock.recv(16384)):
            received += len(chunk)
    # Closed with the reply unread (a reset): the serving process stops rendering and tells the worker to stop.
    process.wait_for_log("scrape client went away before the end of the reply")
    families = families_of(get(port).decode())
    assert len(targets_in(families["probe_success"])) == TARGETS + SCRAPED
    assert "Error handling request" not in process.log


def results_counted(families: dict[str, list]) -> float:
    return sum(sample.value for sample in families["probe_results"] if sample.name == "probe_results_total")


def test_concurrent_scrapes_are_each_whole_and_counters_never_go_back(exporter: tuple[ExporterProcess, int]) -> None:
    """Two Prometheus servers (an HA pair) and a person scraping at once: three streams from the same worker,
    interleaved on its pipe. Each reply has every target; the counters a later scrape shows are never below what
    any of the concurrent replies showed (a count handed to one scrape is never lost to the next)."""
    _, port = exporter
    with ThreadPoolExecutor(3) as pool:
        replies = list(pool.map(lambda encoding: get(port, encoding), ["identity", "gzip", "identity"]))
    counted = []
    for body in replies:
        families = families_of(body.decode())
        assert len(targets_in(families["probe_success"])) == TARGETS + SCRAPED
        assert len(targets_in(families["probe_results"])) == TARGETS
        counted.append(results_counted(families))
    assert min(counted) >= TARGETS  # every continuous target counted at least once in each reply
    later = results_counted(families_of(get(port).decode()))
    assert later >= max(counted), (later, counted)


def test_a_worker_killed_mid_scrape_leaves_a_well_formed_reply(exporter: tuple[ExporterProcess, int]) -> None:
    process, port = exporter
    (worker,) = worker_pids(process)
    body, whole = slow_get(port, after_start=lambda: os.kill(worker, signal.SIGKILL))
    # The reply ends (no hang), whole and well-formed: the dead worker's remaining lines are left out.
    assert whole
    families = families_of(body.decode())
    assert "probe_success" in families
    process.wait_for_log("continuous shard cut short")
    process.wait_for_log('msg="probe worker 1 ready"', count=2, timeout=READ_TIMEOUT)  # and it is back
    assert families_of(get(port).decode())
