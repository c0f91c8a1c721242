"""ICMP errors read from a socket's error queue (IP_RECVERR / IPV6_RECVERR), without privileges.

With IP_RECVERR set, Linux queues every ICMP error that concerns a socket; ``recvmsg`` with
MSG_ERRQUEUE returns a ``struct sock_extended_err`` (errno, origin, ICMP type and code) followed
by the address of the device that sent the ICMP message (SO_EE_OFFENDER). That address is what
tells "the host itself rejected" from "a router or firewall on the way rejected".
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from enum import StrEnum

IP_RECVERR = 11  # <linux/in.h>; not in Python's socket module
IPV6_RECVERR = 25  # <linux/in6.h>
MSG_ERRQUEUE = 0x2000
SO_EE_ORIGIN_ICMP = 2
SO_EE_ORIGIN_ICMP6 = 3
_EXTENDED_ERR = struct.Struct("=IBBBBII")  # ee_errno, ee_origin, ee_type, ee_code, ee_pad, ee_info, ee_data


class IcmpKind(StrEnum):
    """What an ICMP error means for a probe, whatever its IP version."""

    TIME_EXCEEDED = "time_exceeded"  # the TTL / hop limit ran out at the sender: a hop on the way
    PROHIBITED = "prohibited"  # a filter rejected the packet
    NO_ROUTE = "no_route"  # the sender has no route to the destination network
    HOST_UNREACHABLE = "host_unreachable"  # the sender could not deliver to the host (e.g. no ARP/ND answer)
    PORT_UNREACHABLE = "port_unreachable"  # port or protocol unreachable: the sender is the host, or rejects like one
    OTHER = "other"  # anything else (packet too big, parameter problem, ...)


# IPv4 destination unreachable (type 3) codes, RFC 792 / RFC 1122 / RFC 1812.
_V4_UNREACHABLE = {
    0: ("network unreachable", IcmpKind.NO_ROUTE),
    1: ("host unreachable", IcmpKind.HOST_UNREACHABLE),
    2: ("protocol unreachable", IcmpKind.PORT_UNREACHABLE),
    3: ("port unreachable", IcmpKind.PORT_UNREACHABLE),
    4: ("fragmentation needed", IcmpKind.OTHER),
    5: ("source route failed", IcmpKind.OTHER),
    6: ("destination network unknown", IcmpKind.NO_ROUTE),
    7: ("destination host unknown", IcmpKind.HOST_UNREACHABLE),
    8: ("source host isolated", IcmpKind.OTHER),
    9: ("network administratively prohibited", IcmpKind.PROHIBITED),
    10: ("host administratively prohibited", IcmpKind.PROHIBITED),
    11: ("network unreachable for this type of service", IcmpKind.NO_ROUTE),
    12: ("host unreachable for this type of service", IcmpKind.HOST_UNREACHABLE),
    13: ("administratively prohibited", IcmpKind.PROHIBITED),  # RFC 1812: communication filtered
    14: ("host precedence violation", IcmpKind.PROHIBITED),
    15: ("precedence cutoff in effect", IcmpKind.PROHIBITED),
}
# ICMPv6 destination unreachable (type 1) codes, RFC 4443 section 3.1.
_V6_UNREACHABLE = {
    0: ("no route to destination", IcmpKind.NO_ROUTE),
    1: ("administratively prohibited", IcmpKind.PROHIBITED),
    2: ("beyond scope of source address", IcmpKind.NO_ROUTE),
    3: ("address unreachable", IcmpKind.HOST_UNREACHABLE),
    4: ("port unreachable", IcmpKind.PORT_UNREACHABLE),
    5: ("source address failed ingress/egress policy", IcmpKind.PROHIBITED),
    6: ("reject route to destination", IcmpKind.PROHIBITED),
}


@dataclass(frozen=True, slots=True)
class IcmpReply:
    """One ICMP error that came back for a probe."""

    version: int  # 4 (ICMP) or 6 (ICMPv6)
    type: int
    code: int
    sender: str  # the address the ICMP message came from (SO_EE_OFFENDER)
    errno: int  # what the kernel made of it

    @property
    def kind(self) -> IcmpKind:
        return classify(self.version, self.type, self.code)

    @property
    def description(self) -> str:
        return describe(self.version, self.type, self.code)

    def sent_by_host(self, target: str) -> bool:
        return same_address(self.sender, target)


def classify(version: int, icmp_type: int, code: int) -> IcmpKind:
    if (version, icmp_type) in ((4, 11), (6, 3)):
        return IcmpKind.TIME_EXCEEDED
    if (version, icmp_type) == (4, 3):
        return _V4_UNREACHABLE.get(code, ("", IcmpKind.OTHER))[1]
    if (version, icmp_type) == (6, 1):
        return _V6_UNREACHABLE.get(code, ("", IcmpKind.OTHER))[1]
    return IcmpKind.OTHER


def describe(version: int, icmp_type: int, code: int) -> str:
    """The ICMP message's name as its RFC gives it, in words."""
    name = "ICMPv6" if version == 6 else "ICMP"
    if (version, icmp_type) == (4, 11):
        return "time to live exceeded in transit" if code == 0 else "fragment reassembly time exceeded"
    if (version, icmp_type) == (6, 3):
        return "hop limit exceeded in transit" if code == 0 else "fragment reassembly time exceeded"
    table = _V4_UNREACHABLE if version == 4 else _V6_UNREACHABLE
    if (version, icmp_type) in ((4, 3), (6, 1)):
        words = table.get(code, ("", IcmpKind.OTHER))[0]
        return words or f"destination unreachable (code {code})"
    if (version, icmp_type) == (6, 2):
        return "packet too big"
    if (version, icmp_type) in ((4, 12), (6, 4)):
        return "parameter problem"
    return f"{name} type {icmp_type} code {code}"


