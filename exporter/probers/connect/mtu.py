"""``tcp.mtu_check``: do full-size packets get through, in both directions? (docs/mtu.md)

A path-MTU black hole lets the handshake and small replies through and silently drops full-size
packets, so a session connects and then hangs. Two tests, on the probe's own connection:

- to the target: one UDP datagram of the path MTU's size with DF to the target (its ICMP answer names
  the router that says "fragmentation needed", which TCP never reveals), then harmless data larger than
  one segment, sent by the prober in its protocol (SMTP: a padded NOOP); we watch ``TCP_INFO``. Acked
  without the path MTU changing: ``ok``; acked after the kernel lowered the path MTU: ``reduced``
  (path-MTU discovery works); never acked after retransmissions with no ICMP while a new small
  connection still opens: ``blackhole_to_target``.
- from the target: its large segments (the TLS certificate flight) arrive (``rcv_mss`` grows past
  536), or the exchange stalls; then a second connection advertising a small MSS (``TCP_MAXSEG``
  before ``connect()``) repeats it: success there means ``blackhole_from_target``.

What the kernel learnt earlier hides a hole: a path MTU learnt from an ICMP (kept ~10 min) makes our
segments small from the start; the result then says ``reduced`` from what was learnt.
"""

from __future__ import annotations

import asyncio
import fcntl
import socket
import sys
import termios
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from exporter.core.deadline import Deadline
from exporter.probers.connect import mtu_socket as ms

TO_TARGET, FROM_TARGET = "to_target", "from_target"
DIRECTION_WORDS = {TO_TARGET: "toward the target", FROM_TARGET: "from the target"}
# The segment stays unacknowledged through this many retransmission timeouts (about 0.2 + 0.4 + 0.8 s
# with Linux's minimum RTO; the kernel's timers, not ours, so a loaded machine does not shorten it).
BLACKHOLE_RETRANSMITS = 3
POLL = 0.02  # TCP_INFO has no event for "acknowledged": polled while the test runs
SMALL_MSS = {socket.AF_INET: 536, socket.AF_INET6: 1220}  # RFC 879 / RFC 8200's minimum MTU - 60
# The largest segment tested: a 9000-byte jumbo frame's (the payload is one segment and a bit more).
MAX_TESTED_MSS = 8948
# After the small-MSS retry succeeded, the full-MSS control retry gets at least this long to succeed too.
CONTROL_GRACE = 1.0
# How long the UDP datagram's answer is awaited at least (silence: UDP filtered, or a black hole).
REPORTER_WAIT = 0.2
# How long a learnt path MTU's reporter is remembered: the kernel keeps the exception ~10 minutes.
LEARNT_TTL = 600.0


class MtuState(StrEnum):
    OK = "ok"
    REDUCED = "reduced"
    BLACKHOLE_TO_TARGET = "blackhole_to_target"
    BLACKHOLE_FROM_TARGET = "blackhole_from_target"
    UNKNOWN = "unknown"


class Finding(StrEnum):
    """One direction's outcome."""

    PASSED = "passed"  # full-size segments got through
    REDUCED = "reduced"  # smaller path MTU, learnt the proper way (ICMP)
    BLACKHOLE = "blackhole"
    UNKNOWN = "unknown"


@dataclass(slots=True)
class MtuReport:
    """``ProbeResult.mtu``: what the check found (check --json's ``"mtu"`` object)."""

    state: MtuState = MtuState.UNKNOWN
    path_mtu: int | None = None
    reported_by: str | None = None
    tested: list[str] = field(default_factory=list)
    detail: str = ""
    # For ``unknown``: the causes the evidence leaves open.
    possible: list[str] = field(default_factory=list)
    to_target: Finding | None = None
    from_target: Finding | None = None
    largest_sent: int | None = None  # payload bytes of the largest segment tested towards the target
    largest_received: int | None = None  # payload bytes of the largest segment the target's data arrived in
    learnt_before: bool = False  # the kernel already held a smaller path MTU when the check began
    seconds: float = 0.0  # time spent in the tests
    extra_packets: int = 0  # packets the check sent beyond the prober's own dialogue


# address -> (path MTU, reporter, monotonic time): who reported the path MTU the kernel still holds.
_learnt: dict[str, tuple[int, str | None, float]] = {}


