"""Runs probes: bounded concurrency, deadlines, and one probe at a time per target.

Overlapping scrapes (two Prometheus replicas, or a slow scrape meeting the next) share
the result of a probe already in flight for the same target and module instead of
probing it twice at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from exporter.config.unusable import probe_detail
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.connect.every import apply_verdict, settle, start_collecting, stop_collecting
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.module import Module
from exporter.probers.table import PROBERS

log = logging.getLogger("exporter.probing.runner")

# Lets a probe that stopped at its own deadline report its classified result before the
# scrape-level safety net cancels it.
DEADLINE_GRACE = 0.02


def deadline_result(module: Module, waited: float) -> ProbeResult:
    result = ProbeResult(
        state=PROBERS[module.prober].cut_state,
        tcp_state=TcpState.TIMEOUT,
        duration_seconds=waited,
        cut_at_deadline=True,
    )
    result.detail = (
        "the probe had not finished when the scrape deadline was reached "
        f"(module {module.name}, timeout {module.timeout:g}s)"
    )
    result.note(result.detail)
    return result


def unusable_result(module: Module) -> ProbeResult:
    """The failed result of a module that names a file that cannot be read (exporter/config/unusable.py)."""
    assert module.unusable is not None
    detail = probe_detail(module.name, module.unusable)
    result = ProbeResult(state=PROBERS[module.prober].error_state, tcp_state=TcpState.ERROR, detail=detail)
    result.note(detail)
    return result


def fill_cut(
    results: list[ProbeResult | None], targets: Sequence[tuple[HostPort, Module]], waited: float
) -> list[ProbeResult]:
    """``results`` with every missing entry (a probe cut at the deadline) filled with a timeout result."""
    # Every target of a module cut at the deadline gets the same (read-only) result object:
    # with 10,000 targets behind a dead path, building one each would delay the reply.
    cut: dict[int, ProbeResult] = {}
    out = []
    for index, result in enumerate(results):
        if result is None:
            module = targets[index][1]
            result = cut.get(id(module))
            if result is None:
                result = cut[id(module)] = deadline_result(module, waited)
        out.append(result)
    return out


class ProbeRunner:
    def __init__(self, resolver: Resolver, max_concurrency: int):
        self.resolver = resolver
        self.max_concurrency = max_concurrency
        self._slots = asyncio.Semaphore(max_concurrency)
        # Keyed by (host, port, id(module)): hashing the HostPort and Module dataclasses themselves
        # (an ipaddress object and nested settings) cost more than the rest of the bookkeeping.
        # The module object is alive while its probe is in flight, so its id cannot be reused.
        # Each in-flight probe with the deadline it runs to.
        self._inflight: dict[tuple[str, int, int], tuple[asyncio.Future[ProbeResult], float]] = {}

    async def probe(self, target: HostPort, module: Module, deadline: Deadline) -> ProbeResult:
        """Probe one target before ``deadline`` (loop time), sharing an in-flight probe of it."""
        key = (target.host, target.port, id(module))
        loop = asyncio.get_running_loop()
        for _ in range(3):
            entry = self._inflight.get(key)
            if entry is None:
                break
            shared, owner_deadline = entry
            try:
                result = await asyncio.shield(shared)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not shared.cancelled() or (task is not None and task.cancelling()):
                    raise
                continue  # the owner was cancelled (its scrape ended), not us: probe ourselves
            if owner_deadline < deadline and loop.time() >= owner_deadline - 0.001:
                # The owner ran out of its shorter time: its timeout says nothing about ours.
                continue
            return result
        outcome: asyncio.Future[ProbeResult] = loop.create_future()
        self._inflight[key] = (outcome, deadline)
        try:
            result = await self._run(target, module, deadline)
        except BaseException:
            outcome.cancel()
            raise
        finally:
            if self._inflight.get(key, (None,))[0] is outcome:
                del self._inflight[key]
        outcome.set_result(result)
        return result

    async def _run(self, target: HostPort, module: Module, deadline: Deadline) -> ProbeResult:
        async with self._slots:
            if deadline.passed():
                # The slot came too late: starting a connect now would only report a meaningless
                # near-zero "connect time" for a target that was never really tried.
                return deadline_result(module, 0.0)
            started = time.perf_counter()
            if module.unusable is not None:  # a file it names cannot be read: nothing is sent
                return unusable_result(module)
            own_deadline = deadline.within(module.timeout)
            # tcp.probe_addresses: all leaves connects running while the prober works (connect_all.py).
            collecting = start_collecting() if module.tcp.probe_addresses == "all" else None
            try:
                result = await PROBERS[module.prober].probe(target, module, own_deadline, self.resolver)
                if collecting is not None:
                    await settle(collecting)
                    apply_verdict(result)
            except Exception as exc:  # a bug in a prober must not take the scrape down
                log.exception("prober %s raised for target %s", module.prober, target)
                result = ProbeResult(
                    state=PROBERS[module.prober].error_state,
                    tcp_state=TcpState.ERROR,
                    detail=f"internal error in the {module.prober} prober: {type(exc).__name__}",
                )
            finally:
                if collecting is not None:
                    stop_collecting(collecting)
            result.duration_seconds = time.perf_counter() - started
            return result

    async def probe_all(self, targets: Sequence[tuple[HostPort, Module]], deadline: Deadline) -> list[ProbeResult]:
        """Probe every target concurrently; those unfinished at ``deadline`` are reported as timeouts."""
        loop = asyncio.get_running_loop()
        results: list[ProbeResult | None] = [None] * len(targets)
        pending_indices = iter(range(len(targets)))
        started = loop.time()

        async def worker() -> None:
            for index in pending_indices:
                if loop.time() >= deadline:
                    return  # this and the remaining targets were never started: filled in below
                target, module = targets[index]
                results[index] = await self.probe(target, module, deadline)

        workers = [asyncio.ensure_future(worker()) for _ in range(min(len(targets), self.max_concurrency))]
        try:
            if workers:
                await asyncio.wait(workers, timeout=max(0.0, deadline - loop.time()) + DEADLINE_GRACE)
        finally:
            unfinished = [task for task in workers if not task.done()]
            for task in unfinished:
                task.cancel()
            if unfinished:
                # Cancelled probes close their sockets in ``finally``; this returns at once.
                await asyncio.wait(unfinished, timeout=1.0)
        return fill_cut(results, targets, loop.time() - started)
