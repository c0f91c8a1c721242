"""The exporter's own metrics, kept in an injected prometheus_client registry."""

from __future__ import annotations

import platform
from collections import Counter as Tally

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from exporter import __version__
from exporter.core.vantage import VantageLabelled

try:  # `_created` series are noise for an exporter; blackbox_exporter has none.
    from prometheus_client import disable_created_metrics

    disable_created_metrics()  # type: ignore[no-untyped-call]  # prometheus_client leaves it unannotated
except ImportError:  # pragma: no cover - older prometheus_client
    pass

SCRAPE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class ExporterMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        if registry is None:
            registry = CollectorRegistry()
            ProcessCollector(registry=registry)
            PlatformCollector(registry=registry)
            GCCollector(registry=registry)
        self.registry = registry
        self.probes = Counter(
            "connectivity_exporter_probes",
            "Probes run, by module and outcome state.",
            ["module", "state"],
            registry=registry,
        )
        # Children of ``probes`` by (module, state), for counting one probe at a time.
        self._probe_counts: dict[tuple[str, str], Counter] = {}
        self.scrape_duration = Histogram(
            "connectivity_exporter_scrape_duration_seconds",
            "Time spent probing for one request, by endpoint (metrics or probe).",
            ["endpoint"],
            buckets=SCRAPE_BUCKETS,
            registry=registry,
        )
        self.deadline_exceeded = Counter(
            "connectivity_exporter_deadline_exceeded_probes",
            "Probes still unfinished when their scrape's deadline was reached.",
            registry=registry,
        )
        self.probe_requests_denied = Counter(
            "connectivity_exporter_probe_requests_denied",
            "/probe requests refused by probe_access, by reason (module, network, host, port, rate_limit).",
            ["reason"],
            registry=registry,
        )
        self.config_targets = Gauge(
            "connectivity_exporter_config_targets", "Targets in the loaded configuration.", registry=registry
        )
        self.reload_successful = Gauge(
            "connectivity_exporter_config_last_reload_successful",
            "Whether the last configuration load or reload succeeded (1) or not (0).",
            registry=registry,
        )
        self.reload_timestamp = Gauge(
            "connectivity_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load.",
            registry=registry,
        )
        self.probe_workers = Gauge(
            "connectivity_exporter_probe_workers",
            "Probe worker processes running beside the serving process "
            "(--runtime.probe-processes minus one when all are up).",
            registry=registry,
        )
        self.worker_exits = Counter(
            "connectivity_exporter_probe_worker_exits",
            "Probe worker processes that exited unexpectedly (each is started again).",
            registry=registry,
        )
        build = Gauge(
            "connectivity_exporter_build_info",
            "Version of the exporter and of Python, always 1.",
            ["version", "python_version"],
            registry=registry,
        )
        build.labels(__version__, platform.python_version()).set(1)

    def count_probe(self, module: str, state: str) -> None:
        """Count one probe (a /probe request): its counter child looked up once per (module, state)."""
        child = self._probe_counts.get((module, state))
        if child is None:
            child = self._probe_counts[(module, state)] = self.probes.labels(module, str(state))
        child.inc()

    def count_probes(self, outcomes: Tally[tuple[str, str]]) -> None:
        """Add a scrape's tally of (module, state) pairs: one counter update per pair, not per probe."""
        for (module, state), count in outcomes.items():
            self.probes.labels(module, state).inc(count)

    def exposition(self, vantage: str | None = None) -> bytes:
        """The text of every metric in the registry; each sample with ``vantage="NAME"`` when given."""
        return generate_latest(VantageLabelled(self.registry, vantage) if vantage else self.registry)
