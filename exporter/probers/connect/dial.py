"""The TCP connect step shared by every prober: resolve, connect, classify, time.

The connect is driven by hand (non-blocking connect + a writability callback) rather than
through asyncio streams: the callback stamps the time the kernel reported the outcome,
so the connect time is not inflated by however long the event loop takes to resume us.

``Dial`` is the connect itself, callbacks only (no coroutine, no future): ``start_connect`` runs it
for a caller that wants its outcome as a callback (the runner's plain-connect probes, issue 25), and
``connect_target`` awaits the very same ``Dial`` after resolving the name. One code path, two ways in.
"""

from __future__ import annotations

import asyncio
import errno
import select
import socket
import time
import weakref
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import cast

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.pathdiag.icmp import IP_RECVERR, IPV6_RECVERR, read_icmp_errors, who_sent
from exporter.probers.connect.every import connect_each_beside, connect_every_address, every_address
from exporter.probers.connect.resolve import Resolved, ResolveError, Resolver, literal
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
    outcome: asyncio.Future[socket.socket | None] = loop.create_future()
    # Not closed at once: the Dial makes a socket.socket.
    dial = Dial(
        loop,
        result,
        target.port,
        resolved,
        tcp,
        deadline,
        lambda _, sock: outcome.set_result(cast(socket.socket, sock)),
    )
    dial.start()
    try:
        return await outcome
    except BaseException:  # cancelled (the scrape's deadline): nothing may stay open
        dial.cancel()
        if outcome.done() and not outcome.cancelled() and (sock := outcome.result()) is not None:
            sock.close()  # connected just before the cancellation reached us
        raise


# The socket is a ``socket.socket``, or a ``socket.SocketType`` for a receiver that closes it at once.
Done = Callable[[ProbeResult, "socket.SocketType | None"], None]


def start_connect(
    result: ProbeResult,
    target: HostPort,
    tcp: TcpSettings,
    deadline: Deadline,
    done: Done,
    loop: asyncio.AbstractEventLoop,
    closes_at_once: bool = False,
) -> Dial | None:
    """``connect_target`` without a coroutine, for an IP-literal target of a single-address module:
    ``done(result, socket or None)`` is called once with the outcome (perhaps before this returns).
    ``loop``: the running loop. ``closes_at_once``: ``done`` closes a connected socket without using it (the
    socket's IP_RECVERR is left on, and its close takes it out of the watcher's epoll set).
    None: this target needs ``connect_target`` (a name to resolve, or ``probe_addresses: all``).
    Cancel with the returned ``Dial.cancel()`` (``done`` is then never called)."""
    resolved = literal(target)
    if resolved is None or every_address(tcp):
        return None
    dial = Dial(loop, result, target.port, resolved, tcp, deadline, done, closes_at_once)
    dial.start()
    return dial


async def connect_beside(
    work: Awaitable[None],
    addresses: Sequence[str],
    port: int,
    tcp: TcpSettings,
    deadline: Deadline,
    resolver: Resolver,
    every: AddressesReport,
    name: str = "",
) -> None:
    """``tcp.probe_addresses: all`` for a prober that finds and walks the addresses itself (a mail domain's MX
    hosts): ``work`` runs with ``connect_target`` on one address each time, while every address of ``name`` not
    yet in ``every`` is connected to at once and closed; their outcomes are added to ``every``, which holds at
    most ``tcp.probe_addresses_max`` addresses for all the names together."""
    await connect_each_beside(work, addresses, port, tcp, deadline, resolver, every, connect_target, name)


def _failed(result: ProbeResult, state: TcpState, reason: str) -> None:
    result.tcp_state = result.state = state
    result.note(reason)
    result.detail = f"{EXPLANATIONS[state]}: {reason}"
    return


_WAITING, _CONNECTING, _OVER = 0, 1, 2