def remember(address: str, mtu: int, reporter: str | None) -> None:
    now = time.monotonic()
    for key in [key for key, (_m, _r, at) in _learnt.items() if now - at > LEARNT_TTL]:
        del _learnt[key]
    if len(_learnt) < 10_000:  # bounded: one entry per probed address
        _learnt[address] = (mtu, reporter, now)


def recalled(address: str, mtu: int) -> str | None:
    entry = _learnt.get(address)
    if entry is None or entry[0] != mtu or time.monotonic() - entry[2] > LEARNT_TTL:
        return None
    return entry[1]


SendFn = Callable[[int], Awaitable[None]]
# (a connected socket advertising a small MSS, deadline) -> whether the exchange completed.
ExchangeFn = Callable[[socket.socket, Deadline], Awaitable[bool]]


class MtuCheck:
    """The check's state on one probe connection; the prober calls it at the right moments."""

    def __init__(self, sock: socket.socket, address: str, port: int, deadline: Deadline):
        self.sock, self.address, self.port = sock, address, port
        self.deadline = Deadline(deadline)  # callers may still pass a plain loop time
        self.report = MtuReport()
        self._started = time.perf_counter()
        ms.set_dont_fragment(sock)
        try:
            local: str | None = sock.getsockname()[0]
            # Kept: the prober may close the socket before the small-MSS retry.
            self.peer: tuple[object, ...] | None = sock.getpeername()
        except OSError:  # reset right after the connect: nothing will be tested, nothing raises
            local, self.peer = None, None
        self._last_info: ms.TcpInfo | None = None
        self._received_before: int | None = None
        self.device_mtu = ms.device_mtu(local, sock.family) if local is not None else None
        self._to_reporter: ms.DatagramAnswer | None = None
        self.sent = 0
        self._peer_mss_limit: int | None = None
        self._worked_around: int | None = None  # the segment size this host's MTU probing fell back to

    # --- from the target ------------------------------------------------------------------

    def stall_deadline(self) -> Deadline:
        """How long to wait for the target's large data on the probe's own connection: half of what is
        left, so that the small-MSS retry has the other half."""
        return self.deadline.share(2)

    def expect_from_target(self) -> None:
        """The exchange that carries the target's large data (the TLS handshake) starts now."""
        info = ms.tcp_info(self.sock)
        self._received_before = info.bytes_received if info is not None else None

    def from_target_arrived(self) -> None:
        """That exchange completed on the probe's connection: did the target's data come in full-size segments?"""
        info = ms.tcp_info(self.sock)
        if info is None:
            return
        received = info.bytes_received - self._received_before if self._received_before is not None else 0
        if info.rcv_mss >= info.advmss:
            finding = Finding.PASSED  # a segment as large as we allow arrived
        elif received > info.advmss and info.rcv_mss > ms.TCP_MSS_DEFAULT:
            # More than a full segment's worth came, none of it full-size: the target's side sends smaller ones.
            finding = Finding.REDUCED
        else:
            return  # the target sent less than one full segment: this direction was not tested
        self.report.tested.append(FROM_TARGET)
        self.report.largest_received = info.rcv_mss
        self.report.from_target = finding

    def before_close(self) -> None:
        """The prober is about to close the connection: keep what the kernel knows about it."""
        if self.sock.fileno() >= 0:
            self._last_info = ms.tcp_info(self.sock)

    async def from_target_stalled(self, exchange: ExchangeFn) -> bool:
        """The exchange stalled: repeat it on a new connection that advertises a small MSS. True when that
        succeeded while the first, and a control retry with our full MSS, did not: the target's full-size segments
        are dropped on the way."""
        info = ms.tcp_info(self.sock) if self.sock.fileno() >= 0 else self._last_info
        self.report.largest_received = info.rcv_mss if info else None
        if info is not None and info.rcv_mss >= info.advmss:
            # Full-size data did arrive: whatever stalled, it was not the size of the target's packets.
            self.report.tested.append(FROM_TARGET)
            self.report.from_target = Finding.PASSED
            return False
        self.report.tested.append(FROM_TARGET)
        small, control = await asyncio.gather(self._small_connection(), self._small_connection(small=False))
        if small is None:
            if control is not None:
                control.close()
            self.report.from_target = Finding.UNKNOWN
            self.report.possible += ["the target stopped answering new connections too (not only large packets)"]
            return False
        small_done, control_done = await self._race(exchange, small, control)
        if small_done and control is not None and not control_done:
            self.report.from_target = Finding.BLACKHOLE
            return True
        self.report.from_target = Finding.UNKNOWN
        if small_done:
            self.report.possible += [
                "the server stalled once and answered a retry whatever the packet size (a slow or tarpitting server)"
            ]
        else:
            self.report.possible += [
                "the server is slow or stalls this exchange whatever the packet size",
                "large packets from the target are dropped and the small-segment retry ran out of time",
            ]
        return False

    async def _race(
        self, exchange: ExchangeFn, small: socket.socket, control: socket.socket | None
    ) -> tuple[bool, bool]:
        """The exchange on the small-MSS connection and, as a control, on one with our full MSS, at once.
        Once the small one is done the control gets as long again (at least CONTROL_GRACE) before it counts
        as stalled: a server that merely stalled the first time answers both."""
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def attempt(sock: socket.socket) -> bool:
            try:
                return await exchange(sock, self.deadline)
            except (OSError, EOFError, TimeoutError):
                return False
            finally:
                sock.close()

        small_task = asyncio.ensure_future(attempt(small))
        control_task = asyncio.ensure_future(attempt(control)) if control is not None else None
        try:
            small_done = await small_task
            if control_task is None:
                return small_done, False
            if not small_done:
                control_task.cancel()
                return False, False
            grace = max(CONTROL_GRACE, loop.time() - started)
            try:
                async with asyncio.timeout_at(min(self.deadline, loop.time() + grace)):
                    return True, await control_task
            except TimeoutError:
                return True, False
        finally:
            for task in (small_task, control_task):
                if task is not None and not task.done():
                    task.cancel()

    async def _small_connection(self, small: bool = True) -> socket.socket | None:
        """A new connection to the target advertising a small MSS (``small``), or our usual one (a control)."""
        family = self.sock.family
        if self.peer is None:
            return None
        try:
            sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        except OSError:  # EMFILE and the like: no retry possible
            return None
        try:
            if small:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, SMALL_MSS.get(family, 536))
            ms.set_dont_fragment(sock)
            loop = asyncio.get_running_loop()
            async with asyncio.timeout_at(self.deadline):
                await loop.sock_connect(sock, self.peer)
            self.report.extra_packets += 3
            return sock
        except (OSError, TimeoutError):
            sock.close()
            return None

    # --- to the target --------------------------------------------------------------------

    def payload_size(self) -> int:
        """Bytes the prober should send: more than one full segment, so at least one goes out full-size."""
        info = ms.tcp_info(self.sock)
        mss = info.snd_mss if info is not None else 1460
        # Loopback's 64 KiB segments cannot meet a black hole; a jumbo frame is the largest worth a test, and it
        # keeps an SMTP line within what servers read whole (Postfix skips past its 2048-byte line limit).
        return min(mss, MAX_TESTED_MSS) + 100

    async def to_target(self, send: SendFn) -> Finding:
        """Send ``payload_size()`` bytes through ``send`` and watch them; the finding is also recorded."""
        report = self.report
        report.tested.append(TO_TARGET)
        before = ms.tcp_info(self.sock)
        if before is None:
            report.to_target = Finding.UNKNOWN
            report.possible.append("this kernel gives no TCP_INFO for the connection")
            return Finding.UNKNOWN
        mtu_before = ms.path_mtu(self.sock) or before.pmtu
        # IP_MTU never reads above 65535 (loopback's device MTU is 65536).
        if self.device_mtu is not None and mtu_before < min(self.device_mtu, 65535):
            report.learnt_before = True
        reporter = ms.open_reporter(self.sock.family, self.address, mtu_before)
        if reporter is not None:
            report.extra_packets += 1
        try:
            if reporter is not None:
                # Its answer first: a router's ICMP for it names the router and lowers the path MTU before the
                # TCP data leaves (which then goes out at the announced size, no retransmission needed).
                await self._await_reporter(reporter, before)
                before = ms.tcp_info(self.sock) or before
            self.sent = self.payload_size()
            await send(self.sent)
            finding = await self._watch(before, mtu_before, reporter)
        finally:
            if reporter is not None:
                self._read_reporter(reporter)
                reporter.close()
        report.to_target = finding
        return finding

    async def _await_reporter(self, reporter: socket.socket, info: ms.TcpInfo) -> None:
        """Until the datagram's ICMP answer is queued, or a few round trips (at least REPORTER_WAIT) passed."""
        loop = asyncio.get_running_loop()
        until = min(self.deadline, loop.time() + max(REPORTER_WAIT, 4 * info.rtt_us / 1e6))
        for _ in range(int(60 / POLL)):  # bounded; ``until`` ends it long before
            self._read_reporter(reporter)
            if self._to_reporter is not None or loop.time() + POLL > until:
                return
            await asyncio.sleep(POLL)

    def _read_reporter(self, reporter: socket.socket) -> None:
        if self._to_reporter is None:
            self._to_reporter = ms.reporter_answer(reporter, self.address)

    async def _watch(self, before: ms.TcpInfo, mtu_before: int, reporter: socket.socket | None) -> Finding:
        report = self.report
        loop = asyncio.get_running_loop()
        sent_mss = before.snd_mss
        for _ in range(int(3600 / POLL)):  # bounded; the deadline ends it long before
            if reporter is not None:
                self._read_reporter(reporter)
            info = ms.tcp_info(self.sock)
            if info is None:
                break
            if self._outstanding() == 0:
                report.extra_packets += self._segments(before, info)
                return self._acked(info, sent_mss, mtu_before)
            if info.retransmits >= BLACKHOLE_RETRANSMITS and info.pmtu >= mtu_before:
                report.extra_packets += self._segments(before, info)
                return await self._silent(sent_mss)
            if loop.time() + POLL >= self.deadline:
                break
            await asyncio.sleep(POLL)
        report.possible += [
            "the deadline came before the full-size data was acknowledged or had been retransmitted "
            f"{BLACKHOLE_RETRANSMITS} times: a black hole towards the target, or a slow path or server"
        ]
        return Finding.UNKNOWN

    def _segments(self, before: ms.TcpInfo, now: ms.TcpInfo) -> int:
        """Segments the test data took, retransmissions included (TCP_INFO's count where the kernel has it)."""
        if now.segs_out > before.segs_out:
            return now.segs_out - before.segs_out
        return -(-self.sent // max(1, now.snd_mss)) + now.total_retrans - before.total_retrans

    def _outstanding(self) -> int | None:
        """Bytes written to the socket and not yet acknowledged (SIOCOUTQ), None if unreadable."""
        try:
            raw = fcntl.ioctl(self.sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
        except OSError:
            return None
        return int.from_bytes(raw, sys.byteorder)

    def _acked(self, info: ms.TcpInfo, sent_mss: int, mtu_before: int) -> Finding:
        report = self.report
        mtu_now = ms.path_mtu(self.sock) or info.pmtu
        answer = self._to_reporter
        if mtu_now < mtu_before or (answer is not None and answer.frag_needed_by):
            report.path_mtu = mtu_now
            report.reported_by = answer.frag_needed_by if answer is not None else None
            remember(self.address, mtu_now, report.reported_by)
            report.largest_sent = info.snd_mss
            return Finding.REDUCED
        before_mss, sent_mss = sent_mss, min(sent_mss, MAX_TESTED_MSS)
        if info.snd_mss < sent_mss and not report.learnt_before:
            # Acknowledged only after this host shrank its segments by itself, with no ICMP and the path MTU
            # unchanged: the kernel's packetization-layer probing (tcp_mtu_probing, RFC 4821) found a hole.
            report.largest_sent = sent_mss
            self._worked_around = info.snd_mss
            return Finding.BLACKHOLE
        report.largest_sent = sent_mss
        if report.learnt_before:
            report.path_mtu = mtu_now
            report.reported_by = recalled(self.address, mtu_now)
            return Finding.REDUCED
        report.path_mtu = min(mtu_now, sent_mss + ms.header_bytes(self.sock, info))
        if before_mss < min(mtu_now - ms.header_bytes(self.sock, info), MAX_TESTED_MSS):
            # Segments smaller than the path allows (the target's MSS, or half its window): nothing larger is
            # ever sent on such a connection, so nothing larger was tested.
            self._peer_mss_limit = sent_mss
        return Finding.PASSED

    async def _silent(self, sent_mss: int) -> Finding:
        """Retransmitted again and again, no ICMP: a black hole if small packets still get through."""
        report = self.report
        report.largest_sent = sent_mss
        small = await self._small_connection()
        if small is None:
            report.possible += [
                "the target stopped answering altogether (new connections fail too), not only large packets"
            ]
            return Finding.UNKNOWN
        small.close()
        return Finding.BLACKHOLE

    # --- the verdict ----------------------------------------------------------------------

    def finish(self) -> MtuReport:
        report = self.report
        report.seconds = time.perf_counter() - self._started
        to, back = report.to_target, report.from_target
        if to is Finding.BLACKHOLE:
            report.state = MtuState.BLACKHOLE_TO_TARGET
            report.detail = (
                "large packets toward the target are dropped — a path-MTU black hole: a full-size segment "
                f"({report.largest_sent} bytes of data) was never acknowledged and no ICMP came back, "
                "while a new connection with small packets still opens"
            )
            if self._worked_around is not None:
                report.detail = (
                    "large packets toward the target are dropped — a path-MTU black hole: a full-size segment "
                    f"({report.largest_sent} bytes of data) drew no ICMP and was acknowledged only after this host's "
                    f"own MTU probing (tcp_mtu_probing) fell back to {self._worked_around} bytes; hosts without it hang"
                )
        elif back is Finding.BLACKHOLE:
            report.state = MtuState.BLACKHOLE_FROM_TARGET
            report.detail = (
                "large packets from the target are dropped — a path-MTU black hole: its full-size segments "
                "never arrived, while the same exchange with a small MSS advertised "
                f"({SMALL_MSS.get(self.sock.family, 536)} bytes) succeeded and a control with the full MSS stalled again"
            )
        elif Finding.REDUCED in (to, back):
            report.state = MtuState.REDUCED
            report.detail = self._reduced_words()
        elif Finding.UNKNOWN in (to, back) or not report.tested:
            report.state = MtuState.UNKNOWN
            if not report.tested:
                report.possible.append("no direction could be tested")
            report.detail = "undecided: " + "; or ".join(report.possible or ["no evidence either way"])
        else:
            report.state = MtuState.OK
            report.detail = "full-size segments pass " + (
                "both ways" if len(set(report.tested)) == 2 else DIRECTION_WORDS[report.tested[0]]
            )
            if self._peer_mss_limit is not None:
                report.detail += (
                    f" (toward the target, segments of {self._peer_mss_limit} bytes of data: the connection allows "
                    "no larger ones, by the target's MSS or window)"
                )
        return report

    def _reduced_words(self) -> str:
        report = self.report
        if report.to_target is Finding.REDUCED:
            who = f" by {report.reported_by}" if report.reported_by else " (the router is not known)"
            if report.learnt_before:
                return (
                    f"the path MTU towards the target is {report.path_mtu} bytes, learnt before this probe"
                    f"{who}: path-MTU discovery worked then; a black hole appearing since would stay hidden "
                    "until the kernel forgets it (about 10 minutes)"
                )
            message = (
                "ICMPv6 'packet too big'" if self.sock.family == socket.AF_INET6 else "ICMP 'fragmentation needed'"
            )
            return (
                f"the path MTU towards the target is {report.path_mtu} bytes, reported{who} with {message}: "
                "path-MTU discovery works"
            )
        return (
            f"the target's segments arrive at most {report.largest_received} bytes of data, smaller than this "
            "host accepts: the target's side uses a smaller path MTU (learnt or configured); they arrive"
        )


def explanation(report: MtuReport) -> str | None:
    """The words a stalled dialogue's verdict gains from the check (None: it says nothing about sizes)."""
    if report.state is MtuState.BLACKHOLE_TO_TARGET:
        return "large packets toward the server are dropped — a path-MTU black hole"
    if report.state is MtuState.BLACKHOLE_FROM_TARGET:
        return "large packets from the server are dropped — a path-MTU black hole"
    return None
