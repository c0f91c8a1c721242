"""The TCP connect step shared by every prober: resolve, connect, classify, time.

The connect is driven by hand (non-blocking connect + a writability callback) rather than
through asyncio streams: the callback stamps the time the kernel reported the outcome,
so the connect time is not inflated by however long the event loop takes to resume us.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Sequence

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.pathdiag.icmp import disable_recverr, enable_recverr, read_icmp_errors, who_sent
from exporter.probers.connect.every import connect_each_beside, connect_every_address, every_address
from exporter.probers.connect.resolve import ResolveError, Resolver, SockAddr, literal
from exporter.probers.connect.result import AddressesReport, ProbeResult, TcpState, classify_errno, describe_errno
from exporter.probers.connect.settings import TcpSettings

# Kept apart so `check` can say how long it waited before giving the same causes.
TIMEOUT_CAUSES = "a firewall is probably dropping packets, or the host is down, or the network path is broken"
EXPLANATIONS = {
    TcpState.OPEN: "the port accepted the connection",
    TcpState.REFUSED: "the host (or a firewall rejecting with a TCP reset) refused the connection: "
    "nothing listens on this port or access is rejected",
    TcpState.TIMEOUT: f"nothing answered before the deadline: {TIMEOUT_CAUSES}",
    TcpState.UNREACHABLE: "an ICMP error came back (host/network unreachable or administratively prohibited): "
    "a router or firewall says there is no way through",
    TcpState.DNS_ERROR: "the name could not be resolved to an address",
    TcpState.ERROR: "the probe could not be carried out on this machine",
}


async def connect_target(
    result: ProbeResult, target: HostPort, tcp: TcpSettings, deadline: Deadline, resolver: Resolver
) -> socket.socket | None:
    """Resolve and connect; fill the DNS/connect fields of ``result``.

    Returns the connected socket (the caller owns and closes it), or None with
    ``result.tcp_state`` saying why not. Never raises for a network failure.
    """
    if every_address(tcp):  # tcp.probe_addresses: all (every.py)
        return await connect_every_address(result, target, tcp, deadline, resolver, connect_target)
    loop = asyncio.get_running_loop()
    resolved = literal(target)
    if resolved is None:
        result.note(f"Resolving {target.host} ({tcp.preferred_ip_protocol} preferred)...")
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                resolved = await resolver.resolve(target, tcp)
        except ResolveError as exc:
            result.dns_lookup_seconds = time.perf_counter() - started
            _failed(result, TcpState.DNS_ERROR, exc.reason)
            return None
        except TimeoutError:
            result.dns_lookup_seconds = time.perf_counter() - started
            _failed(result, TcpState.DNS_ERROR, f"no answer from the resolver for {target.host} before the deadline")
            return None
        result.dns_lookup_seconds = time.perf_counter() - started
        result.note(f"Resolved {target.host} to {resolved.ip} in {result.dns_lookup_seconds * 1000:.1f} ms")
    result.ip_protocol = resolved.ip_protocol
    result.address = resolved.ip
    shown = f"[{resolved.ip}]" if resolved.ip_protocol == 6 else resolved.ip
    result.note(f"Trying {shown}:{target.port}...")

    sock: socket.socket | None = None
    connected = False
    try:
        try:
            pause = _pacer(loop).turn()
            if pause is not None:
                await pause
            if loop.time() >= deadline:
                # A connect started now would report a meaningless near-zero connect time.
                _failed(result, TcpState.TIMEOUT, "the deadline passed before the connect could start")
                return None
            # SOCK_NONBLOCK: non-blocking from birth, one syscall fewer than setblocking(False).
            sock = socket.socket(resolved.family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
            # ICMP errors for this SYN are queued with their sender: who rejected (host or network).
            enable_recverr(sock)
            if tcp.source_ip_address:
                sock.bind((tcp.source_ip_address, 0))
            code, seconds = await _connect(loop, sock, resolved.sockaddr, deadline)
        except OSError as exc:
            # socket(), bind() or add_writer() failed before any packet left: EMFILE, EADDRNOTAVAIL, ...
            reason = describe_errno(exc.errno) if exc.errno else str(exc)
            _failed(result, TcpState.ERROR, f"could not start the connection: {reason}")
            return None
        result.connect_seconds = seconds
        state = TcpState.TIMEOUT if code is None else classify_errno(code)
        result.tcp_state = result.state = state
        if state is TcpState.OPEN:
            connected = True
            # Connected: from now on an ICMP error would abort the session outright with IP_RECVERR set
            # (instead of being a soft error TCP rides out), so the option ends with the connect.
            disable_recverr(sock)
            result.note(f"Connected to {shown}:{target.port} in {seconds * 1000:.2f} ms")
            result.detail = EXPLANATIONS[state]
            return sock
        reason = "no answer" if code is None else describe_errno(code)
        result.note(f"{reason} after {seconds * 1000:.2f} ms")
        icmp = read_icmp_errors(sock)[:1] if code else []
        if icmp:
            result.icmp = icmp[0]
            sender = f"[{icmp[0].sender}]" if ":" in icmp[0].sender else icmp[0].sender
            words = f"{icmp[0].description} by {sender} — {who_sent(icmp[0], resolved.ip)}"
            result.note(f"ICMP {words}")
            result.detail = f"{EXPLANATIONS[state]}: {words} ({reason} connecting to {shown}:{target.port})"
        else:
            result.detail = f"{EXPLANATIONS[state]} ({reason} connecting to {shown}:{target.port})"
        return None
    finally:
        if sock is not None and not connected:
            sock.close()


async def connect_beside(
    work: Awaitable[None],
    addresses: Sequence[str],
    port: int,
    tcp: TcpSettings,
    deadline: Deadline,
    resolver: Resolver,
    every: AddressesReport,
) -> None:
    """``tcp.probe_addresses: all`` for a prober that finds and walks the addresses itself (a mail domain's MX
    hosts): ``work`` runs with ``connect_target`` on one address each time, while every address (at most
    ``tcp.probe_addresses_max``) is connected to at once and closed; their outcomes are added to ``every``."""
    await connect_each_beside(work, addresses, port, tcp, deadline, resolver, every, connect_target)


def _failed(result: ProbeResult, state: TcpState, reason: str) -> None:
    result.tcp_state = result.state = state
    result.note(reason)
    result.detail = f"{EXPLANATIONS[state]}: {reason}"
    return


async def _connect(
    loop: asyncio.AbstractEventLoop, sock: socket.socket, sockaddr: SockAddr, deadline: Deadline
) -> tuple[int | None, float]:
    """Return (errno or 0, seconds), or (None, seconds) when the deadline passed first."""
    started = time.perf_counter()
    code: int | None = sock.connect_ex(sockaddr)
    if code != errno.EINPROGRESS:
        return code, time.perf_counter() - started
    fd = sock.fileno()
    outcome: asyncio.Future[tuple[int | None, float]] = loop.create_future()

    def on_writable() -> None:
        stamp = time.perf_counter()
        loop.remove_writer(fd)
        if not outcome.done():
            outcome.set_result((sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), stamp))

    def on_deadline() -> None:
        stamp = time.perf_counter()
        loop.remove_writer(fd)
        if not outcome.done():
            outcome.set_result((None, stamp))

    loop.add_writer(fd, on_writable)
    # A bare timer resolving the same future: far cheaper per probe than asyncio.timeout_at,
    # which arms a timer too but also cancels and un-cancels the task on expiry.
    timer = loop.call_at(deadline, on_deadline)
    try:
        code, stamp = await outcome
    except BaseException:  # cancelled by the scrape deadline: the socket is closed by the caller
        loop.remove_writer(fd)
        raise
    finally:
        timer.cancel()
    return code, stamp - started


# At most this many connects begin per event-loop iteration (see _ConnectPacer).
CONNECTS_PER_ITERATION = 8


class _ConnectPacer:
    """Spreads the start of connects over event-loop iterations.

    A connect's time is stamped in its writability callback, which runs only after the loop has
    finished the batch of ready callbacks it is working through. A scrape that starts hundreds of
    connects in one batch (each socket() + connect() costs tens of microseconds) would make every
    stamp in that batch late by up to the whole batch: milliseconds of invented latency. Letting a
    few connects start per iteration keeps each batch short, so the loop polls for outcomes often;
    throughput is unchanged because the same work runs, in more, shorter iterations.
    """

    __slots__ = ("_loop", "_started", "_waiters", "_armed")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._started = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._armed = False

    def turn(self) -> asyncio.Future[None] | None:
        """None: connect now; otherwise a future to await first (FIFO)."""
        if self._started < CONNECTS_PER_ITERATION and not self._waiters:
            self._started += 1
            self._arm()
            return None
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        self._arm()
        return waiter

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            self._loop.call_soon(self._next_iteration)

    def _next_iteration(self) -> None:
        self._armed = False
        self._started = 0
        waiters = self._waiters
        while waiters and self._started < CONNECTS_PER_ITERATION:
            waiter = waiters.popleft()
            if not waiter.done():  # done: its probe was cancelled while waiting
                waiter.set_result(None)
                self._started += 1
        if self._started:
            self._arm()


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ConnectPacer] = weakref.WeakKeyDictionary()


def _pacer(loop: asyncio.AbstractEventLoop) -> _ConnectPacer:
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = _ConnectPacer(loop)
    return pacer
