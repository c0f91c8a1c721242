"""What a prober is: a self-describing plugin.

Everything the rest of the exporter needs to know about a prober is here, in one object of static data:
its configuration sections, its ``probe()`` function, its own state enum (with the states it reports when
it raised or was cut at the deadline), its metric families and its default port. What a *result* says to
people (facts, explanations, JSON, report lines) is answered by the result's typed details
(``exporter.probers.connect.result.Details``), not by the prober.
Config, exposition, the status page, ``check``, the debug report, history and the worker frames loop over
probers and never special-case one. Adding a prober = one module defining a ``Prober`` plus its tests,
and one line in ``exporter.probers.table``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from exporter.core.exposition import Family
from exporter.core.schema import Section

if TYPE_CHECKING:
    import asyncio

    from exporter.core.address import HostPort
    from exporter.core.deadline import Deadline
    from exporter.probers.connect.resolve import Resolver
    from exporter.probers.connect.result import ProbeResult
    from exporter.probers.connect.settings import TcpSettings
    from exporter.probers.module import Module


# (target, module, deadline: the loop-clock moment the probe must be done by, resolver) -> result
ProbeFn = Callable[["HostPort", "Module", "Deadline", "Resolver"], Awaitable["ProbeResult"]]


class Cancel(Protocol):
    def cancel(self) -> None: ...


# The same probe without a coroutine (issue 25): given a module, a starter (target, deadline, done, loop) -> a
# handle to cancel the probe, or None when this module needs ``probe``. The starter takes IP-literal
# targets only; ``done(result)`` is called once, perhaps before the starter returns, never after ``cancel()``.
# ``loop`` is the running loop (passed: asking for it costs a system call on Python 3.11).
Starter = Callable[["HostPort", "Deadline", Callable[["ProbeResult"], None], "asyncio.AbstractEventLoop"], Cancel]
StartFn = Callable[["Module"], Starter | None]


def _no_port(module: Module) -> int | None:
    return None


def _no_warnings(module: Module) -> list[str]:
    return []


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
    families: tuple[Family[ProbeResult], ...]
    # The ``tcp:`` section as this prober reads it (the connect step's fields, perhaps extended).
    tcp_section: Section[TcpSettings]
    # The prober's own section (name, schema), e.g. ("smtp", SMTP_SECTION); None if it has none.
    section: tuple[str, Section[object]] | None = None
    # The port used when a target leaves it out (None: the port is required).
    default_port: Callable[[Module], int | None] = _no_port
    # Lines a person should read when a module is loaded (e.g. a default that servers will refuse).
    warnings: Callable[[Module], list[str]] = _no_warnings
    # Whether the prober reads a server greeting before anything else (its results' details then answer
    # ``greeting_seconds()``): continuous targets of such a prober get the greeting-time histogram.
    reads_greeting: bool = False
    # Fact labels the status page shows as columns.
    columns: tuple[str, ...] = ()
    # The states a continuous target of this module and address can end in: one probe_results_total
    # series each (docs/metrics.md). None: every state of ``states``. A state outside the list that
    # turns up anyway (a bug) is counted under ``error_state``, which the list must hold.
    counted_states: Callable[[Module, HostPort], tuple[str, ...]] | None = None
    # Optional: ``probe`` driven by callbacks only, for the cases it covers (a plain connect to an IP
    # literal for the tcp prober): no coroutine, task or future per probe on the scrape path.
    start: StartFn | None = None
    # Built once: every planned target refers to it.
    family_set: frozenset[Family[ProbeResult]] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "family_set", frozenset(self.families))
        for state in (self.error_state, self.cut_state):
            if state not in self.states.__members__.values():
                raise ValueError(f"prober {self.name}: {state!r} is not one of its states")

    @property
    def section_names(self) -> tuple[str, ...]:
        return ("tcp",) if self.section is None else ("tcp", self.section[0])
