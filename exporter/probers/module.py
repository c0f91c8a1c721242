"""A configured module: what every prober is handed with its target (built by ``exporter.config``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.core.histogram import HistogramBuckets
from exporter.probers.connect.settings import TcpSettings


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    timeout: float = 5.0
    # The connect step's settings: every prober opens a TCP connection first.
    tcp: TcpSettings = TcpSettings()
    # The prober's own section (e.g. the ``smtp:`` settings), typed by that prober; None if it has none.
    settings: Any = None
    # Continuous probing (docs/continuous.md): probe every `interval` seconds in the background.
    interval: float | None = None
    histogram_buckets: HistogramBuckets | None = None  # None: the defaults
    # Set when a file the module names cannot be read (exporter/config/unusable.py): why; its probes
    # fail with it and send nothing.
    unusable: str | None = None
