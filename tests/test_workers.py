"""--runtime.probe-processes: scrapes split over worker processes, against the real exporter process.

Open targets are listeners on distinct loopback addresses (127.0.0.11-16, one port); the refused
ones are the same port on addresses nothing listens on (127.0.0.21-26). Workers are stalled with
SIGSTOP and killed with SIGKILL, as a hung or crashed process would be.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import REPO, free_port, http, start_exporter
from tests.helpers.metrics_text import state_of, value

OPEN_HOSTS = [f"127.0.0.{n}" for n in range(11, 17)]
REFUSED_HOSTS = [f"127.0.0.{n}" for n in range(21, 27)]
PROCESSES = 3  # the serving process and two workers: each probes 4 of the 12 targets


@pytest.fixture
def port_listened() -> Iterator[int]:
    """One port, listened on (and accepted, so the backlog never fills) on every OPEN_HOSTS address."""
    for _ in range(20):  # bounded: another process may hold the port on one of the addresses
        port = free_port(OPEN_HOSTS[0])
        socks = []
        try:
            for host in OPEN_HOSTS:
                sock = socket.socket()
                socks.append(sock)
                sock.bind((host, port))
                sock.listen(1024)
                sock.setblocking(False)
        except OSError:
            for sock in socks:
                sock.close()
            continue
        break
    else:
        pytest.fail("no port free on all listener addresses")
    stop = threading.Event()
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ)

    def accept_and_close() -> None:
        while not stop.is_set():
            for key, _ in selector.select(0.05):
                with contextlib.suppress(BlockingIOError):
                    key.fileobj.accept()[0].close()

    thread = threading.Thread(target=accept_and_close, daemon=True)
    thread.start()
    try:
        yield port
    finally:
        stop.set()
        thread.join(5)
        selector.close()
        for sock in socks:
            sock.close()


def config_text(port: int, hosts: list[str]) -> str:
    lines = "".join(f"  - {{target: '{host}:{port}', module: tcp_connect}}\n" for host in hosts)
    return f"modules:\n  tcp_connect: {{prober: tcp, timeout: 5s}}\ntargets:\n{lines}"


def expected_state(host: str) -> str:
    return "open" if host in OPEN_HOSTS else "refused"


def scrape(base: str, timeout: str = "10") -> tuple[str, float]:
    started = time.monotonic()
    status, body, _ = http(
        "GET", base + "/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": timeout}, timeout=30
    )
    assert status == 200, body
    return body, time.monotonic() - started


def states(text: str, port: int, hosts: list[str]) -> dict[str, str]:
    return {host: state_of(text, target=f"{host}:{port}") for host in hosts}


def worker_pids(process) -> dict[int, int]:
    """{worker number: pid} of the latest start of each worker."""
    return {int(number): int(pid) for number, pid in re.findall(r"probe worker (\d+) ready\" pid=(\d+)", process.log)}


def wait_for_value(base: str, name: str, expected: float) -> str:
    """/metrics once ``name`` shows ``expected`` (a replaced worker registers asynchronously)."""
    return eventually(
        lambda: scrape(base)[0], until=lambda text: value(text, name) == expected, what=f"{name} == {expected:g}"
    )


@pytest.fixture
def server(tmp_path, port_listened):
    hosts = [host for pair in zip(OPEN_HOSTS, REFUSED_HOSTS, strict=False) for host in pair]
    config = tmp_path / "config.yml"
    config.write_text(config_text(port_listened, hosts))
    port = free_port()
    process = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", f"--runtime.probe-processes={PROCESSES}"
    )
    try:
        for number in range(1, PROCESSES):
            process.wait_for_log(f"probe worker {number} ready")
        yield process, config, f"http://127.0.0.1:{port}", hosts
    finally:
        process.stop()


def test_a_scrape_split_over_workers_reports_every_target(server, port_listened):
    process, _, base, hosts = server
    for _ in range(3):
        text, _ = scrape(base)
        assert states(text, port_listened, hosts) == {host: expected_state(host) for host in hosts}
    assert value(text, "connectivity_exporter_probe_workers") == PROCESSES - 1
    assert value(text, "connectivity_exporter_probes_total", module="tcp_connect", state="open") == 3 * 6
    # The results come back to the serving process: the status page shows every target.
    status, page, _ = http("GET", base + "/")
    assert status == 200 and all(f"{host}:{port_listened}" in page for host in hosts)


def test_a_stalled_worker_costs_its_share_not_the_scrape_and_is_replaced(server, port_listened):
    process, _, base, hosts = server
    stalled = worker_pids(process)[1]
    stalled_share = hosts[1::PROCESSES]  # worker 1 probes targets 1, 4, 7, 10 of the plan
    os.kill(stalled, signal.SIGSTOP)
    try:
        for _attempt in range(3):
            text, seconds = scrape(base, timeout="1.5")
            # Within the scrape timeout: the stalled share is cut at the deadline, the rest is probed.
            assert seconds < 1.5 + 5  # not the stalled worker's forever (the client gives up at 30 s)
            got = states(text, port_listened, hosts)
            assert got == {host: "timeout" if host in stalled_share else expected_state(host) for host in hosts}
        assert value(text, "connectivity_exporter_deadline_exceeded_probes_total") == 3 * len(stalled_share)
        process.wait_for_log("probe worker 1 killed: it stopped answering")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stalled, signal.SIGCONT)
    process.wait_for_log("probe worker 1 ready", count=2, timeout=15)
    text = wait_for_value(base, "connectivity_exporter_probe_workers", PROCESSES - 1)
    assert value(text, "connectivity_exporter_probe_worker_exits_total") == 1
    assert states(scrape(base)[0], port_listened, hosts) == {host: expected_state(host) for host in hosts}


def test_a_killed_worker_has_its_share_probed_here_until_it_is_back(server, port_listened):
    process, _, base, hosts = server
    os.kill(worker_pids(process)[2], signal.SIGKILL)
    process.wait_for_log("probe worker 2 exited")
    text, _ = scrape(base)
    assert states(text, port_listened, hosts) == {host: expected_state(host) for host in hosts}
    assert value(text, "connectivity_exporter_probe_worker_exits_total") == 1
    process.wait_for_log("probe worker 2 ready", count=2, timeout=15)
    text = wait_for_value(base, "connectivity_exporter_probe_workers", PROCESSES - 1)
    assert states(text, port_listened, hosts) == {host: expected_state(host) for host in hosts}


def test_a_reload_hands_the_workers_their_new_share(server, port_listened):
    process, config, base, _ = server
    # Another order and count: every share changes, and two targets are new.
    hosts = [*REFUSED_HOSTS[:4], *OPEN_HOSTS[:5]]
    config.write_text(config_text(port_listened, hosts))
    process.signal(signal.SIGHUP)
    process.wait_for_log("configuration reloaded: 1 modules, 9 targets")
    text, _ = scrape(base)
    assert states(text, port_listened, hosts) == {host: expected_state(host) for host in hosts}
    assert f"{OPEN_HOSTS[5]}:{port_listened}" not in text


def test_workers_end_with_the_exporter(server):
    process, *_ = server
    pids = list(worker_pids(process).values())
    assert len(pids) == PROCESSES - 1
    process.signal(signal.SIGTERM)
    assert process.wait() == 0
    eventually(
        lambda: [pid for pid in pids if os.path.exists(f"/proc/{pid}")],
        until=lambda alive: not alive,
        what="every worker to end with the exporter (the pids still alive are shown)",
    )


@pytest.mark.parametrize("flag", ["0", "65", "two", "-1", "²"])
def test_a_bad_process_count_is_a_one_line_usage_error(flag):
    out = subprocess.run(
        [sys.executable, "-m", "exporter", f"--runtime.probe-processes={flag}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 2
    assert "--runtime.probe-processes" in out.stderr and "whole number from 1 to 64" in out.stderr
    assert "Traceback" not in out.stderr
