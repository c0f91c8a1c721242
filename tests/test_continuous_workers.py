"""Continuous targets spread over real probe worker processes (``--runtime.probe-processes``).

A real exporter with real worker processes probes real loopback listeners (one listener on 0.0.0.0 answers
every 127.x.y.z address) and closed ports. The tests check the contract of issue 23: a target's owner is
stable across reloads (its counters never restart on a reload), a killed worker's targets move to the
processes still up with their counters visibly restarting (a drop, which Prometheus reads as a reset) and
keep being probed, the others are untouched, and the values are those of a single-process run.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from exporter.continuous.assign import identity, owner
from tests.helpers.exporter_process import ExporterProcess, free_port, http, start_exporter
from tests.helpers.metrics_text import samples

INTERVAL = "300ms"
WAIT = 30.0  # generous: a loaded 2-core machine


@pytest.fixture
def listener() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("0.0.0.0", 0))
        sock.listen(512)
        yield sock.getsockname()[1]


def targets(open_port: int, closed_port: int, count: int) -> list[str]:
    """Half open, half refused, all on distinct loopback addresses."""
    return [f"127.0.3.{i}:{open_port if i % 2 else closed_port}" for i in range(1, count + 1)]


def write_config(path: Path, addresses: list[str]) -> None:
    lines = [f"  - {{target: '{address}', module: every}}" for address in addresses]
    path.write_text(
        f"modules:\n  every: {{prober: tcp, timeout: 1s, interval: {INTERVAL}}}\ntargets:\n" + "\n".join(lines) + "\n"
    )


def scrape(port: int) -> dict[str, dict[str, float]]:
    """target -> {state: count} of probe_results_total."""
    status, body, _ = http("GET", f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    counts: dict[str, dict[str, float]] = {}
    for (name, pairs), value in samples(body).items():
        if name == "probe_results_total":
            labels = dict(pairs)
            counts.setdefault(labels["target"], {})[labels["state"]] = value
    return counts


def totals(counts: dict[str, dict[str, float]]) -> dict[str, float]:
    return {target: sum(states.values()) for target, states in counts.items()}


def wait_until(port: int, check, what: str) -> dict[str, dict[str, float]]:
    deadline = time.monotonic() + WAIT
    while True:
        counts = scrape(port)
        if check(counts):
            return counts
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {WAIT}s: {what}; last scrape {counts}")
        time.sleep(0.2)


def spread_logged(exporter: ExporterProcess, count: int) -> str:
    """The last 'continuous targets per process' line once the worker has its share."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        lines = [line for line in exporter.log.splitlines() if "continuous targets per process" in line]
        if lines and re.search(r"1=[1-9]", lines[-1]) and str(count) in lines[-1]:
            return lines[-1]
        time.sleep(0.1)
    raise AssertionError(f"the worker never got its share:\n{exporter.log}")


def worker_pid(exporter: ExporterProcess) -> int:
    pids = re.findall(r'msg="probe worker 1 ready" pid=(\d+)', exporter.log)
    assert pids, exporter.log
    return int(pids[-1])


def owned_by_worker(addresses: list[str]) -> set[str]:
    return {a for a in addresses if owner(identity(a, "every"), [0, 1]) == 1}