# Computed once: ``SOCK_STREAM | SOCK_NONBLOCK`` is an enum.Flag operation (Python code) on every call.
_STREAM_NONBLOCK = int(socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
# (level, option) of IP_RECVERR per IP version, chosen by the resolved address's version (an int): asking the
# socket for its family (``sock.family``) builds an AddressFamily enum member per call.
_RECVERR = {4: (socket.IPPROTO_IP, IP_RECVERR), 6: (socket.IPPROTO_IPV6, IPV6_RECVERR)}


def _ignore(result: ProbeResult, sock: socket.SocketType | None) -> None:
    return


class Dial:
    """One connect to a resolved address, driven by loop callbacks only: fills ``result`` (state, times,
    detail, transcript, ICMP sender) and calls ``done(result, socket or None)`` exactly once, unless
    cancelled first. The socket passed to ``done`` is connected and owned by the receiver."""

    __slots__ = (
        "_loop",
        "_result",
        "_port",
        "_resolved",
        "_tcp",
        "_deadline",
        "_done",
        "_sock",
        "_timer",
        "_fd",
        "_phase",
        "_started",
        "_pacer",
        "_epoch",
        "_closes",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        result: ProbeResult,
        port: int,
        resolved: Resolved,
        tcp: TcpSettings,
        deadline: float,
        done: Done,
        closes_at_once: bool = False,
    ):
        self._loop = loop
        self._result = result
        self._port = port
        self._resolved = resolved
        self._tcp = tcp
        self._deadline = deadline
        self._done = done
        self._sock: socket.SocketType | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._fd = -1
        self._phase = _WAITING
        self._started = 0  # time.perf_counter_ns()
        self._pacer: _ConnectPacer | None = None
        self._epoch = 0  # the _Watcher's dispatch round this connect began waiting in
        # The receiver closes the connected socket at once (a plain connect probe): IP_RECVERR need not be undone.
        self._closes = closes_at_once

    def start(self) -> None:
        result, resolved = self._result, self._resolved
        result.ip_protocol = resolved.ip_protocol
        result.address = resolved.ip
        result.note(f"Trying {resolved.shown}:{self._port}...")
        pacer = self._pacer = _pacer(self._loop)
        if pacer.turn(self._begin):
            self._begin()

    def cancel(self) -> None:
        """Stop now: the socket closed, no callback left behind, ``done`` never called."""
        if self._phase == _OVER:
            return
        self._phase = _OVER
        self._release(closing=True)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._done = _ignore

    def _begin(self) -> bool:
        """Start the connect (the pacer's turn came); False when it was cancelled while waiting."""
        if self._phase != _WAITING:
            return False
        self._phase = _CONNECTING
        loop = self._loop
        if loop.time() >= self._deadline:
            # A connect started now would report a meaningless near-zero connect time.
            self._end(TcpState.TIMEOUT, "the deadline passed before the connect could start")
            return True
        try:
            # SOCK_NONBLOCK: non-blocking from birth, one syscall fewer than setblocking(False).
            # A socket its receiver closes at once is of the C socket type itself (``socket.SocketType``), without
            # ``socket.socket``'s Python ``__init__`` and ``close``: -3 % instructions per plain probe (issue 25).
            # A receiver that uses the connection (asyncio streams, the dialogues) gets a ``socket.socket``.
            sock = self._sock = (socket.SocketType if self._closes else socket.socket)(
                self._resolved.family, _STREAM_NONBLOCK
            )
            # ICMP errors for this SYN are queued with their sender: who rejected (host or network).
            level, option = _RECVERR[self._resolved.ip_protocol]
            sock.setsockopt(level, option, 1)
            if self._tcp.source_ip_address:
                sock.bind((self._tcp.source_ip_address, 0))
            self._started = time.perf_counter_ns()
            code = sock.connect_ex(self._resolved.sockaddr)
            if code != errno.EINPROGRESS:
                self._outcome(code, time.perf_counter_ns())
                return True
            assert self._pacer is not None
            self._pacer.watcher.watch(sock.fileno(), self)
            self._fd = sock.fileno()
            # A bare timer: far cheaper per probe than asyncio.timeout_at (which also cancels a task).
            self._timer = loop.call_at(self._deadline, self._on_deadline)
        except OSError as exc:
            # socket(), bind() or the watch failed before any packet left: EMFILE, EADDRNOTAVAIL, ...
            self._release(closing=True)
            reason = describe_errno(exc.errno) if exc.errno else str(exc)
            self._end(TcpState.ERROR, f"could not start the connection: {reason}")
        return True

    def _on_writable(self, stamp: int) -> None:
        """The kernel reported the outcome (the _Watcher read it at ``stamp``, perf_counter_ns)."""
        if self._phase == _CONNECTING and self._sock is not None:
            self._outcome(self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), stamp)

    def _on_deadline(self) -> None:
        stamp = time.perf_counter_ns()
        if self._phase == _CONNECTING:
            self._outcome(None, stamp)

    def _release(self, closing: bool) -> None:
        """No callback left behind; ``closing``: the socket is closed next (not handed to the receiver)."""
        if self._fd >= 0:
            assert self._pacer is not None
            self._pacer.watcher.forget(self._fd, closing)
            self._fd = -1
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _end(self, state: TcpState, reason: str) -> None:
        """No connect was made: ``reason`` says why (the socket, if any, closed)."""
        self._phase = _OVER
        if self._sock is not None:
            self._sock.close()
        _failed(self._result, state, reason)
        self._finish(None)

    def _outcome(self, code: int | None, stamp: int) -> None:
        """The kernel's answer (errno, 0 when connected) or None for the deadline, stamped at ``stamp``
        (perf_counter_ns: whole nanoseconds divided once make a float with a short decimal form, which the
        exposition writes in under half the time of a difference of two float stamps: 0.2 vs 0.5 µs, issue 25)."""
        self._phase = _OVER
        state = TcpState.TIMEOUT if code is None else classify_errno(code)
        # A socket its receiver closes at once leaves the epoll set with its close: one epoll_ctl less per open probe.
        self._release(closing=state is not TcpState.OPEN or self._closes)
        result, sock = self._result, self._sock
        assert sock is not None
        seconds = result.connect_seconds = (stamp - self._started) / 1e9
        result.tcp_state = result.state = state
        shown, port = self._resolved.shown, self._port
        if state is TcpState.OPEN:
            # Connected: from now on an ICMP error would abort the session outright with IP_RECVERR set
            # (instead of being a soft error TCP rides out), so the option ends with the connect, unless the
            # receiver closes the socket at once anyway (one syscall less per open plain probe).
            if not self._closes:
                level, option = _RECVERR[self._resolved.ip_protocol]
                sock.setsockopt(level, option, 0)
            result.note(f"Connected to {shown}:{port} in {seconds * 1000:.2f} ms")
            result.detail = EXPLANATIONS[state]
            self._finish(sock)
            return
        try:
            reason = "no answer" if code is None else describe_errno(code)
            result.note(f"{reason} after {seconds * 1000:.2f} ms")
            icmp = read_icmp_errors(sock)[:1] if code else []
            if icmp:
                result.icmp = icmp[0]
                sender = f"[{icmp[0].sender}]" if ":" in icmp[0].sender else icmp[0].sender
                words = f"{icmp[0].description} by {sender} — {who_sent(icmp[0], self._resolved.ip)}"
                result.note(f"ICMP {words}")
                result.detail = f"{EXPLANATIONS[state]}: {words} ({reason} connecting to {shown}:{port})"
            else:
                result.detail = f"{EXPLANATIONS[state]} ({reason} connecting to {shown}:{port})"
        finally:
            sock.close()
        self._finish(None)

    def _finish(self, sock: socket.SocketType | None) -> None:
        # The receiver usually holds this Dial (to cancel it): dropping ``done`` and the socket here breaks
        # that reference cycle, so a finished probe is freed at once instead of by the cyclic GC (which,
        # 10,000 probes at a time, ran 6x as often and cost more than the coroutines it replaced).
        done, self._done, self._sock = self._done, _ignore, None
        done(self._result, sock)


