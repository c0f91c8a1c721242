"""The exporter's state between requests: the loaded config, the per-target plan
derived from it once per load, the probe runner and the exporter's own metrics."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import Counter as Tally
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence

from exporter.config.access import ProbeGate
from exporter.config.loader import Config, ConfigError, Module, load_config
from exporter.continuous.prober import ContinuousProber
from exporter.continuous.shard import ContinuousStats, Stats, outcomes_of, render_pieces, summary
from exporter.continuous.stream import LocalSource, Reply, Slot, Source, merged
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.exposition import TARGETS_PER_CHUNK, Family, Guard, Results, Writer, label_prefix, passing
from exporter.core.histogram import tally_families
from exporter.core.selfmetrics import ExporterMetrics
from exporter.core.vantage import VANTAGE_LABEL, Site
from exporter.probers.connect.result import ProbeResult
from exporter.probers.table import PROBERS
from exporter.probing.diagnosis_scheduler import Diagnosed, DiagnosisScheduler, SchedulerCollector
from exporter.probing.path_metrics import render_path_families
from exporter.probing.plan import Plan, PlannedTarget, build_plan
from exporter.probing.runner import DEADLINE_GRACE, ProbeRunner, deadline_result
from exporter.service.history import ProbeHistory
from exporter.workers.pool import WorkerPool
from exporter.workers.stream import ShardStream

log = logging.getLogger("exporter")

FINISH_SECONDS_PER_TARGET = 10e-6  # a first guess: ~6-10 µs per target to tally and render, on 2 cores


class Exporter:
    def __init__(self, config: Config, metrics: ExporterMetrics, site: Site | None = None):
        self.metrics = metrics
        self.site = site or Site()  # from the command line: wins over the config file
        self.runner: ProbeRunner | None = None  # created on the server's loop at startup
        self.pool: WorkerPool | None = None  # probe worker processes, when there are any
        self.history = ProbeHistory()  # for the status page
        self.plan = self._build_plan(config)
        self.gate = ProbeGate(config.probe_access)
        # Path diagnoses of failed targets, in the background.
        self.diagnoses = DiagnosisScheduler(config.settings.max_diagnoses_in_flight)
        metrics.registry.register(SchedulerCollector(self.diagnoses))
        # This process's continuous targets (all of them, or its share with probe workers), started by the
        # app (cleanup context); its self-metrics are written summed with the workers' (ContinuousStats).
        self.continuous = ContinuousProber()
        self.continuous.update(self.plan.continuous)
        metrics.registry.register(ContinuousStats(self.continuous, self._worker_stats))
        self._reloading = asyncio.Lock()
        self._probe_seconds = metrics.scrape_duration.labels("probe")  # a /probe request's: looked up once
        self._by_key: tuple[Plan | None, dict[tuple[str, str], PlannedTarget]] = (None, {})
        self._loaded(config)

    @property
    def config(self) -> Config:
        return self.plan.config

    @property
    def vantage(self) -> str | None:
        return self.plan.vantage

    @property
    def central_url(self) -> str | None:
        return self.site.central_url or self.config.settings.central_url

    def _build_plan(self, config: Config) -> Plan:
        return build_plan(config, self.site.vantage or config.settings.vantage)

    def _loaded(self, config: Config) -> None:
        self.metrics.config_targets.set(len(config.targets))
        self.metrics.reload_successful.set(1)
        self.metrics.reload_timestamp.set(time.time())
        # Time to tally and render a scrape, measured on each one; a first guess until then.
        self._finish_seconds = FINISH_SECONDS_PER_TARGET * len(config.targets)

    async def reload(self) -> Config:
        """Load the config file again; on any error keep serving the old config and raise ConfigError."""
        async with self._reloading:  # two SIGHUPs in a row load one after the other
            try:
                # In a thread: a large file takes most of a second to parse, and a stalled event loop
                # would inflate the connect times of every probe in flight (they are stamped by callbacks).
                plan = await asyncio.get_running_loop().run_in_executor(
                    None, lambda: self._build_plan(load_config(self.config.source))
                )
            except ConfigError:
                self.metrics.reload_successful.set(0)
                raise
            config = plan.config
            for warning in config.warnings:
                log.warning(warning)
            if config.probe_access != self.config.probe_access:  # keep rate-limit buckets otherwise
                self.gate = ProbeGate(config.probe_access)
            if self.runner is not None and config.settings.max_concurrency != self.runner.max_concurrency:
                # Probes in flight finish on the old runner; new ones use the new limit.
                self.runner = ProbeRunner(self.runner.resolver, config.settings.max_concurrency)
            self.plan = plan
            # Path diagnosis: the new cap; diagnoses of removed targets are forgotten.
            self.diagnoses.max_in_flight = config.settings.max_diagnoses_in_flight
            self.diagnoses.retain(
                {(str(t.address), t.module.name) for t in [*plan.targets, *(planned for planned, _ in plan.continuous)]}
            )
            if self.pool is not None:
                self.pool.set_plan(plan)  # and the continuous targets to their owners (workers.spread)
            else:
                self.continuous.update(plan.continuous)  # keeps the counters of unchanged targets
            self._loaded(config)
        log.info("configuration reloaded: %d modules, %d targets", len(config.modules), len(config.targets))
        return config

    def _worker_stats(self) -> Stats | None:
        return self.pool.spread.stats if self.pool is not None else None

    def _continuous_by_key(self, plan: Plan) -> dict[tuple[str, str], PlannedTarget]:
        """The plan's continuous targets by (target, module), built once per plan."""
        if self._by_key[0] is not plan:
            self._by_key = (plan, {(str(p.address), p.module.name): p for p, _ in plan.continuous})
        return self._by_key[1]

    def _require_runner(self) -> ProbeRunner:
        if self.runner is None:
            raise RuntimeError("the exporter is not started")
        return self.runner

    async def scrape(self, budget: float) -> Reply:
        """Probe every configured target within ``budget`` seconds; return their metrics as a ``Reply``: encoded
        chunks of up to TARGETS_PER_CHUNK targets of one family, rendered (here and in the workers) as the
        reply is written, so the reply is never held whole (60,000 continuous targets make ~120 MB)."""
        plan = self.plan  # a reload during the scrape must not mix two configs
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Stop probing early enough to write the reply by the deadline: as long before it as rendering and
        # writing the reply took last time, at most a quarter of the budget.
        reserve = min(self._finish_seconds, budget / 4)
        deadline = Deadline.after(budget).earlier(reserve)
        # The workers start rendering their continuous targets meanwhile (a window ahead: workers.stream).
        names = [family.name for family in plan.families]
        streams = self.pool.open_continuous(names, Deadline.after(budget)) if self.pool is not None else []
        try:
            if self.pool is not None:
                results = await self.pool.probe_all(plan, self._require_runner(), deadline)
            else:
                results = await self._require_runner().probe_all(
                    [(target.address, target.module) for target in plan.targets], deadline
                )
        except BaseException:
            _stop(streams)
            raise
        probed = loop.time()
        self.metrics.scrape_duration.labels("metrics").observe(probed - started)
        self._count(results, plan.targets)
        self.history.record_scrape(plan.targets, results, time.time())
        return Reply(self._written(plan, results, streams, probed), lambda: _stop(streams))

    async def _written(
        self, plan: Plan, results: list[ProbeResult], streams: list[ShardStream], probed: float
    ) -> AsyncGenerator[bytes, None]:
        """The reply's target families (continuous targets are only read: each process renders its own, the
        workers in parallel, and each family is written once, with the scrape-time targets' lines and every
        process's), then the path families."""
        scraped = [
            (target.labels, result, target.families) for target, result in zip(plan.targets, results, strict=True)
        ]
        # Each chunk filtered once per guard (``only_if``), for every family sharing it: a plain tcp scrape asks
        # its 22 guarded families' 3 guards once per target each, not twice per family (issue 25).
        passed: dict[tuple[Guard[ProbeResult], int], Results[ProbeResult]] = {}

        def own(family: Family[ProbeResult]) -> Callable[[], Iterator[bytes]]:
            def lines() -> Iterator[bytes]:
                only_if, write = family.samples.only_if, family.write_passed
                for start in range(0, len(scraped), TARGETS_PER_CHUNK):
                    chunk: Results[ProbeResult] = scraped[start : start + TARGETS_PER_CHUNK]
                    if only_if is not None:
                        key = (only_if, start)
                        if key not in passed:
                            passed[key] = passing(chunk, only_if)
                        chunk = passed[key]
                    if chunk and (body := write(chunk)):
                        yield body.encode()

            return lines

        order: list[Slot] = [((True, family.name), family.header(), own(family)) for family in plan.families]
        order += [((False, name), header, None) for name, header, _ in tally_families()]
        local = LocalSource(render_pieces(self.continuous, plan.families)) if self.continuous.targets else None
        sources: list[Source] = [*([local] if local is not None else []), *streams]
        try:
            async with contextlib.aclosing(merged(order, sources)) as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:  # also when the client went away: the rendering stops here and in the workers
            if local is not None:
                await local.aclose()
            _stop(streams)
        shards = [*([summary(self.continuous)] if local is not None else [])]
        shards += self.pool.spread.finished(streams) if self.pool is not None else []
        self.metrics.count_probes(outcomes_of(shards))
        # Failures (of this scrape, and the latest of continuous targets) go to the background path
        # diagnosis; the latest diagnoses are shown.
        continuous = self._continuous_by_key(plan)
        diagnosed = [
            (planned, result)
            for shard in shards
            for target, module, result in shard.diagnosed
            if (planned := continuous.get((target, module))) is not None
        ]
        self.diagnoses.after_scrape(
            [*plan.targets, *(planned for planned, _ in diagnosed)], [*results, *(result for _, result in diagnosed)]
        )
        everything: list[Diagnosed] = [*plan.targets, *(planned for planned, _ in plan.continuous)]
        for text in render_path_families(self.diagnoses.entries(everything)):
            yield text.encode()
        self._finish_seconds = asyncio.get_running_loop().time() - probed

    async def probe(self, address: HostPort, module: Module, budget: float) -> ProbeResult:
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = Deadline(started + budget)
        pending = self._require_runner().probe(address, module, deadline)
        if isinstance(pending, asyncio.Future):
            # A probe on callbacks (an IP literal, plain tcp): its future is awaited with one timer as the
            # safety net, not through a task and asyncio.wait (a fifth of the bookkeeping of a /probe request).
            result = await _until(pending, deadline + DEADLINE_GRACE)
        else:
            result = await _in_own_task(pending, deadline)
        if result is None:  # cut at the deadline
            result = deadline_result(module, loop.time() - started)
        self._probe_seconds.observe(loop.time() - started)
        self.metrics.count_probe(module.name, result.state)
        if result.cut_at_deadline:
            self.metrics.deadline_exceeded.inc()
        if not result.success and log.isEnabledFor(logging.DEBUG):
            _log_failure(address, module, result)
        self.history.record_probe(address, module, result, time.time())
        return result

    def _count(self, results: list[ProbeResult], targets: Sequence[PlannedTarget]) -> None:
        # Tallied in C (a Counter over pairs), states stringified per distinct pair, not per probe.
        tally: Tally[tuple[str, str]] = Tally()
        pairs = Tally(
            zip([target.module.name for target in targets], [result.state for result in results], strict=False)
        )
        for (module, state), count in pairs.items():
            tally[(module, str(state))] += count
        self.metrics.count_probes(tally)
        exceeded = sum(1 for result in results if result.cut_at_deadline)
        if exceeded:
            self.metrics.deadline_exceeded.inc(exceeded)
        if log.isEnabledFor(logging.DEBUG):  # once per scrape, not per probe
            for target, result in zip(targets, results, strict=False):
                if not result.success:
                    _log_failure(target.address, target.module, result)


