"""The TCP connect path on both event loops the exporter runs on: uvloop (the default when
installed) and the plain asyncio loop (the fallback). Real loopback sockets, tiny deadlines."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from exporter.config.loader import Module
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.core.runtime import new_event_loop
from exporter.probers.connect import dial as connect
from exporter.probers.connect.dial import CONNECTS_PER_ITERATION, connect_target
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.tcp.prober import probe_tcp
from exporter.probing.runner import ProbeRunner
from tests.helpers.descriptors import open_fds
from tests.helpers.eventually import eventually

MODULE = Module(name="tcp_connect", prober="tcp", timeout=2.0)


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request) -> Callable:
    """Run a coroutine to completion on a fresh loop of the parametrized kind, made the way the CLI makes it."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop", reason="uvloop is not installed (pip install 'connectivity-exporter[fast]')")

    def run(make_coroutine: Callable) -> object:
        with asyncio.Runner(loop_factory=lambda: new_event_loop(request.param)) as runner:
            loop_kind = runner.run(_loop_kind())
            assert loop_kind == request.param
            return runner.run(make_coroutine())

    return run


async def _loop_kind() -> str:
    return "uvloop" if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else "asyncio"


@pytest.fixture
def full_listener() -> Iterator[int]:
    """A loopback port whose accept queue is full and never drained: the kernel drops new SYNs,
    so a connect to it stays pending until the prober's deadline (a timeout without a firewall)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    try:
        # With backlog 0 the queue holds one connection: this one fills it.
        fillers.append(socket.create_connection(("127.0.0.1", port), timeout=2))
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


@pytest.fixture
def draining_listener() -> Iterator[int]:
    """A loopback listener with a big backlog and a thread accepting and closing, so hundreds of
    connects at once all complete (the ``listener`` fixture's queue would fill)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(4096)
    sock.settimeout(0.05)
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                sock.accept()[0].close()

    thread = threading.Thread(target=drain, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(timeout=2)
        sock.close()


def test_open_and_refused_on_both_loops(run, listener, closed_port):
    async def go():
        resolver = Resolver(max_workers=2)
        try:
            deadline = Deadline.after(2)
            opened = await probe_tcp(parse_host_port(f"127.0.0.1:{listener}"), MODULE, deadline, resolver)
            refused = await probe_tcp(parse_host_port(f"127.0.0.1:{closed_port}"), MODULE, deadline, resolver)
            return opened, refused
        finally:
            resolver.close()

    opened, refused = run(go)
    assert opened.success and opened.tcp_state is TcpState.OPEN
    assert 0 < opened.connect_seconds < 2  # within the deadline: answered, not timed out
    assert opened.transcript[-2].startswith(f"Connected to 127.0.0.1:{listener} in ")
    assert not refused.success and refused.tcp_state is TcpState.REFUSED
    assert 0 < refused.connect_seconds < 2
    assert "ECONNREFUSED" in refused.detail


def test_deadline_gives_timeout_and_leaves_no_socket_or_writer(run, full_listener):
    async def go():
        loop = asyncio.get_running_loop()
        before = open_fds()
        result = ProbeResult()
        # wait_for only guards the test against a hang: the probe's own 50 ms deadline must end it.
        sock = await asyncio.wait_for(
            connect_target(
                result,
                parse_host_port(f"127.0.0.1:{full_listener}"),
                MODULE.tcp,
                loop.time() + 0.05,
                Resolver(max_workers=1),
            ),
            5,
        )
        return result, sock, before, open_fds()

    result, sock, before, after = run(go)
    assert sock is None
    assert result.tcp_state is TcpState.TIMEOUT
    assert 0.04 < result.connect_seconds < 4.0  # the probe's 50 ms deadline, not the test's 5 s guard
    assert result.transcript[-1].startswith("no answer after ")
    assert after == before


def test_cancelled_connect_closes_its_socket(run, full_listener):
    async def go():
        loop = asyncio.get_running_loop()
        before = open_fds()
        task = asyncio.ensure_future(
            connect_target(
                ProbeResult(),
                parse_host_port(f"127.0.0.1:{full_listener}"),
                MODULE.tcp,
                loop.time() + 5,
                Resolver(max_workers=1),
            )
        )

        async def descriptors() -> int:
            return open_fds()

        # Cancelled while its socket is open (connecting to a listener whose backlog is full).
        await eventually(descriptors, until=lambda n: n > before, what="the probe's socket to be open")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return before, open_fds()

    before, after = run(go)
    assert after == before


def test_many_concurrent_probes_through_the_runner(run, draining_listener, closed_port):
    """300 probes at once (more than the connect pacer lets start per iteration): every one classified.
    Each has its own module object, so none shares another's in-flight probe."""

    async def go():
        resolver = Resolver(max_workers=2)
        runner = ProbeRunner(resolver, max_concurrency=300)
        targets = [
            (
                parse_host_port(f"127.0.0.1:{closed_port if i % 3 == 0 else draining_listener}"),
                Module(name=f"tcp_{i}", prober="tcp", timeout=2.0),
            )
            for i in range(300)
        ]
        try:
            return await runner.probe_all(targets, Deadline.after(5))
        finally:
            resolver.close()

    results = run(go)
    assert [r.tcp_state for r in results] == [TcpState.REFUSED if i % 3 == 0 else TcpState.OPEN for i in range(300)]
    assert all(r.connect_seconds is not None and r.connect_seconds < 5 for r in results)


def test_connect_pacer_starts_a_bounded_number_per_iteration_in_order(run):
    """Past CONNECTS_PER_ITERATION in one loop iteration, connects wait their turn (FIFO), a batch per
    iteration; a waiter cancelled meanwhile gives its place up."""

    async def go():
        pacer = connect._ConnectPacer(asyncio.get_running_loop())
        begun: list[int] = []
        cancelled = {CONNECTS_PER_ITERATION}  # the first one that has to wait

        def begin(index: int) -> bool:
            if index in cancelled:
                return False
            begun.append(index)
            return True

        turns = [pacer.turn(lambda i=i: begin(i)) for i in range(3 * CONNECTS_PER_ITERATION)]
        immediate = sum(turns)
        waiting = len(turns) - immediate
        released_per_iteration = []
        for _ in range(4):
            await asyncio.sleep(0)
            released_per_iteration.append(len(begun))
        order_kept = begun == sorted(begun)
        return immediate, waiting, released_per_iteration, order_kept

    immediate, waiting, released, order_kept = run(go)
    assert immediate == CONNECTS_PER_ITERATION
    assert waiting == 2 * CONNECTS_PER_ITERATION
    # After one iteration a batch is released; after the next, the rest (minus the cancelled one).
    assert released[0] == CONNECTS_PER_ITERATION
    assert released[-1] == 2 * CONNECTS_PER_ITERATION - 1
    assert order_kept


class _Waiting:
    """What the connect step's _Watcher calls back (a Dial's role): records each writability report with the
    watcher's dispatch round it came in."""

    def __init__(
        self,
        name: str,
        watcher: connect._Watcher,
        reports: list[tuple[str, int]],
        then: Callable[[], None] | None = None,
    ):
        self.name, self.watcher, self.reports, self.then = name, watcher, reports, then
        self._epoch = 0

    def _on_writable(self, stamp: int) -> None:
        self.reports.append((self.name, self.watcher._epoch))
        if self.then is not None:
            self.then()


def test_watcher_never_hands_an_old_event_to_a_socket_that_reused_its_descriptor(run):
    """Within one dispatch round, a socket closed and its descriptor number taken by a new socket: the event epoll
    reported for the old one is not the new one's (it is reported in a later round, once it is really writable)."""

    async def go():
        watcher = connect._Watcher()
        reports: list[tuple[str, int]] = []
        first, first_peer = socket.socketpair()
        second, second_peer = socket.socketpair()
        replacement: list[socket.socket] = []

        def swap(gone: socket.socket) -> Callable[[], None]:
            def close_and_reuse() -> None:
                if replacement:
                    return
                fd = gone.fileno()
                watcher.forget(fd, closing=True)
                gone.close()
                fresh, fresh_peer = socket.socketpair()  # usually the lowest free number: the one just closed
                if fresh.fileno() != fd:  # made so when something else took it
                    os.dup2(fresh.fileno(), fd)
                    fresh.close()
                    fresh = socket.socket(fileno=fd)
                replacement.extend([fresh, fresh_peer])
                watcher.watch(fd, _Waiting("fresh", watcher, reports))

            return close_and_reuse

        # Both sockets are writable at once: whichever is reported first closes the other and reuses its number.
        watcher.watch(first.fileno(), _Waiting("first", watcher, reports, swap(second)))
        watcher.watch(second.fileno(), _Waiting("second", watcher, reports, swap(first)))
        await eventually(lambda: _now(reports), until=lambda r: len(r) >= 2, what="the fresh socket's own report")
        for sock in [first_peer, second_peer, *replacement]:
            sock.close()
        for sock in (first, second):
            with contextlib.suppress(OSError):
                sock.close()
        return reports

    reports = run(go)
    (opener, opened_round), (fresh, fresh_round) = reports[:2]
    assert opener in ("first", "second") and fresh == "fresh"  # the closed one was never reported
    assert fresh_round > opened_round  # not in the round that reported the old socket's event


async def _now(value: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return list(value)
