"""A path probe whose answer the kernel already has is not called silence because the event loop was too
busy to run its callback before the probe's own timer (a loaded machine; uvloop runs timers first)."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from exporter.core.runtime import new_event_loop
from exporter.pathdiag.model import Reply
from exporter.pathdiag.probes import UdpProbe, tcp_probe

LOOPS = ["asyncio", "uvloop"]


def run_on(loop_name: str, coroutine_factory):
    try:
        loop = new_event_loop(loop_name)
    except Exception as exc:  # uvloop not installed
        pytest.skip(f"{loop_name}: {exc}")
    if loop_name == "uvloop" and type(loop).__module__.split(".")[0] != "uvloop":
        loop.close()
        pytest.skip("uvloop is not installed")
    try:
        return loop.run_until_complete(coroutine_factory())
    finally:
        loop.close()


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_reset_that_arrived_while_the_loop_was_blocked_is_a_reset(loop_name, closed_port):
    async def probe():
        task = asyncio.ensure_future(tcp_probe(socket.AF_INET, "127.0.0.1", closed_port, 64, wait=0.05))
        await asyncio.sleep(0)  # the probe's SYN is out; its RST comes back at once
        time.sleep(1.0)  # the loop is blocked well past the probe's wait: timer and answer are due together
        return await task

    answer, sent = run_on(loop_name, probe)
    assert answer.reply is Reply.RESET, answer
    assert sent == 1


@pytest.mark.parametrize("loop_name", LOOPS)
def test_a_port_unreachable_that_arrived_while_the_loop_was_blocked_is_kept(loop_name, closed_port):
    async def probe():
        udp = UdpProbe(socket.AF_INET, "127.0.0.1", 64, linger=0.05)
        await asyncio.sleep(0)
        time.sleep(1.0)
        return await udp.answer

    answer = run_on(loop_name, probe)
    assert answer.reply is Reply.PORT_UNREACHABLE, answer
