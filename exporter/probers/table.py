"""The table from prober names (``prober:`` in a module) to probers; the only place that lists them."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.exposition import Family
from exporter.probers.base import Prober
from exporter.probers.connect.result import ProbeResult
from exporter.probers.smtp import prober as smtp_plugin
from exporter.probers.tcp import prober as tcp

PROBERS: dict[str, Prober] = {prober.name: prober for prober in (tcp.PROBER, smtp_plugin.PROBER)}


def families_in_order(probers: Iterable[Prober]) -> list[Family[ProbeResult]]:
    """The union of several probers' families, each once, in first-seen order."""
    seen: dict[Family[ProbeResult], None] = {}
    for prober in probers:
        for family in prober.families:
            seen.setdefault(family)
    return list(seen)
