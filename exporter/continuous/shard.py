"""One process's share of the continuous targets as a scrape reads it.

With ``--runtime.probe-processes=N`` each process probes its own continuous targets (``exporter.continuous.
assign``). On a scrape every process renders its own (the text is written where the counters are, in parallel):
``render_pieces`` gives it piece by piece, which a worker sends as raw byte frames as the serving process takes
them, and ``summary`` the rest (outcomes, diagnosed targets, self-metrics). The serving process writes each family
once: its header, then every process's lines of it (``exporter.continuous.stream``). A scrape only reads.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from exporter.continuous.prober import LATENESS_BUCKETS, ContinuousProber
from exporter.core.exposition import Family
from exporter.core.histogram import TARGETS_PER_CHUNK, tally_families
from exporter.probers.connect.result import ProbeResult


@dataclass
class Stats:
    """The continuous self-metrics of one process, summed over processes on the serving side."""

    lateness_buckets: list[float] = field(default_factory=list)  # cumulative, as prometheus_client keeps them
    lateness_sum: float = 0.0
    missed: float = 0.0
    targets: int = 0

    def add(self, other: Stats) -> None:
        if not self.lateness_buckets:
            self.lateness_buckets = [0.0] * len(other.lateness_buckets)
        self.lateness_buckets = [a + b for a, b in zip(self.lateness_buckets, other.lateness_buckets, strict=True)]
        self.lateness_sum += other.lateness_sum
        self.missed += other.missed
        self.targets += other.targets


@dataclass
class Shard:
    """What one process's continuous targets add to a scrape besides their text (``render_pieces``)."""

    outcomes: dict[tuple[str, str], int]  # (module, state) -> probes since the last scrape
    # (target, module, latest result) of the targets whose module wants path diagnoses (tcp.diagnose):
    # the serving process runs them, and forgets one when its target succeeds again.
    diagnosed: list[tuple[str, str, ProbeResult]]
    stats: Stats


def stats_of(prober: ContinuousProber) -> Stats:
    stats = Stats(targets=len(prober.targets))
    for metric in prober.lateness.collect():
        for sample in metric.samples:
            if sample.name.endswith("_bucket"):
                stats.lateness_buckets.append(sample.value)
            elif sample.name.endswith("_sum"):
                stats.lateness_sum = sample.value
    for metric in prober.missed.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                stats.missed = sample.value
    return stats


# Rendering returns to the event loop once it has run this long (not after every piece: under load each
# loop iteration runs hundreds of probe callbacks, and a thousand yields made a 30,000-target scrape take
# tens of seconds), so a tick due meanwhile starts at most about this late.
YIELD_EVERY = 0.01


class Pacer:
    """``await pacer.pause()`` returns to the event loop when YIELD_EVERY has passed since the last time."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._since = self._loop.time()

    async def pause(self) -> None:
        if self._loop.time() - self._since >= YIELD_EVERY:
            await asyncio.sleep(0)
            self._since = self._loop.time()


# What render_pieces yields: (a latest-result family?, the family's name, lines of up to TARGETS_PER_CHUNK targets).
Piece = tuple[bool, str, bytes]


async def render_pieces(
    prober: ContinuousProber, families: Sequence[Family[ProbeResult]]
) -> AsyncGenerator[Piece, None]:
    """This process's continuous targets written in pieces of up to TARGETS_PER_CHUNK targets, family by family
    (the latest-result families of ``families``, then the counters and histograms), returning to the event loop
    every YIELD_EVERY seconds, so the probes due meanwhile still start on time. Only reads: no object per target
    is made (each would be walked by the garbage collector once the scrape had made enough of them)."""
    pacer = Pacer()
    targets = prober.targets  # a reload replaces the list, never changes it
    probed = [entry for entry in targets if entry.latest is not None]
    for family in families:
        write = family.write_one
        for start in range(0, len(probed), TARGETS_PER_CHUNK):
            body = "".join(
                [
                    write(entry.labels, entry.latest)  # type: ignore[arg-type]  # probed: latest is set
                    for entry in probed[start : start + TARGETS_PER_CHUNK]
                    if family in entry.families
                ]
            )
            if body:
                yield True, family.name, body.encode()
            await pacer.pause()
    for name, _, write_tally in tally_families():
        for start in range(0, len(targets), TARGETS_PER_CHUNK):
            body = "".join(
                [
                    text
                    for entry in targets[start : start + TARGETS_PER_CHUNK]
                    if (text := write_tally(entry.labels, entry.tally))
                ]
            )
            if body:
                yield False, name, body.encode()
            await pacer.pause()


def summary(prober: ContinuousProber) -> Shard:
    """A shard without its pieces: the outcomes since the last scrape, the diagnosed targets, the self-metrics."""
    diagnosed = [
        (str(entry.address), entry.module.name, entry.latest)
        for entry in prober.targets
        if entry.latest is not None and entry.module.tcp.diagnose == "on_failure"
    ]
    return Shard(dict(prober.take_outcomes()), diagnosed, stats_of(prober))


def outcomes_of(shards: Iterable[Shard]) -> Tally[tuple[str, str]]:
    total: Tally[tuple[str, str]] = Tally()
    for shard in shards:
        total.update(shard.outcomes)
    return total


class ContinuousStats(Collector):
    """The continuous self-metrics of the serving process summed with the workers' (as of the last scrape):
    ``connectivity_exporter_continuous_start_lateness_seconds``, ``..._missed_ticks_total``, ``..._targets``.
    A worker that restarts starts its part again from 0: the sums drop, which Prometheus reads as a reset."""

    def __init__(self, local: ContinuousProber, workers: Callable[[], Stats | None]):
        self._local = local
        self._workers = workers

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily]:
        total = stats_of(self._local)
        others = self._workers()
        if others is not None and others.lateness_buckets:
            total.add(others)
        lateness = HistogramMetricFamily(
            "connectivity_exporter_continuous_start_lateness_seconds",
            "How long after its scheduled tick each background probe started (before waiting for a concurrency slot).",
        )
        bounds = [repr(float(b)) for b in LATENESS_BUCKETS] + ["+Inf"]
        lateness.add_metric([], list(zip(bounds, total.lateness_buckets, strict=True)), total.lateness_sum)
        yield lateness
        yield CounterMetricFamily(
            "connectivity_exporter_continuous_missed_ticks",
            "Ticks of continuous targets passed over because the event loop was stalled for longer than their interval.",
            value=total.missed,
        )
        yield GaugeMetricFamily(
            "connectivity_exporter_continuous_targets",
            "Targets probed continuously in the background.",
            value=total.targets,
        )