def test_owner_stable_across_reload_and_a_killed_workers_targets_restart_visibly(tmp_path: Path, listener: int) -> None:
    addresses = targets(listener, free_port(), 40)
    on_worker = owned_by_worker(addresses)
    assert 0 < len(on_worker) < len(addresses)  # both processes own some (fixed by the hash)
    config = tmp_path / "config.yml"
    write_config(config, addresses)
    port = free_port()
    exporter = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--runtime.probe-processes=2"
    )
    try:
        spread_logged(exporter, len(addresses) - len(on_worker))
        before = wait_until(port, lambda c: len(c) == 40 and min(totals(c).values()) >= 3, "every target probed")
        # Open targets count open, closed ones refused, whichever process probes them.
        for address, states in before.items():
            expected = "open" if address.endswith(f":{listener}") else "refused"
            assert states[expected] == sum(states.values()), (address, states)

        # A reload that removes one target and adds one: every kept target keeps its process, so its
        # counters keep growing from where they were (a move would restart them at 0).
        kept, added = addresses[1:], "127.0.3.99:" + str(listener)
        write_config(config, [*kept, added])
        exporter.signal(signal.SIGHUP)
        exporter.wait_for_log("continuous targets per process", count=3)  # start, worker ready, reload
        after = wait_until(port, lambda c: added in c and sum(c[added].values()) >= 2, "the added target probed")
        assert addresses[0] not in after
        shrunk = {a: (totals(before)[a], totals(after)[a]) for a in kept if totals(after)[a] < totals(before)[a]}
        assert not shrunk, f"counters restarted by a reload: {shrunk}"

        # Kill the worker: its targets restart at 0 in the serving process (a visible drop) and keep
        # being probed; the serving process's own targets are untouched.
        current = [*kept, added]
        moved = owned_by_worker(current)
        stayed = set(current) - moved
        last = totals(scrape(port))
        os.kill(worker_pid(exporter), signal.SIGKILL)
        exporter.wait_for_log("probe worker 1 exited")
        dropped = wait_until(
            port,
            lambda c: all(a in c and sum(c[a].values()) < last[a] for a in moved),
            "every moved target's counters restarted below their last value",
        )
        assert all(totals(dropped)[a] >= last[a] for a in stayed), "a target that did not move lost counts"
        # Probed again after the move, before the worker is back (or after: either way never stuck).
        wait_until(
            port,
            lambda c: all(
                sum(c[a].values()) > totals(dropped)[a] or sum(c[a].values()) < totals(dropped)[a] for a in moved
            ),
            "the moved targets probed again",
        )
        # The worker is started again and takes its targets back (one more visible restart).
        exporter.wait_for_log('msg="probe worker 1 ready"', count=2)
        spread_logged(exporter, len(stayed))
        back = wait_until(port, lambda c: all(sum(c[a].values()) >= 1 for a in current), "all probed")
        assert set(back) == set(current)
    finally:
        exporter.stop()


def test_two_processes_write_what_one_process_writes(tmp_path: Path, listener: int) -> None:
    addresses = targets(listener, free_port(), 20)
    config = tmp_path / "config.yml"
    write_config(config, addresses)
    series: dict[int, dict[tuple[str, frozenset], float]] = {}
    for processes in (1, 2):
        port = free_port()
        exporter = start_exporter(
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--runtime.probe-processes={processes}",
        )
        try:
            if processes == 2:
                spread_logged(exporter, len(addresses) - len(owned_by_worker(addresses)))
            wait_until(port, lambda c: len(c) == 20 and min(totals(c).values()) >= 2, "every target probed")
            _, body, _ = http("GET", f"http://127.0.0.1:{port}/metrics")
            _, page, _ = http("GET", f"http://127.0.0.1:{port}/")
            elsewhere = len(owned_by_worker(addresses))
            # The status page lists this process's own continuous targets and says how many the worker has.
            assert (f"{elsewhere:,} more continuous targets are probed by the probe worker" in page) == (processes == 2)
        finally:
            exporter.stop()
        series[processes] = {
            (name, pairs): value for (name, pairs), value in samples(body).items() if ("module", "every") in pairs
        }
    # The same series (names and labels), one family each (the parser would merge a family split in two).
    assert set(series[1]) == set(series[2])
    # The same values where they do not depend on timing: states, success, failures in a row (0 or counting).
    for key, value in series[1].items():
        name = key[0]
        if name in ("probe_success", "probe_tcp_state", "probe_ip_protocol"):
            assert series[2][key] == value, key
        if name == "probe_results_total":
            assert (series[2][key] > 0) == (value > 0), key


def test_the_merge_writes_each_family_once_with_every_sources_lines_and_drops_a_piece_out_of_order() -> None:
    import asyncio

    from exporter.continuous.stream import merged

    class Pieces:
        def __init__(self, pieces: list[tuple[bool, str, bytes]]):
            self.pieces = list(pieces)

        async def next(self) -> tuple[bool, str, bytes] | None:
            return self.pieces.pop(0) if self.pieces else None

    order = [
        ((True, "a"), "#a\n", lambda: [b"a0\n"]),
        ((True, "b"), "#b\n", list),
        ((True, "c"), "#c\n", None),
        ((False, "t"), "#t\n", None),
    ]
    local = Pieces([(True, "a", b"a1\n"), (True, "c", b"c1\n"), (False, "t", b"t1\n")])
    # The worker's: a family the serving process does not know, and a piece of "a" after "c" (both dropped).
    worker = Pieces(
        [
            (True, "a", b"a2\n"),
            (True, "x", b"x2\n"),
            (True, "c", b"c2\n"),
            (True, "a", b"late\n"),
            (False, "t", b"t2\n"),
        ]
    )

    async def run() -> bytes:
        return b"".join([chunk async for chunk in merged(order, [local, worker])])

    # "b" has no lines anywhere: no header either.
    assert asyncio.run(run()) == b"#a\na0\na1\na2\n#c\nc1\nc2\n#t\nt1\nt2\n"
    assert local.pieces == [] and worker.pieces == []  # every source read to its end (a worker's summary follows)
