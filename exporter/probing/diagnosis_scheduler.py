"""Background path diagnoses for /metrics: never on a scrape's time.

After a scrape, failed targets of modules with ``tcp.diagnose: on_failure`` are submitted; each is
diagnosed at most once per its ``diagnose_interval``, at most ``max_in_flight`` at a time, and the
result is shown by the following scrapes. A target that succeeds again loses its diagnosis.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from exporter.core.address import HostPort
from exporter.pathdiag.model import PathDiagnosis
from exporter.pathdiag.trace import DEFAULT_SETTINGS, DiagnosisSettings, diagnose
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probing.diagnose import diagnosis_address, wants_diagnosis

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("exporter.pathdiag")

Key = tuple[str, str]  # (target as configured, module name)
MAX_QUEUED = 100_000  # more than any config's targets: a bound, not a policy


class Diagnosed(Protocol):
    """A target a scrape reports: a planned one (``PlannedTarget``) or a continuous one."""

    # Read-only: the plan's targets are frozen dataclasses.
    @property
    def address(self) -> HostPort: ...
    @property
    def module(self) -> Module: ...
    @property
    def labels(self) -> str: ...


@dataclass(slots=True)
class _Job:
    key: Key
    address: str
    port: int
    source: str | None


def _ip_literal(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class DiagnosisScheduler:
    def __init__(
        self,
        max_in_flight: int,
        settings: DiagnosisSettings = DEFAULT_SETTINGS,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.max_in_flight = max_in_flight
        self.settings = settings
        self._clock = clock
        self._latest: dict[Key, PathDiagnosis] = {}
        self._started_at: dict[Key, float] = {}
        self._queue: deque[_Job] = deque()
        self._waiting: set[Key] = set()  # queued or running
        self._tasks: set[asyncio.Task[None]] = set()
        # Counters for the exporter's own metrics and for tests of the budget.
        self.started = 0
        self.finished = 0
        self.packets = 0
        self.peak_in_flight = 0
        self.dropped = 0

    # --- called by the scrape -------------------------------------------------------------
    def after_scrape(self, targets: Sequence[Diagnosed], results: Sequence[ProbeResult]) -> int:
        """Submit the failures that want a diagnosis; forget those that succeed. Returns how many
        were submitted. O(targets) with cheap checks: runs on the scrape's path."""
        submitted = 0
        for target, result in zip(targets, results, strict=False):
            tcp = target.module.tcp
            if tcp.diagnose != "on_failure":
                continue
            key = (str(target.address), target.module.name)
            if result.success:
                self._latest.pop(key, None)
                continue
            address = diagnosis_address(result)
            if address is None and result.cut_at_deadline:
                # Cut at the scrape deadline before any outcome: an IP literal can still be diagnosed.
                address = _ip_literal(target.address.host)
                if address is None:
                    continue
                if self.submit(key, address, target.address.port, tcp.diagnose_interval, tcp.source_ip_address):
                    submitted += 1
                continue
            if (
                wants_diagnosis(result, tcp.diagnose)
                and address is not None
                and self.submit(key, address, target.address.port, tcp.diagnose_interval, tcp.source_ip_address)
            ):
                submitted += 1
        return submitted

    def submit(self, key: Key, address: str, port: int, interval: float, source: str | None = None) -> bool:
        if key in self._waiting:
            return False
        started = self._started_at.get(key)
        if started is not None and self._clock() - started < interval:
            return False
        if len(self._queue) >= MAX_QUEUED:
            self.dropped += 1
            return False
        self._waiting.add(key)
        self._queue.append(_Job(key, address, port, source))
        self._start_more()
        return True

    def latest(self, key: Key) -> PathDiagnosis | None:
        return self._latest.get(key)

    def entries(self, targets: Iterable[Diagnosed]) -> list[tuple[str, PathDiagnosis | None]]:
        """(label prefix, diagnosis) of the planned targets that have one."""
        latest = self._latest
        if not latest:
            return []
        # A module whose diagnose setting was turned off by a reload shows none.
        return [
            (target.labels, diagnosis)
            for target in targets
            if target.module.tcp.diagnose == "on_failure"
            and (diagnosis := latest.get((str(target.address), target.module.name))) is not None
        ]

    def retain(self, keys: set[Key]) -> None:
        """After a reload: forget targets that are no longer configured."""
        for table in (self._latest, self._started_at):
            for key in [key for key in table if key not in keys]:
                del table[key]

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    # --- running --------------------------------------------------------------------------
    def _start_more(self) -> None:
        while self._queue and len(self._tasks) < self.max_in_flight:
            job = self._queue.popleft()
            self._started_at[job.key] = self._clock()
            self.started += 1
            task = asyncio.get_running_loop().create_task(self._run(job))
            self._tasks.add(task)
            self.peak_in_flight = max(self.peak_in_flight, len(self._tasks))
            task.add_done_callback(self._done)

    async def _run(self, job: _Job) -> None:
        try:
            diagnosis = await diagnose(job.address, job.port, settings=self.settings, source=job.source)
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug must not stop the other diagnoses
            log.exception("path diagnosis of %s failed", job.key[0])
            return
        finally:
            self._waiting.discard(job.key)
        self.finished += 1
        self.packets += diagnosis.packets
        self._latest[job.key] = diagnosis

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            self._start_more()

    async def close(self) -> None:
        self._queue.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        self._waiting.clear()


class SchedulerCollector:
    """The scheduler's counters as the exporter's own metrics (what the diagnosis traffic costs)."""

    def __init__(self, scheduler: DiagnosisScheduler):
        self.scheduler = scheduler

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        s = self.scheduler
        yield CounterMetricFamily(
            "connectivity_exporter_path_diagnoses_started", "Background path diagnoses started.", value=s.started
        )
        yield CounterMetricFamily(
            "connectivity_exporter_path_diagnoses_finished", "Background path diagnoses finished.", value=s.finished
        )
        yield CounterMetricFamily(
            "connectivity_exporter_path_diagnosis_packets",
            "Probe packets sent by finished background path diagnoses.",
            value=s.packets,
        )
        yield CounterMetricFamily(
            "connectivity_exporter_path_diagnoses_skipped",
            "Path diagnoses not queued because the queue was full.",
            value=s.dropped,
        )
        yield GaugeMetricFamily(
            "connectivity_exporter_path_diagnoses_in_flight",
            "Background path diagnoses running now.",
            value=s.in_flight,
        )
        yield GaugeMetricFamily(
            "connectivity_exporter_path_diagnoses_in_flight_max",
            "Most background path diagnoses that ran at once since the exporter started.",
            value=s.peak_in_flight,
        )
