"""Runs probes: bounded concurrency, deadlines, and one probe at a time per target.

Overlapping scrapes (two Prometheus replicas, or a slow scrape meeting the next) share
the result of a probe already in flight for the same target and module instead of
probing it twice at the same moment.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

from exporter.config.unusable import probe_detail
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.base import Cancel, Starter
from exporter.probers.connect.every import apply_verdict, settle, start_collecting, stop_collecting
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.module import Module
from exporter.probers.table import PROBERS
from exporter.probing.collector import collector_held_off
from exporter.probing.slots import Slots

log = logging.getLogger("exporter.probing.runner")

# Lets a probe that stopped at its own deadline report its classified result before the
# scrape-level safety net cancels it.
DEADLINE_GRACE = 0.02

# Modules whose starters ProbeRunner keeps (a config has a few; reloads add new ones).
MAX_STARTERS = 1024


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


class _CallbackProbe:
    """A probe run through its prober's ``start`` (callbacks only): resolves ``outcome``.

    Cancelling ``outcome`` (the awaiting task was cancelled) stops the probe and frees its slot."""

    __slots__ = (
        "runner",
        "key",
        "target",
        "module",
        "deadline",
        "outcome",
        "handle",
        "started",
        "slot",
        "starter",
        "then",
        "loop",
    )

    def __init__(
        self,
        runner: ProbeRunner,
        key: Key,
        target: HostPort,
        module: Module,
        deadline: Deadline,
        starter: Starter,
        then: Callable[[ProbeResult], None] | None,
        loop: asyncio.AbstractEventLoop,
    ):
        self.runner, self.key, self.target, self.module, self.deadline = runner, key, target, module, deadline
        self.starter = starter
        # Passed in, not asked for: asyncio.get_running_loop() costs a getpid() system call on Python 3.11, and
        # this was five of them per probe (issue 25).
        self.loop = loop
        # Called with the result after ``outcome`` is resolved (probe_all's _Chain), instead of awaiting it.
        self.then = then
        self.outcome: asyncio.Future[ProbeResult] = loop.create_future()
        self.handle: Cancel | None = None
        self.started = 0
        self.slot = False

    def granted(self) -> bool:
        """Holding a slot: start the probe (False: it was cancelled while waiting)."""
        if self.outcome.done():
            return False
        self.slot = True
        now = self.loop.time()
        if now >= self.deadline:
            # The slot came too late: starting a connect now would only report a meaningless
            # near-zero "connect time" for a target that was never really tried.
            self.done(deadline_result(self.module, 0.0))
            return True
        self.started = time.perf_counter_ns()  # see Dial._outcome: a short decimal form
        try:
            own_deadline = Deadline(min(self.deadline, now + self.module.timeout))  # Deadline.within, loop passed
            self.handle = self.starter(self.target, own_deadline, self.done, self.loop)
        except Exception as exc:  # a bug in a prober must not take the scrape down
            self.done(self.runner.internal_error(self.target, self.module, exc))
        return True

    def done(self, result: ProbeResult) -> None:
        if self.outcome.done():
            return
        result.duration_seconds = (time.perf_counter_ns() - self.started) / 1e9 if self.started else 0.0
        self.handle = None  # the handle refers back to ``done``: no cycle left for the GC
        self._leave()
        self.outcome.set_result(result)
        if self.then is not None:
            then, self.then = self.then, None
            then(result)

    def stopped(self, outcome: asyncio.Future[ProbeResult]) -> None:
        """``outcome``'s done callback: a cancelled probe stops at once."""
        if outcome.cancelled():
            self.then = None
            if self.handle is not None:
                self.handle.cancel()
                self.handle = None
            self._leave()

    def _leave(self) -> None:
        runner = self.runner
        if runner._inflight.get(self.key, (None,))[0] is self.outcome:
            del runner._inflight[self.key]
        if self.slot:
            self.slot = False
            runner._slots.give()


Key = tuple[str, int, int]


class _Chain:
    """One of probe_all's workers while its targets run on callbacks: the next target starts in the callback that
    delivered the last one's result, with no coroutine step and no awaited future per probe (issue 25).
    ``run()`` resolves to the index of a target that needs the coroutine path, or None when none is left to
    start (or the deadline passed: the rest are filled in as cut). Cancelling the awaiting worker stops the
    probe in flight (its result stays missing: cut, as with a cancelled coroutine)."""

    __slots__ = (
        "runner",
        "targets",
        "results",
        "pending",
        "deadline",
        "waiter",
        "current",
        "index",
        "busy",
        "again",
        "loop",
    )

    def __init__(
        self,
        runner: ProbeRunner,
        targets: Sequence[tuple[HostPort, Module]],
        results: list[ProbeResult | None],
        pending: Iterator[int],
        deadline: Deadline,
    ):
        self.runner, self.targets, self.results, self.pending, self.deadline = (
            runner,
            targets,
            results,
            pending,
            deadline,
        )
        self.loop = asyncio.get_running_loop()
        self.waiter: asyncio.Future[int | None] | None = None
        self.current: _CallbackProbe | None = None
        self.index = -1
        # Re-entry guard: a probe that finishes while it is being started (refused at once, the deadline
        # passed) asks for the next one from inside _advance; the loop there starts it, no recursion.
        self.busy = False
        self.again = False

    async def run(self) -> int | None:
        waiter: asyncio.Future[int | None] = self.loop.create_future()
        self.waiter = waiter
        self._advance()
        try:
            return await waiter
        except asyncio.CancelledError:
            self._stop()
            raise

    def _advance(self) -> None:
        if self.busy:
            self.again = True
            return
        self.busy = True
        try:
            runner, loop = self.runner, self.loop
            while True:
                self.again = False
                index = next(self.pending, None)
                if index is None or loop.time() >= self.deadline:
                    self._finish(None)  # this and the remaining targets were never started: filled in as cut
                    return
                target, module = self.targets[index]
                self.index = index
                probe = self.current = runner._on_callbacks(target, module, self.deadline, self._done, loop)
                if probe is None:
                    self._finish(index)
                    return
                if not self.again:
                    return  # in flight: its callback continues the chain
        finally:
            self.busy = False

    def _done(self, result: ProbeResult) -> None:
        self.results[self.index] = result
        self.current = None
        self._advance()

    def _finish(self, index: int | None) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(index)

    def _stop(self) -> None:
        probe, self.current = self.current, None
        if probe is not None and probe.outcome.cancel():
            probe.stopped(probe.outcome)


