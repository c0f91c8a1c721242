"""Single probe packets of a path diagnosis, all unprivileged: a TCP SYN or a UDP datagram with a
chosen TTL (IPv6 hop limit), whose ICMP answer is read from the socket's error queue, and an ICMP
echo where the system lets unprivileged users ping (``net.ipv4.ping_group_range``)."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import select
import socket
import struct
import time

from exporter.pathdiag.icmp import IcmpKind, IcmpReply, enable_recverr, read_icmp_errors, set_ttl
from exporter.pathdiag.model import Answer, Reply

# Traceroute's customary base port: a datagram to a port nothing listens on draws a port-unreachable
# from the host itself, which proves the host is up and, at the smallest TTL that gets it, how far.
UDP_BASE_PORT = 33434
_UDP_PAYLOAD = b"\x00" * 12

_KIND_REPLY = {
    IcmpKind.TIME_EXCEEDED: Reply.TIME_EXCEEDED,
    IcmpKind.PROHIBITED: Reply.PROHIBITED,
    IcmpKind.NO_ROUTE: Reply.NO_ROUTE,
    IcmpKind.HOST_UNREACHABLE: Reply.HOST_UNREACHABLE,
    IcmpKind.PORT_UNREACHABLE: Reply.PORT_UNREACHABLE,
    IcmpKind.OTHER: Reply.UNREACHABLE,
}


def icmp_answer(reply: IcmpReply, rtt: float | None) -> Answer:
    return Answer(_KIND_REPLY[reply.kind], reply.sender, rtt, reply)


def tcp_answer(code: int, errors: list[IcmpReply], target: str, rtt: float) -> Answer:
    """Classify a finished connect by its ICMP error (if any) first, else by errno."""
    if code == 0:
        return Answer(Reply.SYN_ACK, target, rtt)
    if errors:
        return icmp_answer(errors[0], rtt)
    if code in (errno.ECONNREFUSED, errno.ECONNRESET):
        return Answer(Reply.RESET, target, rtt)
    if code == errno.ENETUNREACH:  # this machine has no route: nothing left it
        return Answer(Reply.NO_ROUTE, None, rtt)
    if code == errno.EHOSTUNREACH:  # this machine's own neighbour lookup failed
        return Answer(Reply.HOST_UNREACHABLE, None, rtt)
    return Answer(Reply.ERROR, None, rtt)


def _sockaddr(family: int, address: str, port: int) -> tuple[str, int] | tuple[str, int, int, int]:
    return (address, port, 0, 0) if family == socket.AF_INET6 else (address, port)


def _syns_sent(sock: socket.socket) -> int:
    """1 + the kernel's SYN retransmissions so far (``tcpi_retransmits`` of TCP_INFO)."""
    try:
        return 1 + sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[2]
    except OSError:
        return 2  # cannot tell: count the retransmission that may have happened


async def tcp_probe(
    family: int, address: str, port: int, ttl: int, wait: float, source: str | None = None
) -> tuple[Answer, int]:
    """One SYN with ``ttl``; (its answer, SYNs that left, retransmissions included). The socket is
    closed after ``wait`` at the latest: keep ``wait`` under the kernel's first SYN retransmission (1 s)."""
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    try:
        sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    except OSError:
        return Answer(Reply.ERROR), 0
    sent = 0
    try:
        enable_recverr(sock)
        set_ttl(sock, ttl)
        if source:
            sock.bind((source, 0))
        started = time.perf_counter()
        code = sock.connect_ex(_sockaddr(family, address, port))
        sent = 1
        stamp = time.perf_counter()
        if code == errno.EINPROGRESS:
            done: asyncio.Future[float] = loop.create_future()
            fd = sock.fileno()

            def writable() -> None:
                if not done.done():
                    done.set_result(time.perf_counter())

            loop.add_writer(fd, writable)
            try:
                async with asyncio.timeout(wait):
                    stamp = await done
            except TimeoutError:
                # A busy event loop can run the timeout together with (or before) the callback of an
                # outcome the kernel already has: ask the socket before calling it silence.
                if done.done() and not done.cancelled():  # the timeout cancels the future it interrupts
                    stamp = done.result()
                elif select.select([], [sock], [], 0)[1]:
                    stamp = time.perf_counter()  # the round trip is at most this
                else:
                    return Answer(Reply.SILENCE), _syns_sent(sock)
            finally:
                loop.remove_writer(fd)
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            sent = _syns_sent(sock)
        return tcp_answer(code, read_icmp_errors(sock), address, stamp - started), sent
    except OSError:
        return Answer(Reply.ERROR), sent
    finally:
        sock.close()


