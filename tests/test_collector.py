"""The cyclic garbage collector is held off while a batch of probes runs (issue 25) and given back after."""

from __future__ import annotations

import asyncio
import gc
import ipaddress
import socket
from collections.abc import Iterator

import pytest

from exporter.config.loader import parse_config
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import TcpState
from exporter.probing import collector
from exporter.probing.collector import collector_held_off
from exporter.probing.runner import ProbeRunner

MODULE = parse_config("modules:\n  plain: {prober: tcp, timeout: 5s}\ntargets: []\n", "test.yml").modules["plain"]


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


async def test_overlapping_batches_give_the_collector_back_when_the_last_ends():
    loop = asyncio.get_running_loop()
    first, second = collector_held_off(loop), collector_held_off(loop)
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # the first to start ends first (two scrapes overlapping)
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


async def test_a_collector_disabled_by_the_caller_stays_disabled():
    gc.disable()
    with collector_held_off(asyncio.get_running_loop()):
        assert not gc.isenabled()
    assert not gc.isenabled()


async def test_an_error_inside_still_gives_the_collector_back():
    with pytest.raises(RuntimeError), collector_held_off(asyncio.get_running_loop()):
        raise RuntimeError("a probe batch failed")
    assert gc.isenabled()


async def test_probe_all_holds_the_collector_off_while_probing_and_gives_it_back():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(512)
    port = server.getsockname()[1]
    targets = [(HostPort("127.0.0.1", port, ipaddress.ip_address("127.0.0.1")), MODULE)] * 3
    targets += [(HostPort(f"127.0.0.{i}", port, ipaddress.ip_address(f"127.0.0.{i}")), MODULE) for i in range(2, 50)]
    runner = ProbeRunner(Resolver(), max_concurrency=8)
    try:
        batch = asyncio.ensure_future(runner.probe_all(targets, Deadline.after(10)))
        await asyncio.sleep(0)  # probe_all has started its workers, none has finished
        assert not batch.done()
        assert not gc.isenabled()
        results = await batch
        assert gc.isenabled()
        assert [r.tcp_state for r in results] == [TcpState.OPEN] * 3 + [TcpState.REFUSED] * 48
    finally:
        runner.resolver.close()
        server.close()


async def test_a_long_batch_gets_the_collector_back_after_the_limit(monkeypatch):
    """A batch waiting on timeouts does not keep the collector off for its whole length: other work on the loop may
    make cyclic garbage meanwhile."""
    monkeypatch.setattr(collector, "HELD_OFF_AT_MOST", 0.05)
    with collector_held_off(asyncio.get_running_loop()):
        assert not gc.isenabled()
        for _ in range(200):  # bounded: the limit's timer fires while the batch still runs
            if gc.isenabled():
                break
            await asyncio.sleep(0.05)
        assert gc.isenabled()
    assert gc.isenabled()