def _stop(streams: list[ShardStream]) -> None:
    for stream in streams:
        stream.stop()


def _log_failure(address: HostPort, module: Module, result: ProbeResult) -> None:
    log.debug(
        "probe failed",
        extra={
            "fields": {
                "target": str(address),
                "module": module.name,
                "state": str(result.state),
                "detail": result.detail,
            }
        },
    )


async def _until(outcome: asyncio.Future[ProbeResult], when: float) -> ProbeResult | None:
    """``outcome``'s result, or None when it is not done by ``when`` (loop time): then it is cancelled, which
    stops a probe on callbacks at once. Cancelling the awaiting task cancels ``outcome`` too."""
    cut = False

    def stop() -> None:
        nonlocal cut
        cut = outcome.cancel()

    timer = asyncio.get_running_loop().call_at(when, stop)
    try:
        return await outcome
    except asyncio.CancelledError:
        if cut:
            return None
        raise
    finally:
        timer.cancel()


async def _in_own_task(probing: Awaitable[ProbeResult], deadline: Deadline) -> ProbeResult | None:
    """A probe coroutine's result, or None when it was cut at ``deadline``.

    The probe runs as its own task, waited for rather than cancelled from here: when the loop wakes late
    (a loaded machine), a timeout on this same task fires together with the prober's own and cancels it
    twice, which hides the prober's classification (an SMTP probe out of time during DNS is dns_error,
    not the dialogue's `timeout`). probe_all waits for its workers the same way."""
    task = asyncio.ensure_future(probing)
    try:
        await asyncio.wait({task}, timeout=deadline.remaining() + DEADLINE_GRACE)
    finally:
        if not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=1.0)  # a cancelled probe closes its sockets at once
    # Cancelled here at the deadline: cut; otherwise its result (or its exception, as before).
    return None if not task.done() or task.cancelled() else task.result()