class UdpProbe:
    """One datagram with a TTL; its answer may come late (a router's ARP attempt takes ~3 s), so the
    socket stays open up to ``linger`` seconds and ``answer`` resolves whenever it arrives."""

    def __init__(self, family: int, address: str, ttl: int, linger: float, source: str | None = None):
        self.loop = asyncio.get_running_loop()
        self.address = address
        self.answer: asyncio.Future[Answer] = self.loop.create_future()
        self._sock: socket.socket | None = None
        self._timer: asyncio.TimerHandle | None = None
        try:
            sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK)
        except OSError:
            self.answer.set_result(Answer(Reply.ERROR))
            return
        self._sock = sock
        try:
            enable_recverr(sock)
            set_ttl(sock, ttl)
            if source:
                sock.bind((source, 0))
            sock.connect(_sockaddr(family, address, UDP_BASE_PORT + ttl))
            self.loop.add_reader(sock.fileno(), self._readable)
            self._started = time.perf_counter()
            sock.send(_UDP_PAYLOAD)
        except OSError:
            self._finish(Answer(Reply.ERROR))
            return
        self._timer = self.loop.call_later(linger, self._expire)

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        rtt = time.perf_counter() - self._started
        errors = read_icmp_errors(sock)
        if errors:
            self._finish(icmp_answer(errors[0], rtt))
            return
        try:
            sock.recv(512, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # an error already reported through the queue, or none worth keeping
        self._finish(Answer(Reply.UDP_REPLY, self.address, rtt))

    def _expire(self) -> None:
        # A busy loop (or uvloop, which runs timers before polling) may reach this before the callback of
        # an answer the kernel already queued: read the socket once before calling it silence.
        self._readable()
        self._finish(Answer(Reply.SILENCE))

    def _finish(self, answer: Answer) -> None:
        if not self.answer.done():
            self.answer.set_result(answer)
        if self._timer is not None:
            self._timer.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            with contextlib.suppress(ValueError, OSError):
                self.loop.remove_reader(sock.fileno())
            sock.close()

    def close(self) -> None:
        self._finish(Answer(Reply.SILENCE))


def ping_permitted() -> bool:
    """Whether this process may open an unprivileged ICMP echo socket."""
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    except OSError:
        return False
    sock.close()
    return True


async def echo_probe(family: int, address: str, wait: float) -> bool | None:
    """One ICMP echo request: True if the host replied, False if not, None if pinging is not permitted."""
    loop = asyncio.get_running_loop()
    proto, echo_type = (socket.IPPROTO_ICMPV6, 128) if family == socket.AF_INET6 else (socket.IPPROTO_ICMP, 8)
    try:
        sock = socket.socket(family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK, proto)
    except OSError:
        return None
    try:
        got: asyncio.Future[bool] = loop.create_future()

        def readable() -> None:
            try:
                data = sock.recv(512)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not got.done():
                got.set_result(bool(data))

        loop.add_reader(sock.fileno(), readable)
        try:
            # The kernel fills in the identifier and the checksum of a ping socket's echo request.
            sock.sendto(struct.pack("!BBHHH", echo_type, 0, 0, 0, 1) + b"path", _sockaddr(family, address, 0))
            async with asyncio.timeout(wait):
                return await got
        except TimeoutError:
            return False
        except OSError:
            return None
        finally:
            loop.remove_reader(sock.fileno())
    finally:
        sock.close()
