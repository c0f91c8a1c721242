"""What a probe returns: classified outcomes and timings, never an exception."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # path diagnosis types; annotations only, so no import cost or cycle
    from exporter.pathdiag.icmp import IcmpReply
    from exporter.pathdiag.model import PathDiagnosis
    from exporter.probers.connect.mtu import MtuReport


@dataclass(frozen=True, slots=True)
class Fact:
    """One thing a person reads about a probe: ``label: text`` (plain text; each view escapes it)."""

    label: str
    text: str


JsonObject = dict[str, object]


class Details(Protocol):
    """What a prober's result says beyond the connect step, for people and for ``check --json``.

    Each prober's details type (the SMTP dialogue's, a mail domain's, a tcp dialogue's) implements it, so
    the views (``check``, the debug report, the status page) ask the result and never the prober's type.
    """

    def facts(self, state: str, now: float) -> list[Fact]:
        """What a person reads, in reading order (``now``: Unix time, for "expires in ...")."""
        ...

    def explanations(self) -> list[tuple[str, str]]:
        """(what was answered, what it means in plain words), e.g. each SMTP reply explained."""
        ...

    def contract(self) -> JsonObject | None:
        """``check --json`` "details": JSON-native types, a documented, stable schema (None: none)."""
        ...

    def json_sections(self) -> JsonObject:
        """Top-level objects of ``check --json`` beside "details" (e.g. "mail_domain")."""
        ...

    def report_lines(self) -> list[str]:
        """Longer text for ``check`` and the debug report (e.g. a table of MX hosts)."""
        ...

    def greeting_seconds(self) -> float | None:
        """Time to the server's greeting, for a prober that reads one first; None otherwise."""
        ...


class DetailsBase:
    """The empty answer to every ``Details`` question; a details type overrides what it has."""

    __slots__ = ()

    def facts(self, state: str, now: float) -> list[Fact]:
        return []

    def explanations(self) -> list[tuple[str, str]]:
        return []

    def contract(self) -> JsonObject | None:
        return None

    def json_sections(self) -> JsonObject:
        return {}

    def report_lines(self) -> list[str]:
        return []

    def greeting_seconds(self) -> float | None:
        return None


# A result with nothing beyond the connect step (a plain tcp connect) answers with this.
NO_DETAILS: Details = DetailsBase()


def has_details(result: ProbeResult) -> bool:
    return result.details is not NO_DETAILS


class TcpState(StrEnum):
    OPEN = "open"  # connected
    REFUSED = "refused"  # RST: nothing listens, or a firewall rejects with a reset; ICMP port-unreachable
    TIMEOUT = "timeout"  # no answer before the deadline: dropped by a firewall, host down, path broken
    UNREACHABLE = "unreachable"  # ICMP host/net unreachable or administratively prohibited
    DNS_ERROR = "dns_error"  # the name does not resolve (or the resolver did not answer)
    ERROR = "error"  # anything else (EMFILE, bad source address, ...)


# ICMP "no route / prohibited" answers, and a local firewall rule refusing the packet (EPERM/EACCES).
_UNREACHABLE_ERRNOS = frozenset(
    {errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EHOSTDOWN, errno.ENETDOWN, errno.EPERM, errno.EACCES}
)
_REFUSED_ERRNOS = frozenset({errno.ECONNREFUSED, errno.ECONNRESET})
_TIMEOUT_ERRNOS = frozenset({errno.ETIMEDOUT})


def classify_errno(code: int) -> TcpState:
    """Classify a connect() error number (as returned by SO_ERROR)."""
    if code == 0:
        return TcpState.OPEN
    if code in _REFUSED_ERRNOS:
        return TcpState.REFUSED
    if code in _TIMEOUT_ERRNOS:
        return TcpState.TIMEOUT
    if code in _UNREACHABLE_ERRNOS:
        return TcpState.UNREACHABLE
    return TcpState.ERROR


