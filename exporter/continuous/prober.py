"""Continuous probing: targets with an ``interval`` are probed in the background on their own
schedule, and a scrape only reads their latest result, counters and histograms.

One timer callback drives every target (a heap of next tick times, no task per idle target);
each due target gets one task for its probe, run through the exporter's ``ProbeRunner`` so the
global ``max_concurrency`` bounds background probes and scrape probes together. A target whose
previous probe is still running at its tick is not probed again (no overlap): the tick is counted
in ``probe_skipped_total``.

With ``--runtime.probe-processes`` each process runs one of these for the targets it owns
(``exporter.continuous.assign``); a scrape reads every process's (``exporter.continuous.shard``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import gc
import heapq
import itertools
import time
from array import array
from collections import Counter as Tally
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from exporter.continuous.schedule import first_tick, following_tick, phase
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.exposition import Family
from exporter.core.histogram import HistogramBuckets, Layout, TargetTally, render_tallies
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.table import PROBERS
from exporter.probing.runner import deadline_result

if TYPE_CHECKING:
    from exporter.probers.module import Module
    from exporter.probing.runner import ProbeRunner

# A probe still running this long after its own deadline is abandoned as a timeout, so one stuck
# probe cannot stop its target from ever being probed again.
DEADLINE_SAFETY = 1.0
# Ticks this close ahead are started in the same timer callback (the loop's timers are ~1 ms coarse).
EARLY = 0.0005
# The status page compares counts with a snapshot taken between WINDOW_STEP and 2 * WINDOW_STEP ago.
WINDOW_STEP = 150.0
# From this many continuous targets on, the cyclic garbage collector is run on the prober's terms
# (``settle_heap``, ``FULL_COLLECT_EVERY``): with 30,000-40,000 targets its automatic full collections walked
# 60,000-450,000 objects every 1-5 s and stopped the event loop for 0.1-1.6 s each (measured), the largest cause
# of late ticks.
FREEZE_FROM = 1000
# While a prober runs, a full collection runs every this many seconds (~0.05-0.2 s of CPU with 20,000-30,000
# targets in the process: a fraction of a percent of the ticks late, instead of a tenth), and never on its own.
FULL_COLLECT_EVERY = 60.0
FULL_COLLECT_NEVER = 1 << 30
LATENESS_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


@functools.cache
def layout_for(prober_name: str, buckets: HistogramBuckets, states: tuple[str, ...] | None = None) -> Layout:
    """Every target of a prober, state set and buckets shares one layout. The label values of
    probe_results_total are the states the target can end in (``states``; None: all the prober's),
    every one written (0 until seen, so rate() sees a first failure)."""
    prober = PROBERS[prober_name]
    return Layout(
        states if states is not None else [state.value for state in prober.states],
        buckets,
        with_banner=prober.reads_greeting,
        fallback_state=prober.error_state,
    )


def target_layout(module: Module, address: HostPort) -> Layout:
    prober = PROBERS[module.prober]
    states = prober.counted_states(module, address) if prober.counted_states is not None else None
    return layout_for(module.prober, module_buckets(module), states)


def module_buckets(module: Module) -> HistogramBuckets:
    return module.histogram_buckets or HistogramBuckets()


def settle_heap() -> None:
    """Collect once, then freeze what is left (the plan, the targets, their counters) out of the cyclic
    garbage collector: it never walks them again. Thawed and collected first, so what a reload dropped is
    freed: one pause per (re)load."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


# malloc's M_MMAP_THRESHOLD (glibc): blocks this large or larger get their own pages, returned when freed. Without
# a fixed value glibc raises its threshold after the first large block is freed, and then a scrape's pieces of
# text (64-600 KB each, ~125 MB with 60,000 targets) come from the heap, which keeps the pages (measured: the
# serving process's RSS stayed 60-190 MB higher after a scrape).
MMAP_THRESHOLD = 64 * 1024
_M_MMAP_THRESHOLD = -3


def return_large_blocks() -> None:
    """Have malloc give large blocks their own pages (glibc; elsewhere nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


class _FullCollections:
    """While any prober runs, full collections happen only on its timer (every FULL_COLLECT_EVERY seconds), never
    on the collector's own count; the young generations are collected as usual. The last prober to stop gives
    the collector its own threshold back."""

    running = 0
    saved = 10

    @classmethod
    def take(cls) -> None:
        if cls.running == 0:
            young, middle, cls.saved = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_COLLECT_NEVER)
        cls.running += 1

    @classmethod
    def give_back(cls) -> None:
        cls.running -= 1
        if cls.running == 0:
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, cls.saved)


class Planned(Protocol):
    """What the plan holds for a target (service.PlannedTarget)."""

    # Read-only: the plan's targets are frozen dataclasses.
    @property
    def address(self) -> HostPort: ...
    @property
    def module(self) -> Module: ...
    @property
    def labels(self) -> str: ...
    @property
    def families(self) -> frozenset[Family[ProbeResult]]: ...


class ContinuousTarget:
    """One continuous target: its schedule, its latest result and everything counted for it."""

    __slots__ = (
        "address",
        "module",
        "labels",
        "families",
        "interval",
        "tally",
        "latest",
        "latest_at",
        "tick",
        "running",
        "active",
        "snapshots",
        "_reads_greeting",
    )

    def __init__(self, planned: Planned, interval: float, tally: TargetTally):
        self.address = planned.address
        self.module = planned.module
        self.labels = planned.labels
        self.families = planned.families
        self.interval = interval
        self.tally = tally
        self.latest: ProbeResult | None = None
        self.latest_at: float | None = None  # unix time the latest probe ended
        self.tick = 0.0  # loop time of the next tick, 0 before the first
        self.running = False
        self.active = True  # False once a reload removed it
        # (unix time, counts) for the status page's window; the first is the zero it started from.
        self.snapshots: list[tuple[float, array[int]]] = [(time.time(), tally.window_counts())]
        self._reads_greeting = PROBERS[planned.module.prober].reads_greeting

    def record(self, result: ProbeResult, when: float) -> None:
        self.latest = result
        self.latest_at = when
        self.tally.observe(
            str(result.state),
            result.success,
            result.connect_seconds if result.tcp_state is TcpState.OPEN else None,
            result.details.greeting_seconds() if self._reads_greeting else None,
            result.duration_seconds,
        )


@dataclass(frozen=True)
class WindowStats:
    seconds: float
    probes: int
    failures: int
    connect_buckets: list[int]


class ContinuousProber:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.targets: list[ContinuousTarget] = []
        self._by_key: dict[tuple[str, str], ContinuousTarget] = {}
        self._heap: list[tuple[float, int, ContinuousTarget]] = []
        self._order = itertools.count()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Callable[[], ProbeRunner | None] = lambda: None
        self._timer: asyncio.TimerHandle | None = None
        self._window_timer: asyncio.TimerHandle | None = None
        self._collect_timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._outcomes: Tally[tuple[str, str]] = (
            Tally()
        )  # (module, state) -> probes, handed to the scrape's self-metrics
        registry = registry if registry is not None else CollectorRegistry()
        self.lateness = Histogram(
            "connectivity_exporter_continuous_start_lateness_seconds",
            "How long after its scheduled tick each background probe started (before waiting for a concurrency slot).",
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.missed = Counter(
            "connectivity_exporter_continuous_missed_ticks",
            "Ticks of continuous targets passed over because the event loop was stalled for longer "
            "than their interval.",
            registry=registry,
        )
        self.target_count = Gauge(
            "connectivity_exporter_continuous_targets",
            "Targets probed continuously in the background.",
            registry=registry,
        )

    # --- configuration -----------------------------------------------------------------------

    def update(self, planned: Sequence[tuple[Planned, float]]) -> None:
        """Take the continuous targets of a (re)loaded config. A target whose target and module
        stay keeps its counters, histograms and schedule (its histograms restart if the module's
        buckets changed); removed targets are dropped, their running probes discarded."""
        targets: list[ContinuousTarget] = []
        by_key: dict[tuple[str, str], ContinuousTarget] = {}
        for item, interval in planned:
            key = (str(item.address), item.module.name)
            layout = target_layout(item.module, item.address)
            entry = self._by_key.get(key)
            if entry is None:
                entry = ContinuousTarget(item, interval, TargetTally(layout))
            else:
                if entry.tally.layout is not layout:
                    entry.tally = entry.tally.relaid(layout)
                    entry.snapshots = [(time.time(), entry.tally.window_counts())]
                if entry.interval != interval:
                    entry.tick = 0.0  # rescheduled on its phase for the new interval
                entry.address, entry.module, entry.labels, entry.families, entry.interval = (
                    item.address,
                    item.module,
                    item.labels,
                    item.families,
                    interval,
                )
            targets.append(entry)
            by_key[key] = entry
        for key, entry in self._by_key.items():
            if key not in by_key:
                entry.active = False
        self.targets, self._by_key = targets, by_key
        self.target_count.set(len(targets))
        if len(targets) >= FREEZE_FROM:
            settle_heap()
        if self._loop is not None:
            self._reschedule()

    # --- running -----------------------------------------------------------------------------

    def start(self, runner: Callable[[], ProbeRunner | None]) -> None:
        """Start probing on the running loop; ``runner`` returns the exporter's current runner."""
        self._loop = asyncio.get_running_loop()
        self._runner = runner
        self._reschedule()
        self._window_timer = self._loop.call_later(WINDOW_STEP, self._rotate_windows)
        self._collect_timer = self._loop.call_later(FULL_COLLECT_EVERY, self._collect_cycles)
        _FullCollections.take()
        return_large_blocks()

    async def stop(self) -> None:
        if self._collect_timer is not None:
            _FullCollections.give_back()
        for timer in (self._timer, self._window_timer, self._collect_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._window_timer = self._collect_timer = None
        self._loop = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)

    def _reschedule(self) -> None:
        loop = self._loop
        assert loop is not None
        loop_now, wall_now = loop.time(), time.time()
        heap = []
        for entry in self.targets:
            if entry.tick == 0.0:
                entry.tick = first_tick(
                    entry.interval, phase(str(entry.address), entry.module.name), wall_now, loop_now
                )
            heap.append((entry.tick, next(self._order), entry))
        heapq.heapify(heap)
        self._heap = heap
        self._arm()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._heap and self._loop is not None:
            self._timer = self._loop.call_at(self._heap[0][0], self._fire)

    def _fire(self) -> None:
        self._timer = None
        loop = self._loop
        if loop is None:
            return
        heap = self._heap
        now = loop.time()
        missed_total = 0
        try:
            while heap and heap[0][0] <= now + EARLY:
                tick, _, entry = heapq.heappop(heap)
                if entry.running:
                    entry.tally.skip()
                else:
                    entry.running = True
                    task = loop.create_task(self._probe(entry, tick))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                entry.tick, missed = following_tick(tick, entry.interval, now)
                missed_total += missed
                heapq.heappush(heap, (entry.tick, next(self._order), entry))
        finally:
            if missed_total:
                self.missed.inc(missed_total)
            self._arm()

    async def _probe(self, entry: ContinuousTarget, tick: float) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        self.lateness.observe(max(0.0, started - tick))
        module = entry.module
        try:
            runner = self._runner()
            if runner is None:
                return
            deadline = Deadline(started + module.timeout)
            try:
                async with asyncio.timeout_at(deadline + DEADLINE_SAFETY):
                    result = await runner.probe(entry.address, module, deadline)
            except TimeoutError:
                result = deadline_result(module, loop.time() - started)
        finally:
            entry.running = False
        if entry.active:
            entry.record(result, time.time())
            self._outcomes[(module.name, str(result.state))] += 1

    def _rotate_windows(self) -> None:
        now = time.time()
        for entry in self.targets:
            entry.snapshots = [*entry.snapshots[-1:], (now, entry.tally.window_counts())]
        if self._loop is not None:
            self._window_timer = self._loop.call_later(WINDOW_STEP, self._rotate_windows)

    def _collect_cycles(self) -> None:
        gc.collect()  # what is not frozen: results, tasks, heap entries made since the last one
        if self._loop is not None:
            self._collect_timer = self._loop.call_later(FULL_COLLECT_EVERY, self._collect_cycles)

    # --- reading (scrapes and the status page) -----------------------------------------------

    def take_outcomes(self) -> Tally[tuple[str, str]]:
        """(module, state) -> background probes since the last call, for the exporter's probe counter."""
        outcomes, self._outcomes = self._outcomes, Tally()
        return outcomes

    def latest_results(self) -> list[tuple[str, ProbeResult, frozenset[Family[ProbeResult]]]]:
        """(labels, latest result, families) of every target probed at least once, for the gauges."""
        return [(entry.labels, entry.latest, entry.families) for entry in self.targets if entry.latest is not None]

    def latest_rows(self) -> Iterator[tuple[HostPort, Module, float | None, ProbeResult | None]]:
        """Status page rows (address, module, when, latest result), as ``ProbeHistory.latest`` gives."""
        for entry in self.targets:
            yield entry.address, entry.module, entry.latest_at, entry.latest

    def render(self) -> Iterator[str]:
        return render_tallies([(entry.labels, entry.tally) for entry in self.targets])

    def window(self, entry: ContinuousTarget, now: float) -> WindowStats:
        """Counts since the oldest snapshot (WINDOW_STEP to twice that ago), or since the start."""
        layout = entry.tally.layout
        current = entry.tally.window_counts()
        states = len(layout.states)
        base = layout.hist_base[0]
        when, old = entry.snapshots[0]
        delta = [a - b for a, b in zip(current, old, strict=False)]
        probes = sum(delta[:states])
        failures = probes - delta[states + 2]
        return WindowStats(now - when, probes, failures, delta[base:])
