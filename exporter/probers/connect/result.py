"""What a probe returns: classified outcomes and timings, never an exception."""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # path diagnosis types; annotations only, so no import cost or cycle
    from exporter.pathdiag.icmp import IcmpReply
    from exporter.pathdiag.model import PathDiagnosis
    from exporter.probers.connect.mtu import MtuReport


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
    # The prober's own typed details (e.g. the SMTP dialogue's ``SmtpDetails``); its plugin
    # (``exporter.probers.base.Prober``) is what formats them for metrics and people.
    details: Any = None
    # Path diagnosis (docs/path-diagnosis.md).
    # The ICMP error that ended the connect, with its sender (read from the socket's error queue).
    icmp: IcmpReply | None = None
    # A path diagnosis run for this probe (/probe and check run it inline).
    path: PathDiagnosis | None = None
    # tcp.mtu_check: do full-size packets get through both ways (docs/mtu.md).
    mtu: MtuReport | None = None

    def note(self, line: str) -> None:
        self.transcript.append(line)
