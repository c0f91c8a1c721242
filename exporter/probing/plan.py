"""The plan: what a loaded config means for probing, derived once per load (label sets escaped,
families chosen, scraped and continuous targets split)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from exporter.config.model import Config
from exporter.core.address import HostPort
from exporter.core.exposition import Family, label_prefix
from exporter.core.vantage import VANTAGE_LABEL
from exporter.probers.connect.address_metrics import ADDRESS_FAMILY_SET
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probers.table import PROBERS, families_in_order


@dataclass(frozen=True, slots=True)
class PlannedTarget:
    address: HostPort
    module: Module
    labels: str  # escaped once here, written as-is on every scrape
    families: frozenset[Family[ProbeResult]]


@dataclass(frozen=True)
class Plan:
    config: Config
    targets: tuple[PlannedTarget, ...]  # probed when scraped
    families: tuple[Family[ProbeResult], ...]
    vantage: str | None = None  # the `vantage` label on every series, when set
    # Probed in the background every interval seconds (exporter/continuous.py); a scrape reads them.
    continuous: tuple[tuple[PlannedTarget, float], ...] = ()


def build_plan(config: Config, vantage: str | None = None) -> Plan:
    targets = []
    continuous = []
    site_labels = ((VANTAGE_LABEL, vantage),) if vantage else ()
    for target in config.targets:
        module = config.modules[target.module]
        labels = label_prefix((("target", str(target.address)), ("module", module.name), *target.labels, *site_labels))
        planned = PlannedTarget(target.address, module, labels, _present(module))
        interval = target.interval if target.interval is not None else module.interval
        if interval is None:
            targets.append(planned)
        else:
            continuous.append((planned, interval))
    modules = [t.module for t in targets] + [t.module for t, _ in continuous]
    probers = [PROBERS[name] for name in dict.fromkeys(module.prober for module in modules)]
    families = families_in_order(probers)
    if not any(module.tcp.probe_addresses == "all" for module in modules):
        # Only tcp.probe_addresses: all writes these: a scrape without such a module never visits them.
        families = [family for family in families if family not in ADDRESS_FAMILY_SET]
    return Plan(config, tuple(targets), tuple(families), vantage, tuple(continuous))


@functools.cache
def _families_without_addresses(prober: str) -> frozenset[Family[ProbeResult]]:
    return PROBERS[prober].family_set - ADDRESS_FAMILY_SET


def _present(module: Module) -> frozenset[Family[ProbeResult]]:
    """The families a target's result is written with: the per-address ones only with probe_addresses: all."""
    if module.tcp.probe_addresses == "all":
        return PROBERS[module.prober].family_set
    return _families_without_addresses(module.prober)
