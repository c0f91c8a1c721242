"""The table that maps prober names (``prober:`` in a module) to probe functions."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from exporter.address import HostPort
from exporter.config import Module
from exporter.exposition import COMMON_FAMILIES, TCP_FAMILIES, Family
from exporter.probers.resolve import Resolver
from exporter.probers.result import ProbeResult
from exporter.probers.smtp import probe_smtp
from exporter.probers.smtp_metrics import SMTP_FAMILIES
from exporter.probers.tcp import probe_tcp
from exporter.pathdiag.metrics import TCP_REJECTED_BY  # issue 13

ProbeFn = Callable[[HostPort, Module, float, Resolver], Awaitable[ProbeResult]]


@dataclass(frozen=True)
class Prober:
    probe: ProbeFn
    # Every family this prober's results are written with, common ones included, in order.
    families: tuple[Family, ...]
    # Built once: every planned target refers to it (one set per target cost ~360 bytes each).
    family_set: frozenset[Family] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "family_set", frozenset(self.families))


PROBERS: dict[str, Prober] = {
    "tcp": Prober(probe_tcp, COMMON_FAMILIES + TCP_FAMILIES + (TCP_REJECTED_BY,)),
    "smtp": Prober(probe_smtp, COMMON_FAMILIES + TCP_FAMILIES + (TCP_REJECTED_BY,) + SMTP_FAMILIES),
}


def families_in_order(probers: list[Prober]) -> list[Family]:
    """The union of several probers' families, each once, in first-seen order."""
    seen: dict[Family, None] = {}
    for prober in probers:
        for family in prober.families:
            seen.setdefault(family)
    return list(seen)