def describe_errno(code: int) -> str:
    try:
        return f"{errno.errorcode[code]} ({os.strerror(code)})"
    except KeyError:
        return f"errno {code}"


# --- tcp.probe_addresses: all: every address of the name (the logic: exporter.probers.connect.addresses) ---


class AddressesState(StrEnum):
    ALL_OK = "all_ok"  # every address connects
    SOME_FAILING = "some_failing"  # failures that are not a whole family
    IPV4_FAILING = "ipv4_failing"  # every IPv4 address fails, some IPv6 one works
    IPV6_FAILING = "ipv6_failing"  # every IPv6 address fails, some IPv4 one works
    ALL_FAILING = "all_failing"  # no address connects
    DNS_ERROR = "dns_error"  # the name gave no address


@dataclass(slots=True)
class AddressOutcome:
    """The connect to one address of the name."""

    address: str
    ip_protocol: int
    state: TcpState = TcpState.TIMEOUT
    # None: the connect never started (the deadline passed first).
    connect_seconds: float | None = None
    detail: str = ""
    # The local kernel had no route for it (ENETUNREACH before any packet left, no ICMP sender).
    no_local_route: bool = False
    # The path diagnosis of this failing address, when check or /probe ran one (tcp.diagnose: on_failure).
    path: PathDiagnosis | None = None

    @property
    def ok(self) -> bool:
        return self.state is TcpState.OPEN


@dataclass(slots=True)
class AddressesReport:
    """Every probed address of one name, and what they add up to."""

    outcomes: list[AddressOutcome] = field(default_factory=list)
    # How many distinct addresses the name resolved to (more than ``outcomes`` when the cap cut).
    resolved: int = 0
    state: AddressesState = AddressesState.DNS_ERROR
    # What an RFC 8305 client would wait from its first connection attempt until connected; None: never.
    happy_eyeballs_seconds: float | None = None
    # IP versions this exporter has no route for at all: their addresses say nothing about the target.
    no_route_families: tuple[int, ...] = ()

    @property
    def cut(self) -> int:
        """Addresses left out by ``tcp.probe_addresses_max``."""
        return max(0, self.resolved - len(self.outcomes))

    @property
    def counted(self) -> list[AddressOutcome]:
        """The outcomes that count for the verdict (not those of a family with no route from here)."""
        return [o for o in self.outcomes if o.ip_protocol not in self.no_route_families]

    @property
    def all_connected(self) -> bool:
        return self.state is AddressesState.ALL_OK


@dataclass(slots=True)
class ProbeResult:
    success: bool = False
    # The prober's own outcome (tcp: the TcpState; other probers their own state names).
    state: str = TcpState.ERROR
    tcp_state: TcpState = TcpState.ERROR
    dns_lookup_seconds: float = 0.0
    connect_seconds: float | None = None
    ip_protocol: int = 0
    address: str | None = None
    # One line for a person: what happened and, for failures, the likely causes.
    detail: str = ""
    # Set by the handler around the whole probe, as blackbox_exporter does.
    duration_seconds: float = 0.0
    transcript: list[str] = field(default_factory=list)
    # True when the handler gave up on the probe at the scrape deadline.
    cut_at_deadline: bool = False
    # The prober's own typed details (e.g. the SMTP dialogue's ``SmtpDetails``): what people read about
    # this result. ``NO_DETAILS`` for a plain connect.
    details: Details = NO_DETAILS
    # Path diagnosis (docs/path-diagnosis.md).
    # The ICMP error that ended the connect, with its sender (read from the socket's error queue).
    icmp: IcmpReply | None = None
    # A path diagnosis run for this probe (/probe and check run it inline).
    path: PathDiagnosis | None = None
    # With tcp.probe_addresses: all, every address of the name (exporter.probers.connect.addresses).
    addresses: AddressesReport | None = None
    # tcp.mtu_check: do full-size packets get through both ways (docs/mtu.md).
    mtu: MtuReport | None = None

    def note(self, line: str) -> None:
        self.transcript.append(line)
