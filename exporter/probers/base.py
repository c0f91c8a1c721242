"""What a prober is: a self-describing plugin.

Everything the rest of the exporter needs to know about a prober is here, in one object: its
configuration sections, its ``probe()`` function, its own state enum (with the states it reports when it
raised or was cut at the deadline), its metric families, its default port and the facts it shows people.
Config, exposition, the status page, ``check``, the debug report, history and the worker frames loop over
probers and never special-case one. Adding a prober = one module defining a ``Prober`` plus its tests,
and one line in ``exporter.probers.table``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from exporter.core.exposition import Family
from exporter.core.schema import Section

if TYPE_CHECKING:
    from exporter.core.address import HostPort
    from exporter.core.deadline import Deadline
    from exporter.probers.connect.resolve import Resolver
    from exporter.probers.connect.result import ProbeResult
    from exporter.probers.module import Module


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing a person reads about a probe: ``label: text`` (plain text; each view escapes it)."""

    label: str
    text: str


# (target, module, deadline: the loop-clock moment the probe must be done by, resolver) -> result
ProbeFn = Callable[["HostPort", "Module", "Deadline", "Resolver"], Awaitable["ProbeResult"]]


def _no_port(module: Module) -> int | None:
    return None


def _no_warnings(module: Module) -> list[str]:
    return []


def _no_facts(result: ProbeResult, now: float) -> list[Fact]:
    return []


def _no_explanations(result: ProbeResult) -> list[tuple[str, str]]:
    return []


def _no_json(result: ProbeResult) -> dict[str, Any] | None:
    return None


def _no_blocks(result: ProbeResult) -> list[str]:
    return []


def _no_sections(result: ProbeResult) -> dict[str, Any]:
    return {}


@dataclass(frozen=True)
class Prober:
    name: str
    probe: ProbeFn
    # The prober's own outcome states; ``state`` of its results is always one of them.
    states: type[StrEnum]
    # Reported when the prober raised (a bug): the exporter cannot say what the target did.
    error_state: str
    # Reported when the probe had not finished at the scrape deadline.
    cut_state: str
    # Every family this prober's results are written with, common ones included, in order.
    families: tuple[Family, ...]
    # The ``tcp:`` section as this prober reads it (the connect step's fields, perhaps extended).
    tcp_section: Section
    # The prober's own section (name, schema), e.g. ("smtp", SMTP_SECTION); None if it has none.
    section: tuple[str, Section] | None = None
    # The port used when a target leaves it out (None: the port is required).
    default_port: Callable[[Module], int | None] = _no_port
    # Lines a person should read when a module is loaded (e.g. a default that servers will refuse).
    warnings: Callable[[Module], list[str]] = _no_warnings
    # What a person reads about a result beyond the connect step, in reading order (``check``, the
    # debug report, the status page), from the prober's own ``ProbeResult.details``.
    facts: Callable[[ProbeResult, float], list[Fact]] = _no_facts
    # (what was answered, what it means in plain words) pairs, e.g. each SMTP reply code explained.
    explanations: Callable[[ProbeResult], list[tuple[str, str]]] = _no_explanations
    # The details as JSON-native types for ``check --json`` (a documented, stable schema).
    details_json: Callable[[ProbeResult], dict[str, Any] | None] = _no_json
    # Longer text a person reads in ``check`` and the debug report, as lines (e.g. a table of MX hosts).
    report_lines: Callable[[ProbeResult], list[str]] = _no_blocks
    # Top-level objects of ``check --json`` beside "details" (e.g. "mail_domain"): documented contracts.
    json_sections: Callable[[ProbeResult], dict[str, Any]] = _no_sections
    # The time to the server's greeting, for a prober that reads one before anything else; continuous
    # targets of such a prober get the greeting-time histogram. None: the prober reads no greeting.
    greeting_seconds: Callable[[ProbeResult], float | None] | None = None
    # Fact labels the status page shows as columns.
    columns: tuple[str, ...] = ()
    # Built once: every planned target refers to it.
    family_set: frozenset[Family] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "family_set", frozenset(self.families))
        for state in (self.error_state, self.cut_state):
            if state not in self.states.__members__.values():
                raise ValueError(f"prober {self.name}: {state!r} is not one of its states")

    @property
    def section_names(self) -> tuple[str, ...]:
        return ("tcp",) if self.section is None else ("tcp", self.section[0])
