"""The loaded configuration: typed, immutable objects (built by ``exporter.config``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field

from exporter.core.address import HostPort
from exporter.probers.module import Module


@dataclass(frozen=True, slots=True)
class TargetConfig:
    address: HostPort
    module: str
    labels: tuple[tuple[str, str], ...] = ()
    interval: float | None = None  # continuous probing; overrides the module's interval


DEFAULT_MAX_CONCURRENCY = 512
DEFAULT_SCRAPE_TIMEOUT_OFFSET = 0.5
DEFAULT_SCRAPE_TIMEOUT = 10.0
DEFAULT_MAX_DIAGNOSES_IN_FLIGHT = 4


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    # Probes in flight at once, across all scrapes (each holds a socket).
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    # Subtracted from Prometheus' scrape timeout so the reply arrives before it gives up.
    scrape_timeout_offset: float = DEFAULT_SCRAPE_TIMEOUT_OFFSET
    # Used when a request carries no X-Prometheus-Scrape-Timeout-Seconds header.
    default_scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT
    # The site this exporter probes from: a `vantage` label on every series (--probe.vantage wins).
    vantage: str | None = None
    # The central (multi-site) view the status page links to (--web.central-url wins).
    central_url: str | None = None
    # Path diagnoses running at once in the background.
    max_diagnoses_in_flight: int = DEFAULT_MAX_DIAGNOSES_IN_FLIGHT


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class ProbeAccess:
    """What GET /probe may be asked to probe. Each restriction applies only when it is set."""

    allowed_modules: frozenset[str] | None = None
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # glob patterns, lower case
    allowed_ports: tuple[tuple[int, int], ...] = ()
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Config:
    modules: Mapping[str, Module]
    targets: tuple[TargetConfig, ...] = ()
    settings: GlobalSettings = GlobalSettings()
    source: str = "<config>"
    probe_access: ProbeAccess | None = None  # None: /probe may probe anything (blackbox_exporter's default)
    # Lines a person should read at load (e.g. a default that will not work well); never errors.
    warnings: tuple[str, ...] = ()
    # Modules of blackbox_exporter probers not implemented here (name -> prober): skipped with a warning,
    # so an unchanged blackbox.yml loads; /probe answers 400 for them.
    unsupported_modules: Mapping[str, str] = field(default_factory=dict)
    # One line per file a module names that cannot be read (exporter/config/unusable.py): warnings at load
    # (one per module, in ``warnings``), errors for ``--config.check``.
    unreadable_files: tuple[str, ...] = ()