# At most this many connects begin per event-loop iteration (see _ConnectPacer).
CONNECTS_PER_ITERATION = 8


# How long the _Watcher's epoll set stays open without a socket in it.
IDLE_SECONDS = 1.0


class _Watcher:
    """Connecting sockets wait for writability in one epoll set of our own, which the loop watches as one reader.

    ``loop.add_writer``/``remove_writer`` cost uvloop a libuv poll handle and a Handle per socket, about 6 µs a
    connect of the ~30 the bare loop needs (bench/native/connect_floor.py, ``uvloop-timer`` vs ``uvloop-epoll``,
    issue 25); here a socket costs one ``epoll_ctl`` and a dict entry. One stamp per dispatch round, read right
    after ``epoll_wait`` returned: a connect's time is not stretched by the callbacks run before its own.
    The set is closed a second after the last socket left it (an idle loop holds no descriptor of ours); closing it
    at once when none waits reopened it every few probes in a scrape, whose workers start the next probe an
    iteration after the last finished (1,250 times in 10,000 probes).
    """

    __slots__ = ("_epoll", "_waiting", "_epoch", "_idle")

    def __init__(self) -> None:
        self._epoll: select.epoll | None = None
        self._idle: asyncio.TimerHandle | None = None
        self._waiting: dict[int, Dial] = {}
        # Dispatch rounds: a socket registered during a round (its fd perhaps reused from one closed in the same
        # round) must not take an event that epoll reported for the old one.
        self._epoch = 0

    def watch(self, fd: int, dial: Dial) -> None:
        epoll = self._epoll
        if epoll is None:
            epoll = self._epoll = select.epoll()
            try:
                asyncio.get_running_loop().add_reader(epoll.fileno(), self._ready)
            except BaseException:
                self._close()
                raise
        try:
            epoll.register(fd, select.EPOLLOUT)
        except BaseException:
            if not self._waiting:
                self._close()
            raise
        self._waiting[fd] = dial
        dial._epoch = self._epoch

    def forget(self, fd: int, closing: bool) -> None:
        """``fd`` no longer watched. ``closing``: its socket closes next, which takes it out of the set by itself;
        otherwise it is handed on (connected) and leaves the set now."""
        self._waiting.pop(fd, None)
        if self._epoll is not None:
            if not closing:
                self._epoll.unregister(fd)
            if not self._waiting and self._idle is None:
                self._idle = asyncio.get_running_loop().call_later(IDLE_SECONDS, self._close_if_idle)

    def _close_if_idle(self) -> None:
        self._idle = None
        if not self._waiting:
            self._close()

    def _close(self) -> None:
        epoll, self._epoll = self._epoll, None
        if epoll is not None:
            asyncio.get_running_loop().remove_reader(epoll.fileno())
            epoll.close()

    def _ready(self) -> None:
        epoll = self._epoll
        if epoll is None:
            return
        events = epoll.poll(0)
        stamp = time.perf_counter_ns()
        self._epoch += 1
        epoch = self._epoch - 1
        waiting = self._waiting
        for fd, _ in events:
            dial = waiting.get(fd)
            if dial is not None and dial._epoch <= epoch:
                del waiting[fd]
                dial._on_writable(stamp)


