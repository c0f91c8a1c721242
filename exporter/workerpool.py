"""The serving process's side of the probe workers (``--runtime.probe-processes``).

A scrape of the configured targets is split by target: target i of the plan is always probed by
process i mod N (0 is the serving process), so the probes of one target never run in two processes
at once and overlapping scrapes still share them. Everything else stays in the serving process:
/probe, results, the status page, the exporter's own metrics, reloads.

Failures degrade to the single-process behaviour, never to a lost scrape: a worker that is not
ready or has died has its share probed by the serving process; one that does not answer by the
deadline has its share reported as cut at the deadline, and after ``STALLS_BEFORE_KILL`` such
scrapes in a row it is killed. A worker that exits is started again after a back-off.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from exporter import frames
from exporter.address import HostPort
from exporter.model import Module
from exporter.runtime import MAX_PROBE_PROCESSES
from exporter.probers.result import ProbeResult
from exporter.probeworker import reply_margin
from exporter.runner import DEADLINE_GRACE, ProbeRunner, fill_cut

if TYPE_CHECKING:
    from exporter.selfmetrics import ExporterMetrics
    from exporter.service import Plan

log = logging.getLogger("exporter.workers")

STALLS_BEFORE_KILL = 3
RESTART_BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
HEALTHY_SECONDS = 60.0
STOP_SECONDS = 5.0
# Below this much time left a dead worker's share is reported as cut rather than started late.
MIN_FALLBACK_SECONDS = 0.05


@dataclass(frozen=True)
class WorkerOptions:
    """How to start the workers; ``processes`` counts the serving process (1: no workers)."""
    processes: int = 1
    event_loop: str = "auto"
    log_level: str = "info"
    log_format: str = "logfmt"


class WorkerGone(ConnectionError):
    """The worker exited (or its stream broke) before answering."""


Targets = Sequence[tuple[HostPort, Module]]


class ProbeWorker:
    """One child process and the replies it owes."""

    def __init__(self, number: int, options: WorkerOptions):
        self.number = number
        self._options = options
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.stalls = 0
        self._pending: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader: asyncio.Task | None = None
        self.exited: asyncio.Future[int] | None = None
        self.started_at = 0.0

    async def start(self) -> None:
        self.ready = False
        self.stalls = 0
        self.started_at = asyncio.get_running_loop().time()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "exporter.probeworker",
            f"--runtime.event-loop={self._options.event_loop}",
            f"--log.level={self._options.log_level}", f"--log.format={self._options.log_format}",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20)
        self.exited = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read_replies(self.process, self.exited))

    def send(self, message: tuple) -> bool:
        process = self.process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return False
        try:
            process.stdin.write(frames.encode(message))
        except (ConnectionError, RuntimeError):
            return False
        return True

    def request(self, version: int, budget: float) -> asyncio.Future | None:
        """Ask for the results of plan ``version`` within ``budget`` seconds; None if it cannot be asked."""
        request_id = self._next_id = self._next_id + 1
        if not self.ready or not self.send(("probe", request_id, version, budget)):
            return None
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        reply.add_done_callback(lambda _: self._pending.pop(request_id, None))
        return reply

    async def _read_replies(self, process: asyncio.subprocess.Process, exited: asyncio.Future) -> None:
        reason = "its output ended"
        try:
            while True:
                try:
                    message = await frames.read(process.stdout)
                except frames.FrameError as exc:
                    reason = str(exc)
                    break
                if message is None:
                    break
                if message[0] == "ready":
                    self.ready = True
                    log.info("probe worker %d ready", self.number, extra={"pid": message[1]})
                elif message[0] == "results":
                    reply = self._pending.get(message[1])
                    if reply is not None and not reply.done():
                        reply.set_result(message[2])
        finally:
            self.ready = False
            for reply in list(self._pending.values()):
                if not reply.done():
                    reply.set_exception(WorkerGone(f"probe worker {self.number} gone: {reason}"))
            if process.returncode is None:
                try:
                    process.kill()
                except ProcessLookupError:  # it exited between the check and the signal
                    pass
            code = await process.wait()
            if not exited.done():
                exited.set_result(code)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            try:
                self.process.kill()
            except ProcessLookupError:
                pass

    def failed_to_start(self) -> None:
        """Record a start that did not happen, so the pool's watcher retries it after its back-off."""
        self.ready = False
        self.exited = asyncio.get_running_loop().create_future()
        self.exited.set_result(None)

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=STOP_SECONDS)