def render_single(result: ProbeResult, module: Module, vantage: str | None = None) -> str:
    """Metrics of one /probe request: the same families, without target/module labels
    (with the ``vantage`` label when the exporter has one). The same text as ``render`` of this one result
    with every family of its prober; a family's guard (``only_if``) is asked once for the families that share it
    (a plain tcp result skips the address, MTU and dialogue families at three tests, not 22 calls)."""
    prefix = label_prefix(((VANTAGE_LABEL, vantage),)) if vantage else ""
    out: list[str] = []
    for only_if, members in _single_layout(module.prober):
        if only_if is None or only_if(result):
            for header, write in members:
                if body := write(prefix, result):
                    out += (header, body)
    text = "".join(out)
    if result.path is not None:  # a diagnosis run inline for this request
        text += "".join(render_path_families([(prefix, result.path)]))
    return text


Writers = list[tuple[str, Writer[ProbeResult]]]


@functools.cache
def _single_layout(prober_name: str) -> tuple[tuple[Guard[ProbeResult], Writers], ...]:
    """The prober's families in order, in runs of neighbours with the same guard: (guard, (header, writer)...)."""
    runs: list[tuple[Guard[ProbeResult], Writers]] = []
    for family in PROBERS[prober_name].families:
        only_if = family.samples.only_if
        if not runs or runs[-1][0] is not only_if:
            runs.append((only_if, []))
        runs[-1][1].append((family.text_header, family.write_one))
    return tuple(runs)