def who_sent(reply: IcmpReply, target: str) -> str:
    """Whose answer an ICMP error is, in words: the host itself, or a device on the way."""
    if reply.sent_by_host(target):
        if reply.kind is IcmpKind.PROHIBITED:
            return "the host's own firewall, not the network"
        return "the host itself, not the network"
    if reply.kind is IcmpKind.PROHIBITED or reply.kind is IcmpKind.PORT_UNREACHABLE:
        return "a network firewall, not the host"
    if reply.kind is IcmpKind.TIME_EXCEEDED:
        return "a router on the way, not the host"
    return "a router on the way, not the host"


def same_address(left: str, right: str) -> bool:
    if left == right:
        return True
    try:
        import ipaddress

        a, b = ipaddress.ip_address(left), ipaddress.ip_address(right)
    except ValueError:
        return False
    if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped is not None:
        a = a.ipv4_mapped
    if isinstance(b, ipaddress.IPv6Address) and b.ipv4_mapped is not None:
        b = b.ipv4_mapped
    return a == b


def enable_recverr(sock: socket.socket) -> None:
    """Ask the kernel to queue ICMP errors for this socket (no privileges needed)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 1)


def disable_recverr(sock: socket.socket) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_RECVERR, 0)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_RECVERR, 0)


def set_ttl(sock: socket.socket, ttl: int) -> None:
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, ttl)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)


def parse_extended_error(level: int, kind: int, data: bytes) -> IcmpReply | None:
    """One control message from MSG_ERRQUEUE; None unless it reports an ICMP error with a sender."""
    if (level, kind) not in ((socket.IPPROTO_IP, IP_RECVERR), (socket.IPPROTO_IPV6, IPV6_RECVERR)):
        return None
    if len(data) < _EXTENDED_ERR.size:
        return None
    errno_, origin, icmp_type, code, _pad, _info, _data = _EXTENDED_ERR.unpack_from(data)
    if origin not in (SO_EE_ORIGIN_ICMP, SO_EE_ORIGIN_ICMP6):
        return None
    sender = _offender(data[_EXTENDED_ERR.size :])
    if sender is None:
        return None
    return IcmpReply(6 if origin == SO_EE_ORIGIN_ICMP6 else 4, icmp_type, code, sender, errno_)


def _offender(raw: bytes) -> str | None:
    if len(raw) < 2:
        return None
    family = struct.unpack_from("=H", raw)[0]
    if family == socket.AF_INET and len(raw) >= 8:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if family == socket.AF_INET6 and len(raw) >= 24:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def read_icmp_errors(sock: socket.SocketType, limit: int = 8) -> list[IcmpReply]:
    """Drain the socket's error queue (non-blocking); the ICMP errors in it, oldest first."""
    replies: list[IcmpReply] = []
    for _ in range(limit):
        try:
            _data, ancillary, _flags, _addr = sock.recvmsg(512, 1024, MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            break
        for level, kind, data in ancillary:
            reply = parse_extended_error(level, kind, data)
            if reply is not None:
                replies.append(reply)
    return replies
