"""What the kernel knows about a TCP connection's packet sizes, read without privileges.

``TCP_INFO`` gives the segment sizes and what is unacknowledged; ``IP_MTU`` the path MTU the kernel
holds for the destination (lowered by an ICMP "fragmentation needed" / "packet too big", kept about
10 minutes in a route exception). TCP itself never queues those ICMP messages on the socket's error
queue (Linux handles them inside ``tcp_v4_err`` / ``tcp_v6_err``), so the router that sent one is
learnt from a UDP datagram of the same size instead (``reporter_datagram``).
"""

from __future__ import annotations

import contextlib
import fcntl
import socket
import struct
from dataclasses import dataclass

from exporter.pathdiag.icmp import enable_recverr

IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14  # <linux/in.h>
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24  # <linux/in6.h>
TCPI_OPT_TIMESTAMPS = 1
TCP_MSS_DEFAULT = 536  # what Linux assumes of the peer until a larger segment arrives (RFC 879)
_SIOCGIFMTU = 0x8921
_SIOCGIFADDR = 0x8915


@dataclass(frozen=True, slots=True)
class TcpInfo:
    retransmits: int  # consecutive retransmission timeouts of the oldest unacknowledged segment
    options: int
    snd_mss: int  # the largest payload we send now
    rcv_mss: int  # an estimate of the largest payload received (536 until a larger one arrives)
    unacked: int  # segments sent and not acknowledged
    pmtu: int  # the path MTU this connection uses
    advmss: int  # the MSS we advertised
    rtt_us: int
    total_retrans: int
    bytes_received: int  # payload bytes received on the connection (0 on kernels before 4.1)
    segs_out: int  # segments sent, retransmissions included (0 on kernels before 4.2)


def tcp_info(sock: socket.socket) -> TcpInfo | None:
    """struct tcp_info's fields used here (offsets from <linux/tcp.h>); None if the kernel gives less."""
    try:
        raw = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 144)
    except OSError:
        return None
    if len(raw) < 104:
        return None
    snd_mss, rcv_mss, unacked = struct.unpack_from("=III", raw, 16)
    (pmtu,) = struct.unpack_from("=I", raw, 60)
    (rtt,) = struct.unpack_from("=I", raw, 68)
    (advmss,) = struct.unpack_from("=I", raw, 84)
    (total,) = struct.unpack_from("=I", raw, 100)
    received, segs_out = struct.unpack_from("=QI", raw, 128) if len(raw) >= 140 else (0, 0)
    return TcpInfo(raw[2], raw[5], snd_mss, rcv_mss, unacked, pmtu, advmss, rtt, total, received, segs_out)


def header_bytes(sock: socket.socket, info: TcpInfo) -> int:
    """IP + TCP header bytes around a payload of ``snd_mss``/``rcv_mss`` (timestamps included when used)."""
    ip = 40 if sock.family == socket.AF_INET6 else 20
    return ip + 20 + (12 if info.options & TCPI_OPT_TIMESTAMPS else 0)


def set_dont_fragment(sock: socket.socket) -> None:
    """DF on every segment, and no fragmentation by this host either: what a black hole needs to show."""
    with contextlib.suppress(OSError):
        if sock.family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO)
        else:
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)


def path_mtu(sock: socket.socket) -> int | None:
    """The kernel's path MTU towards the connected peer (a learnt route exception included)."""
    try:
        if sock.family == socket.AF_INET6:
            return int(sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MTU))
        return int(sock.getsockopt(socket.IPPROTO_IP, IP_MTU))
    except OSError:
        return None


def device_mtu(local_address: str, family: int) -> int | None:
    """The MTU of the interface that holds ``local_address`` (our end of the connection): the largest
    packet this host sends before anything was learnt about the path. None where it cannot be found."""
    try:
        names = [name for _index, name in socket.if_nameindex()]
    except OSError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for name in names:
            if family == socket.AF_INET and _ipv4_of(probe, name) != local_address:
                continue
            if family == socket.AF_INET6 and not _holds_ipv6(name, local_address):
                continue
            try:
                raw = fcntl.ioctl(probe.fileno(), _SIOCGIFMTU, struct.pack("16si", name.encode()[:15], 0))
            except OSError:
                return None
            return int(struct.unpack_from("16si", raw)[1])
    return None


def _ipv4_of(probe: socket.socket, name: str) -> str | None:
    try:
        raw = fcntl.ioctl(probe.fileno(), _SIOCGIFADDR, struct.pack("16s16x", name.encode()[:15]))
    except OSError:
        return None
    return socket.inet_ntoa(raw[20:24])


def _holds_ipv6(name: str, address: str) -> bool:
    try:
        wanted = socket.inet_pton(socket.AF_INET6, address).hex()
        with open("/proc/net/if_inet6", encoding="ascii") as table:
            return any(line.split()[0] == wanted and line.split()[-1] == name for line in table if line.strip())
    except (OSError, ValueError, IndexError):
        return False


@dataclass(frozen=True, slots=True)
class DatagramAnswer:
    """What came back for one full-size UDP datagram with DF."""

    frag_needed_by: str | None = None  # the router that said the packet is too big
    next_hop_mtu: int | None = None  # the MTU it named
    host_answered: bool = False  # port unreachable from the target: full-size packets reach it


# A port nothing is expected to listen on (traceroute's), so the host answers port-unreachable.
REPORTER_PORT = 33434


def open_reporter(family: int, address: str, size: int) -> socket.socket | None:
    """Send one UDP datagram of ``size`` bytes (IP header included) with DF to ``address``; the socket
    whose error queue will hold the answer, or None where it could not be sent (e.g. a path MTU
    already learnt below ``size`` makes the kernel refuse it locally)."""
    sock: socket.socket | None = None
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        enable_recverr(sock)
        set_dont_fragment(sock)
        sockaddr = (address, REPORTER_PORT, 0, 0) if family == socket.AF_INET6 else (address, REPORTER_PORT)
        sock.connect(sockaddr)
        header = 48 if family == socket.AF_INET6 else 28
        sock.send(b"\0" * max(0, size - header))
        return sock
    except OSError:
        if sock is not None:
            sock.close()
        return None


def reporter_answer(sock: socket.socket, target: str) -> DatagramAnswer | None:
    """The ICMP answer queued for the datagram so far (None: none yet)."""
    try:
        raw = sock.recvmsg(64, 512, 0x2000 | socket.MSG_DONTWAIT)  # MSG_ERRQUEUE
    except OSError:
        return None
    for level, _kind, data in raw[1]:
        if len(data) < 16 or level not in (socket.IPPROTO_IP, socket.IPPROTO_IPV6):
            continue
        _errno, origin, icmp_type, code, _pad, info, _data = struct.unpack_from("=IBBBBII", data)
        sender = _offender(data[16:])
        if (origin, icmp_type, code) == (2, 3, 4) or (origin, icmp_type) == (3, 2):
            return DatagramAnswer(frag_needed_by=sender, next_hop_mtu=info or None)
        if origin in (2, 3) and sender is not None and _same(sender, target):
            return DatagramAnswer(host_answered=True)
    return None


def _offender(raw: bytes) -> str | None:
    if len(raw) >= 8 and struct.unpack_from("=H", raw)[0] == socket.AF_INET:
        return socket.inet_ntop(socket.AF_INET, raw[4:8])
    if len(raw) >= 24 and struct.unpack_from("=H", raw)[0] == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, raw[8:24])
    return None


def _same(left: str, right: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(left) == ipaddress.ip_address(right)
    except ValueError:
        return False