class ProbeRunner:
    def __init__(self, resolver: Resolver, max_concurrency: int):
        self.resolver = resolver
        self.max_concurrency = max_concurrency
        self._slots = Slots(max_concurrency)
        # Keyed by (host, port, id(module)): hashing the HostPort and Module dataclasses themselves
        # (an ipaddress object and nested settings) cost more than the rest of the bookkeeping.
        # The module object is alive while its probe is in flight, so its id cannot be reused.
        # Each in-flight probe with the deadline it runs to.
        self._inflight: dict[Key, tuple[asyncio.Future[ProbeResult], float]] = {}
        # Each module's starter (None: the module needs ``_probe``), asked of its prober once, not per probe. Keyed
        # by id(module) with the module kept beside it, so the id is never reused while listed.
        self._starters: dict[int, tuple[Module, Starter | None]] = {}

    def probe(self, target: HostPort, module: Module, deadline: Deadline) -> Awaitable[ProbeResult]:
        """Probe one target before ``deadline`` (loop time), sharing an in-flight probe of it."""
        probe = self._on_callbacks(target, module, deadline, None, asyncio.get_running_loop())
        if probe is not None:
            if not probe.outcome.done():
                probe.outcome.add_done_callback(probe.stopped)
            return probe.outcome
        return self._probe((target.host, target.port, id(module)), target, module, deadline)

    def _on_callbacks(
        self,
        target: HostPort,
        module: Module,
        deadline: Deadline,
        then: Callable[[ProbeResult], None] | None,
        loop: asyncio.AbstractEventLoop,
    ) -> _CallbackProbe | None:
        """The probe started on its prober's callbacks (an IP literal, a prober and module that have them, not in
        flight already), no coroutine per probe (issue 25); None: it needs ``_probe``. ``then`` gets the result."""
        if target.ip is None:
            return None
        key = (target.host, target.port, id(module))
        starter = self._starter(module)
        if starter is None or key in self._inflight:
            return None
        probe = _CallbackProbe(self, key, target, module, deadline, starter, then, loop)
        if not probe.outcome.done():
            self._inflight[key] = (probe.outcome, deadline)
        if self._slots.try_take():
            probe.granted()
        else:
            self._slots.queue(probe.granted)
        return probe

    def _starter(self, module: Module) -> Starter | None:
        entry = self._starters.get(id(module))
        if entry is not None and entry[0] is module:
            return entry[1]
        start = PROBERS[module.prober].start
        starter = start(module) if start is not None and module.unusable is None else None
        if len(self._starters) >= MAX_STARTERS:  # modules of configs reloaded away: kept bounded
            self._starters.clear()
        self._starters[id(module)] = (module, starter)
        return starter

    def internal_error(self, target: HostPort, module: Module, exc: Exception) -> ProbeResult:
        log.error("prober %s raised for target %s", module.prober, target, exc_info=exc)
        return ProbeResult(
            state=PROBERS[module.prober].error_state,
            tcp_state=TcpState.ERROR,
            detail=f"internal error in the {module.prober} prober: {type(exc).__name__}",
        )

    async def _probe(self, key: Key, target: HostPort, module: Module, deadline: Deadline) -> ProbeResult:
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
        await self._slots.take()
        try:
            if deadline.passed():
                # The slot came too late: starting a connect now would only report a meaningless
                # near-zero "connect time" for a target that was never really tried.
                return deadline_result(module, 0.0)
            started = time.perf_counter_ns()
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
                result = self.internal_error(target, module, exc)
            finally:
                if collecting is not None:
                    stop_collecting(collecting)
            result.duration_seconds = (time.perf_counter_ns() - started) / 1e9
            return result
        finally:
            self._slots.give()

    async def probe_all(self, targets: Sequence[tuple[HostPort, Module]], deadline: Deadline) -> list[ProbeResult]:
        """Probe every target concurrently; those unfinished at ``deadline`` are reported as timeouts."""
        loop = asyncio.get_running_loop()
        results: list[ProbeResult | None] = [None] * len(targets)
        pending_indices = iter(range(len(targets)))
        started = loop.time()

        async def worker() -> None:
            chain = _Chain(self, targets, results, pending_indices, deadline)
            while (index := await chain.run()) is not None:
                target, module = targets[index]
                results[index] = await self.probe(target, module, deadline)

        with collector_held_off(loop):
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
