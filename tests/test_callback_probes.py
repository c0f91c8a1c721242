"""Plain tcp probes on callbacks (issue 25): the runner's slots, cancellation and deadlines, with real sockets.

The callback path and connect_target share one Dial; these tests cover what only the callback path does:
the slot queue shared with coroutine probes, a probe cancelled while queued, and thousands of queued probes
whose deadline passes at once (each finishes inside the previous one's slot release: handed on in a loop).
"""

from __future__ import annotations

import asyncio
import decimal
import ipaddress
import socket

from exporter.config.loader import parse_config
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import TcpState
from exporter.probing.runner import ProbeRunner
from exporter.probing.slots import Slots
from exporter.service.exporter import render_single

MODULE = parse_config("modules:\n  plain: {prober: tcp, timeout: 5s}\ntargets: []\n", "test.yml").modules["plain"]


def literal(port: int, index: int = 1) -> HostPort:
    host = f"127.0.{index // 250}.{index % 250 + 1}"
    return HostPort(host, port, ipaddress.ip_address(host))


def listener() -> socket.socket:
    sock = socket.socket()
    sock.bind(("0.0.0.0", 0))
    sock.listen(4096)
    return sock


def test_slots_hand_on_in_a_loop_not_by_recursion():
    slots = Slots(1)
    assert slots.try_take()
    granted = []

    def finishes_at_once(index: int) -> bool:
        granted.append(index)
        slots.give()  # as a probe whose deadline passed while it waited
        return True

    for index in range(20_000):  # far deeper than the interpreter's recursion limit
        slots.queue(lambda index=index: finishes_at_once(index))
    slots.give()
    assert granted == list(range(20_000))
    assert slots.try_take()
    assert not slots.try_take()  # exactly one slot, as at the start


async def test_queued_probes_past_their_deadline_are_cut_not_a_crash():
    server = listener()
    port = server.getsockname()[1]
    runner = ProbeRunner(Resolver(), max_concurrency=1)
    try:
        assert runner._slots.try_take()  # the only slot is busy (as with a slow target)...
        deadline = Deadline.after(0.1)
        probes = [runner.probe(literal(port, i), MODULE, deadline) for i in range(3000)]
        for _ in range(200):  # ...until every queued probe's deadline has passed
            if deadline.passed():
                break
            await asyncio.sleep(0.05)
        runner._slots.give()  # each queued probe now finishes at once, inside the previous one's release
        results = await asyncio.wait_for(asyncio.gather(*probes), 60)
    finally:
        runner.resolver.close()
        server.close()
    assert all(result.cut_at_deadline and result.tcp_state is TcpState.TIMEOUT for result in results)
    assert runner._slots.try_take()  # the slot came back
    assert not runner._inflight


async def test_a_probe_cancelled_while_queued_gives_nothing_back_twice():
    server = listener()
    port = server.getsockname()[1]
    runner = ProbeRunner(Resolver(), max_concurrency=2)
    try:
        deadline = Deadline.after(10)
        first = [asyncio.ensure_future(runner.probe(literal(port, i), MODULE, deadline)) for i in range(2)]
        queued = asyncio.ensure_future(runner.probe(literal(port, 99), MODULE, deadline))
        queued.cancel()
        results = await asyncio.wait_for(asyncio.gather(*first), 30)
        later = await asyncio.wait_for(runner.probe(literal(port, 100), MODULE, deadline), 30)
    finally:
        runner.resolver.close()
        server.close()
    assert [r.tcp_state for r in results] == [TcpState.OPEN, TcpState.OPEN]
    assert later.tcp_state is TcpState.OPEN
    assert queued.cancelled()
    assert runner._slots.try_take() and runner._slots.try_take()
    assert not runner._slots.try_take()  # two slots, not three
    assert not runner._inflight


async def test_callback_and_coroutine_results_say_the_same():
    """A plain IP-literal probe (callbacks) and the same probe through probe_tcp (coroutine, connect_target)."""
    from exporter.probers.tcp.prober import probe_tcp

    server = listener()
    port = server.getsockname()[1]
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]  # bound, not listening: refused
    runner = ProbeRunner(Resolver(), max_concurrency=4)
    try:
        for target_port, state in ((port, TcpState.OPEN), (closed_port, TcpState.REFUSED)):
            target = HostPort("127.0.0.1", target_port, ipaddress.ip_address("127.0.0.1"))
            by_callbacks = await runner.probe(target, MODULE, Deadline.after(5))
            by_coroutine = await probe_tcp(target, MODULE, Deadline.after(5), runner.resolver)
            for result in (by_callbacks, by_coroutine):
                assert result.tcp_state is state
                assert result.success is (state is TcpState.OPEN)
                assert result.connect_seconds is not None
            assert by_callbacks.detail == by_coroutine.detail
            assert [line.split(" in ")[0].split(" after ")[0] for line in by_callbacks.transcript] == [
                line.split(" in ")[0].split(" after ")[0] for line in by_coroutine.transcript
            ]
    finally:
        runner.resolver.close()
        server.close()
        closed.close()


async def test_times_are_whole_nanoseconds_so_the_exposition_writes_them_short():
    """Connect and probe times are measured in integer nanoseconds and divided once: the value is the double
    nearest a 9-decimal number, and the exposition writes it with at most 9 decimals (of seconds) (a difference of two float
    stamps needs up to 17 significant digits, and over twice the time to write; issue 25)."""
    server = listener()
    port = server.getsockname()[1]
    runner = ProbeRunner(Resolver(), max_concurrency=4)
    try:
        results = await asyncio.wait_for(
            asyncio.gather(*(runner.probe(literal(port, i), MODULE, Deadline.after(10)) for i in range(20))), 30
        )
    finally:
        runner.resolver.close()
        server.close()
    assert [r.tcp_state for r in results] == [TcpState.OPEN] * 20
    for result in results:
        for seconds in (result.connect_seconds, result.duration_seconds):
            assert seconds > 0
            assert round(seconds * 1e9) / 1e9 == seconds
            text = render_single(result, MODULE)
            assert f" {seconds!r}\n" in text
            assert decimal.Decimal(repr(seconds)).as_tuple().exponent >= -9, repr(seconds)  # 9 decimals at most
