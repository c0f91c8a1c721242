"""The table from prober names (``prober:`` in a module) to probers; the only place that lists them."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from exporter.exposition import Family
from exporter.probers import smtp_plugin, tcp
from exporter.probers.base import Prober
from exporter.probers.tls import share_tls_families

# The TLS families (probe_tls_*, probe_ssl_*) are one set shared by the probers that speak TLS, so an
# exposition with smtp and tcp modules has one HELP/TYPE per name.
_SMTP = dataclasses.replace(smtp_plugin.PROBER, families=share_tls_families(smtp_plugin.PROBER.families))
PROBERS: dict[str, Prober] = {prober.name: prober for prober in (tcp.PROBER, _SMTP)}


def families_in_order(probers: Iterable[Prober]) -> list[Family]:
    """The union of several probers' families, each once, in first-seen order."""
    seen: dict[Family, None] = {}
    for prober in probers:
        for family in prober.families:
            seen.setdefault(family)
    return list(seen)
