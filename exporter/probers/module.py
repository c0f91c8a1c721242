"""A configured module: what every prober is handed with its target (built by ``exporter.config``)."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core.histogram import HistogramBuckets
from exporter.probers.connect.settings import TcpSettings


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    timeout: float = 5.0
    # The connect step's settings: every prober opens a TCP connection first.
    tcp: TcpSettings = TcpSettings()
    # The prober's own section (e.g. the ``smtp:`` settings); None if it has none. Each prober knows its
    # own type and narrows to it (e.g. ``smtp.settings.smtp_settings``): nothing else reads it.
    settings: object = None
    # Continuous probing (docs/continuous.md): probe every `interval` seconds in the background.
    interval: float | None = None
    histogram_buckets: HistogramBuckets | None = None  # None: the defaults
    # Set when a file the module names cannot be read (exporter/config/unusable.py): why; its probes
    # fail with it and send nothing.
    unusable: str | None = None
