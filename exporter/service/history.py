"""Bounded memory of recent probes for the status page: the latest result of every target, plus
rings of recent probes and of recent failures (failures are kept longer: a flood of successes
does not push them out).

Recording is on the hot path, so it stores references and never formats anything: a scrape
is kept as (time, its planned targets, its results) in O(1), and only the tail of it that can
still be visible in the rings becomes ring entries. Everything is rendered when a page is viewed.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from exporter.core.address import HostPort
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module

DEFAULT_RECENT = 100
DEFAULT_FAILURES = 100
DEFAULT_AD_HOC = 1000


class Probed(Protocol):
    """What a scrape probes: service.PlannedTarget, or anything with these two attributes."""

    # Read-only: the plan's targets are frozen dataclasses.
    @property
    def address(self) -> HostPort: ...
    @property
    def module(self) -> Module: ...


@dataclass(frozen=True, slots=True)
class Recorded:
    id: int
    when: float  # unix time
    address: HostPort
    module: Module
    result: ProbeResult


Row = tuple[HostPort, Module, float | None, ProbeResult | None]


class ProbeHistory:
    def __init__(self, recent: int = DEFAULT_RECENT, failures: int = DEFAULT_FAILURES, ad_hoc: int = DEFAULT_AD_HOC):
        self.recent: deque[Recorded] = deque(maxlen=recent)
        self.failures: deque[Recorded] = deque(maxlen=failures)
        self._ids = itertools.count(1)
        self._scrape: tuple[float, Sequence[Probed], Sequence[ProbeResult]] | None = None
        # Targets probed through /probe (blackbox-style multi-target scrapes), latest result each.
        self._ad_hoc: dict[tuple[HostPort, str], Recorded] = {}
        self._ad_hoc_limit = ad_hoc

    def record_scrape(self, targets: Sequence[Probed], results: Sequence[ProbeResult], when: float) -> None:
        self._scrape = (when, targets, results)
        count = len(results)
        keep = self.recent.maxlen or 0
        for index in range(max(0, count - keep), count):
            target = targets[index]
            self.recent.append(Recorded(next(self._ids), when, target.address, target.module, results[index]))
        wanted = self.failures.maxlen or 0
        failed: list[int] = []
        for index in range(count - 1, -1, -1):  # newest failures only: stop once the ring would be full
            if not results[index].success:
                failed.append(index)
                if len(failed) == wanted:
                    break
        for index in reversed(failed):
            target = targets[index]
            self.failures.append(Recorded(next(self._ids), when, target.address, target.module, results[index]))

    def record_probe(self, address: HostPort, module: Module, result: ProbeResult, when: float) -> None:
        entry = Recorded(next(self._ids), when, address, module, result)
        self.recent.append(entry)
        if not result.success:
            self.failures.append(entry)
        key = (address, module.name)
        self._ad_hoc.pop(key, None)  # re-insert: the dict's order is least recently probed first
        self._ad_hoc[key] = entry
        if len(self._ad_hoc) > self._ad_hoc_limit:
            del self._ad_hoc[next(iter(self._ad_hoc))]

    def find(self, entry_id: int) -> Recorded | None:
        for ring in (self.failures, self.recent):
            for entry in ring:
                if entry.id == entry_id:
                    return entry
        return None

    def _latest_results(self) -> dict[tuple[HostPort, str], tuple[float, ProbeResult]]:
        latest: dict[tuple[HostPort, str], tuple[float, ProbeResult]] = {}
        if self._scrape is not None:
            when, targets, results = self._scrape
            for target, result in zip(targets, results, strict=False):
                latest[(target.address, target.module.name)] = (when, result)
        for key, entry in self._ad_hoc.items():
            seen = latest.get(key)
            if seen is None or seen[0] <= entry.when:
                latest[key] = (entry.when, entry.result)
        return latest

    def latest(self, configured: Sequence[Probed]) -> Iterator[Row]:
        """(address, module, when, result) for every configured target in order; ``when``/``result`` are
        None for a target not probed yet."""
        latest = self._latest_results()
        for target in configured:
            when, result = latest.get((target.address, target.module.name), (None, None))
            yield target.address, target.module, when, result

    def ad_hoc(self, configured: Sequence[Probed]) -> Iterator[Row]:
        """The same for targets only ever probed through /probe (not configured), newest first."""
        shown = {(target.address, target.module.name) for target in configured}
        for key, entry in reversed(self._ad_hoc.items()):
            if key not in shown:
                yield entry.address, entry.module, entry.when, entry.result
