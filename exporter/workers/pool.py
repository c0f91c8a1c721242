"""The probe worker processes (``--runtime.probe-processes``): supervision and plan distribution.

A scrape of the configured targets is split by target: target i of the plan is always probed by
process i mod N (0 is the serving process), so the probes of one target never run in two processes
at once and overlapping scrapes still share them (the split and the gathering: ``exporter.scatter``).
Continuous targets are spread over all processes with a stable owner each (``exporter.workers.spread``).
Everything else stays in the serving process: /probe, results, the status page, the exporter's own
metrics, reloads. A worker that exits is started again after a back-off that grows while it keeps failing.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from exporter.core.deadline import Deadline
from exporter.core.runtime import MAX_PROBE_PROCESSES
from exporter.probers.connect.result import ProbeResult
from exporter.probing.runner import ProbeRunner
from exporter.workers.handle import WorkerHandle, WorkerOptions
from exporter.workers.scatter import scatter_gather
from exporter.workers.spread import Continuous, Spread

if TYPE_CHECKING:
    from collections.abc import Callable

    from exporter.core.selfmetrics import ExporterMetrics
    from exporter.probing.plan import Plan
    from exporter.workers.stream import ShardStream

__all__ = ["WorkerOptions", "WorkerPool"]

log = logging.getLogger("exporter.workers")

RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_SECONDS = 60.0


class WorkerPool:
    def __init__(
        self,
        options: WorkerOptions,
        metrics: ExporterMetrics | None = None,
        local_continuous: Callable[[Continuous], None] | None = None,
    ):
        if not 2 <= options.processes <= MAX_PROBE_PROCESSES:
            raise ValueError(f"probe processes must be between 2 and {MAX_PROBE_PROCESSES}")
        self.processes = options.processes
        self._metrics = metrics
        self._workers = [WorkerHandle(number, options) for number in range(1, options.processes)]
        self._version = 0
        # Plans the workers hold, newest last: (plan, version, shares); share 0 is ours.
        self._plans: list[tuple[Plan, int, list[list[int]]]] = []
        self._closing = False
        self._watchers: set[asyncio.Task[None]] = set()
        # Continuous targets on every process (exporter.workers.spread); ``local_continuous`` takes ours.
        self.spread = Spread(self._workers, local_continuous or (lambda share: None))
        for worker in self._workers:
            worker.on_ready = lambda _: self.spread.reassign()

    async def start(self, plan: Plan) -> None:
        self.set_plan(plan, send=False)
        for worker in self._workers:
            await self._launch(worker)

    def set_plan(self, plan: Plan, send: bool = True) -> None:
        """Hand each worker its share of ``plan`` (called at start and after every reload)."""
        self._version += 1
        shares = [list(range(k, len(plan.targets), self.processes)) for k in range(self.processes)]
        self._plans = [*self._plans[-1:], (plan, self._version, shares)]
        if send:
            for worker in self._workers:
                self._send_plan(worker)
        self.spread.set_targets(plan.continuous)

    def _send_plan(self, worker: WorkerHandle) -> None:
        plan, version, shares = self._plans[-1]
        targets = [(plan.targets[i].address, plan.targets[i].module) for i in shares[worker.number]]
        worker.send(("plan", version, plan.config.settings.max_concurrency, targets))

    async def _launch(self, worker: WorkerHandle) -> None:
        try:
            await worker.start()
        except OSError as exc:  # e.g. out of processes or memory: serve anyway, probing here
            log.error("probe worker %d could not be started: %s", worker.number, exc)
            worker.failed_to_start()
        else:
            self._send_plan(worker)
        self._set_alive()
        watcher = asyncio.ensure_future(self._watch(worker))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)

    async def _watch(self, worker: WorkerHandle) -> None:
        """Start the worker again whenever it exits, after a back-off that grows while it keeps failing."""
        failures = 0
        while not self._closing:
            assert worker.exited is not None
            code = await worker.exited
            self._set_alive()
            if self._closing:
                return
            self.spread.reassign()  # its continuous targets move to the processes still up
            if asyncio.get_running_loop().time() - worker.started_at > HEALTHY_SECONDS:
                failures = 0  # it had been running fine: a new failure starts the back-off over
            if self._metrics is not None:
                self._metrics.worker_exits.inc()
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            failures += 1
            log.error(
                "probe worker %d exited (code %s); its targets are probed by the serving process "
                "until it is restarted in %gs",
                worker.number,
                code,
                delay,
            )
            await asyncio.sleep(delay)
            if self._closing:
                return
            try:
                await worker.start()
            except OSError as exc:
                log.error("probe worker %d could not be started: %s", worker.number, exc)
                worker.failed_to_start()
                continue
            self._send_plan(worker)
            self._set_alive()

    def _set_alive(self) -> None:
        if self._metrics is not None:
            alive = sum(1 for w in self._workers if w.process is not None and w.process.returncode is None)
            self._metrics.probe_workers.set(alive)

    async def probe_all(self, plan: Plan, runner: ProbeRunner, deadline: Deadline) -> list[ProbeResult]:
        """The results of every target of ``plan``, in order, as ``ProbeRunner.probe_all`` would give."""
        targets = [(target.address, target.module) for target in plan.targets]
        held = next((entry for entry in self._plans if entry[0] is plan), None)
        if held is None:  # a plan the workers never had (cannot happen after start): probe it here
            return await runner.probe_all(targets, deadline)
        _, version, shares = held
        return await scatter_gather(targets, shares, version, self._workers, runner, deadline)

    def open_continuous(self, names: list[str], deadline: Deadline) -> list[ShardStream]:
        return self.spread.open(names, deadline)

    async def close(self) -> None:
        self._closing = True
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*(worker.stop() for worker in self._workers), return_exceptions=True)
        self._set_alive()