class WorkerPool:
    def __init__(self, options: WorkerOptions, metrics: ExporterMetrics | None = None):
        if not 2 <= options.processes <= MAX_PROBE_PROCESSES:
            raise ValueError(f"probe processes must be between 2 and {MAX_PROBE_PROCESSES}")
        self.processes = options.processes
        self._metrics = metrics
        self._workers = [ProbeWorker(number, options) for number in range(1, options.processes)]
        self._version = 0
        # Plans the workers hold, newest last: (plan, version, shares); share 0 is ours.
        self._plans: list[tuple[Plan, int, list[list[int]]]] = []
        self._closing = False
        self._watchers: set[asyncio.Task] = set()

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

    def _send_plan(self, worker: ProbeWorker) -> None:
        plan, version, shares = self._plans[-1]
        targets = [(plan.targets[i].address, plan.targets[i].module) for i in shares[worker.number]]
        worker.send(("plan", version, plan.config.settings.max_concurrency, targets))

    async def _launch(self, worker: ProbeWorker) -> None:
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

    async def _watch(self, worker: ProbeWorker) -> None:
        """Start the worker again whenever it exits, after a back-off that grows while it keeps failing."""
        failures = 0
        while not self._closing:
            assert worker.exited is not None
            code = await worker.exited
            self._set_alive()
            if self._closing:
                return
            if asyncio.get_running_loop().time() - worker.started_at > HEALTHY_SECONDS:
                failures = 0  # it had been running fine: a new failure starts the back-off over
            if self._metrics is not None:
                self._metrics.worker_exits.inc()
            delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
            failures += 1
            log.error("probe worker %d exited (code %s); its targets are probed by the serving process "
                      "until it is restarted in %gs", worker.number, code, delay)
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

    async def probe_all(self, plan: Plan, runner: ProbeRunner, deadline: float) -> list[ProbeResult]:
        """The results of every target of ``plan``, in order, as ``ProbeRunner.probe_all`` would give."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        targets = [(target.address, target.module) for target in plan.targets]
        held = next((entry for entry in self._plans if entry[0] is plan), None)
        if held is None:  # a plan the workers never had (cannot happen after start): probe it here
            return await runner.probe_all(targets, deadline)
        _, version, shares = held
        local = list(shares[0])
        asked: list[tuple[ProbeWorker, list[int], asyncio.Future]] = []
        for worker in self._workers:
            share = shares[worker.number]
            reply = worker.request(version, deadline - loop.time()) if share else None
            if reply is None:
                local.extend(share)
            else:
                asked.append((worker, share, reply))
        results: list[ProbeResult | None] = [None] * len(targets)
        self._fill(results, local, await runner.probe_all([targets[i] for i in local], deadline))
        for worker, share, reply in asked:
            wait = deadline - loop.time() + DEADLINE_GRACE + reply_margin(len(share))
            try:
                answer = await asyncio.wait_for(reply, max(wait, 0.0))
            except TimeoutError:
                worker.stalls += 1
                log.warning("probe worker %d did not answer by the deadline (%d in a row); its %d targets "
                            "are reported as cut", worker.number, worker.stalls, len(share))
                if worker.stalls >= STALLS_BEFORE_KILL:
                    log.error("probe worker %d killed: it stopped answering", worker.number)
                    worker.kill()
                continue
            except WorkerGone:
                answer = None
            else:
                worker.stalls = 0
            if answer is None or len(answer) != len(share):
                # Gone, or it did not hold this plan: probe its share here if there is time left.
                if deadline - loop.time() > MIN_FALLBACK_SECONDS:
                    answer = await runner.probe_all([targets[i] for i in share], deadline)
                else:
                    continue
            self._fill(results, share, answer)
        return fill_cut(results, targets, loop.time() - started)

    @staticmethod
    def _fill(results: list[ProbeResult | None], indices: list[int], answer: list[ProbeResult]) -> None:
        for index, result in zip(indices, answer):
            results[index] = result

    async def close(self) -> None:
        self._closing = True
        for watcher in list(self._watchers):
            watcher.cancel()
        await asyncio.gather(*(worker.stop() for worker in self._workers), return_exceptions=True)
        self._set_alive()
