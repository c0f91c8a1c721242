"""The evidence a path diagnosis gathers and what it concludes, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from exporter.pathdiag.icmp import IcmpReply


class Verdict(StrEnum):
    """The fixed set of conclusions (a contract: the ``verdict`` label values and JSON values)."""

    REACHED = "reached"  # the host itself answered (open, or its own RST)
    HOST_REJECTED = "host_rejected"  # ICMP reject sent by the target address
    NETWORK_REJECTED = "network_rejected"  # ICMP reject from another address, or a RST forged early
    DROPPED_IN_NETWORK = "dropped_in_network"  # hops answer up to k, the SYN dies after it, the host is farther
    DROPPED_AT_LAST_HOP = "dropped_at_last_hop"  # silence at the host's own hop while the host is up
    HOST_DOWN = "host_down"  # the last router says host unreachable
    NO_ROUTE = "no_route"  # a router answers unreachable without forwarding
    UNKNOWN = "unknown"  # not enough answers to decide


class Reply(StrEnum):
    """What one probe packet drew (the ``reply`` of a hop in ``check --json``)."""

    TIME_EXCEEDED = "time_exceeded"  # a hop on the way: the TTL ran out there
    SYN_ACK = "syn_ack"  # the port accepted the connection
    RESET = "reset"  # a TCP reset
    PORT_UNREACHABLE = "port_unreachable"  # ICMP port/protocol unreachable
    PROHIBITED = "prohibited"  # ICMP administratively prohibited (a filter)
    HOST_UNREACHABLE = "host_unreachable"  # ICMP host/address unreachable
    NO_ROUTE = "no_route"  # ICMP network unreachable / no route
    UNREACHABLE = "unreachable"  # another ICMP error
    UDP_REPLY = "udp_reply"  # the host answered the UDP probe with data
    SILENCE = "silence"  # nothing came back in time
    ERROR = "error"  # the probe could not be sent from this machine


TERMINAL_TCP = frozenset(
    {
        Reply.SYN_ACK,
        Reply.RESET,
        Reply.PORT_UNREACHABLE,
        Reply.PROHIBITED,
        Reply.HOST_UNREACHABLE,
        Reply.NO_ROUTE,
        Reply.UNREACHABLE,
    }
)
ICMP_REJECTIONS = frozenset(
    {Reply.PORT_UNREACHABLE, Reply.PROHIBITED, Reply.HOST_UNREACHABLE, Reply.NO_ROUTE, Reply.UNREACHABLE}
)


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one probe packet (or the best of several tries at the same TTL)."""

    reply: Reply
    address: str | None = None  # who answered (the ICMP sender; the target for SYN-ACK/RST)
    rtt: float | None = None  # seconds
    icmp: IcmpReply | None = None

    @property
    def answered(self) -> bool:
        return self.reply not in (Reply.SILENCE, Reply.ERROR)


@dataclass(slots=True)
class HopEvidence:
    ttl: int
    tcp: Answer | None = None  # None: no TCP probe at this TTL
    tcp_tries: int = 0
    udp: Answer | None = None  # None: no UDP probe at this TTL
    udp_tries: int = 0

    def record(self, protocol: str, answer: Answer) -> None:
        """Keep the first real answer over several tries; silence only while nothing answered."""
        if protocol == "tcp":
            self.tcp_tries += 1
            if self.tcp is None or not self.tcp.answered:
                self.tcp = answer
        else:
            self.udp_tries += 1
            if self.udp is None or not self.udp.answered:
                self.udp = answer

    def late(self, protocol: str, answer: Answer) -> None:
        """An answer that arrived after its try was counted as silent."""
        if protocol == "tcp":
            if self.tcp is None or not self.tcp.answered:
                self.tcp = answer
        elif self.udp is None or not self.udp.answered:
            self.udp = answer


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    words: str
    blocked_by: str | None = None
    blocked_at_hop: int | None = None
    hops_to_host: int | None = None
    last_responding_hop: int | None = None
    remaining: tuple[Verdict, ...] = ()  # for UNKNOWN: the verdicts the evidence leaves open


@dataclass(frozen=True, slots=True)
class PathDiagnosis:
    target: str  # the address diagnosed
    port: int
    decision: Decision
    hops: tuple[HopEvidence, ...]
    host_up: bool | None  # True: the host answered something; None: not shown either way
    packets: int  # probe packets sent
    seconds: float  # how long it took
    finished_at: float  # unix time
    notes: tuple[str, ...] = field(default=())

    @property
    def verdict(self) -> Verdict:
        return self.decision.verdict