class _ConnectPacer:
    """Spreads the start of connects over event-loop iterations.

    A connect's time is stamped in its writability callback, which runs only after the loop has
    finished the batch of ready callbacks it is working through. A scrape that starts hundreds of
    connects in one batch (each socket() + connect() costs tens of microseconds) would make every
    stamp in that batch late by up to the whole batch: milliseconds of invented latency. Letting a
    few connects start per iteration keeps each batch short, so the loop polls for outcomes often;
    throughput is unchanged because the same work runs, in more, shorter iterations.
    """

    __slots__ = ("_started", "_waiters", "_armed", "watcher")

    def __init__(self, loop: asyncio.AbstractEventLoop):
        # The loop is not kept: the registry below is keyed weakly by it, so a closed loop's pacer goes with it.
        self._started = 0
        self.watcher = _Watcher()
        # Each waiting connect's start: it returns False when that connect was cancelled meanwhile.
        self._waiters: deque[Callable[[], bool]] = deque()
        self._armed = False

    def turn(self, begin: Callable[[], bool]) -> bool:
        """True: start now (the caller calls ``begin``); False: ``begin`` is called in a later iteration (FIFO)."""
        if self._started < CONNECTS_PER_ITERATION and not self._waiters:
            self._started += 1
            self._arm()
            return True
        self._waiters.append(begin)
        self._arm()
        return False

    def _arm(self) -> None:
        if not self._armed:
            self._armed = True
            asyncio.get_running_loop().call_soon(self._next_iteration)

    def _next_iteration(self) -> None:
        self._armed = False
        self._started = 0
        waiters = self._waiters
        while waiters and self._started < CONNECTS_PER_ITERATION:
            if waiters.popleft()():
                self._started += 1
        if self._started:
            self._arm()


_pacers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _ConnectPacer] = weakref.WeakKeyDictionary()


# The last loop asked about and its pacer: a WeakKeyDictionary lookup (Python code) per connect was ~1 % of a
# scrape's CPU. The loop is referred to weakly here too.
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], _ConnectPacer] | None = None


def _pacer(loop: asyncio.AbstractEventLoop) -> _ConnectPacer:
    global _last
    if _last is not None and _last[0]() is loop:
        return _last[1]
    pacer = _pacers.get(loop)
    if pacer is None:
        pacer = _pacers[loop] = _ConnectPacer(loop)
    _last = (weakref.ref(loop), pacer)
    return pacer
