"""One path diagnosis: a paced TCP traceroute to the target's port, UDP probes of the same hops and
of the host, retries against ICMP rate limiting, all inside a packet and a time budget.

The walk is sequential, one TTL at a time, so each router is asked for at most a few ICMP errors
(Linux routers answer about one per second per peer after a burst of ~6). When the SYN draws
silence at a TTL, a UDP datagram with the same TTL asks whether that hop answers at all; if it
does, the SYN is tried again, paced after that answer (the router's token has refilled by then):
silence again means the SYN never got there. The verdict is then computed from all the answers
(late ones included) by ``verdict.decide``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from dataclasses import dataclass

from exporter.pathdiag.model import TERMINAL_TCP, Answer, HopEvidence, PathDiagnosis, Reply, Verdict
from exporter.pathdiag.probes import UdpProbe, echo_probe, tcp_probe
from exporter.pathdiag.verdict import decide


@dataclass(frozen=True, slots=True)
class DiagnosisSettings:
    max_hops: int = 30
    # Probe packets per diagnosis, SYN retransmissions included (counted from TCP_INFO; a probe's
    # socket normally closes before the kernel's first one, at 1 s).
    max_packets: int = 48
    max_seconds: float = 15.0
    tcp_wait: float = 0.9  # under the kernel's first SYN retransmission (1 s)
    udp_wait: float = 1.0  # before moving on; the answer is still taken until udp_linger
    udp_linger: float = 3.5  # a router's failed ARP/ND answers after ~3 s
    retries: int = 2  # extra tries at a TTL whose answer is in doubt
    pace: float = 1.1  # seconds between tries that ask the same router for an ICMP error
    silent_hops: int = 2  # consecutive hops silent to every probe before giving up


DEFAULT_SETTINGS = DiagnosisSettings()
# Seconds kept at the end of the time budget for an ICMP echo (where unprivileged ping is permitted).
ECHO_RESERVE = 1.0


class _Trace:
    def __init__(
        self, family: int, target: str, port: int, settings: DiagnosisSettings, deadline: float, source: str | None
    ):
        self.loop = asyncio.get_running_loop()
        self.family, self.target, self.port = family, target, port
        self.settings = settings
        self.deadline = deadline
        self.source = source
        self.hops: dict[int, HopEvidence] = {}
        self.packets = 0
        self.cut_short: str | None = None
        self.pending: list[tuple[int, UdpProbe]] = []
        self.last_answer_from: dict[str, float] = {}  # router address -> loop time of its last ICMP to us

    def hop(self, ttl: int) -> HopEvidence:
        hop = self.hops.get(ttl)
        if hop is None:
            hop = self.hops[ttl] = HopEvidence(ttl)
        return hop

    def _allowed(self, packets: int, wait: float) -> bool:
        if self.packets + packets > self.settings.max_packets:
            self.cut_short = f"stopped at the packet budget of {self.settings.max_packets}"
            return False
        if self.loop.time() + wait > self.deadline:
            self.cut_short = "stopped at the time budget"
            return False
        return True

    def _noted(self, answer: Answer) -> None:
        if answer.icmp is not None and answer.address:
            self.last_answer_from[answer.address] = self.loop.time()

    async def _paced(self, ttl: int) -> None:
        """Wait until the router at ``ttl`` (when known) last sent us an ICMP error ``pace`` ago."""
        hop = self.hops.get(ttl)
        addresses = [a.address for a in (hop.tcp, hop.udp) if hop and a is not None and a.address] if hop else []
        last = max((self.last_answer_from.get(address, 0.0) for address in addresses), default=0.0)
        pause = last + self.settings.pace - self.loop.time()
        if pause > 0:
            await asyncio.sleep(min(pause, max(0.0, self.deadline - self.loop.time())))

    async def tcp(self, ttl: int) -> Answer | None:
        settings = self.settings
        if not self._allowed(2, settings.tcp_wait):
            return None
        answer, sent = await tcp_probe(self.family, self.target, self.port, ttl, settings.tcp_wait, self.source)
        self.packets += sent
        self._noted(answer)
        self.hop(ttl).record("tcp", answer)
        return answer

    async def udp(self, ttl: int) -> Answer | None:
        if not self._allowed(1, self.settings.udp_wait):
            return None
        probe = UdpProbe(self.family, self.target, ttl, self.settings.udp_linger, self.source)
        self.packets += 1
        try:
            answer = await asyncio.wait_for(asyncio.shield(probe.answer), self.settings.udp_wait)
        except TimeoutError:
            answer = Answer(Reply.SILENCE)
            self.pending.append((ttl, probe))
        self._noted(answer)
        self.hop(ttl).record("udp", answer)
        return answer

    async def udp_tries(self, ttl: int, tries: int) -> Answer | None:
        answer = None
        for attempt in range(tries):
            if attempt:
                await asyncio.sleep(min(self.settings.pace * attempt, max(0.0, self.deadline - self.loop.time())))
            answer = await self.udp(ttl)
            if answer is None or answer.answered:
                return answer
        return answer

    async def tcp_retries(self, ttl: int) -> Answer | None:
        """Try the SYN again, each try paced after the router's last ICMP error to us."""
        answer = None
        for attempt in range(self.settings.retries):
            await self._paced(ttl)
            if attempt:
                await asyncio.sleep(min(self.settings.pace * attempt, max(0.0, self.deadline - self.loop.time())))
            answer = await self.tcp(ttl)
            if answer is None or answer.answered:
                return answer
        return answer

    async def run(self) -> None:
        settings = self.settings
        silent_run = 0
        ttl = 1
        terminal: Answer | None = None
        while ttl <= settings.max_hops:
            answer = await self.tcp(ttl)
            if answer is None:
                return
            if answer.reply is Reply.ERROR:
                self.cut_short = "a probe could not be sent from this machine"
                return
            if answer.reply is Reply.TIME_EXCEEDED:
                silent_run = 0
                ttl += 1
                continue
            if answer.reply in TERMINAL_TCP:
                terminal = answer
                break
            # Silence. Does this hop answer at all? (A paced second try gets past a drained ICMP bucket.)
            udp = await self.udp_tries(ttl, settings.retries)
            if udp is None:
                return
            if udp.answered:
                silent_run = 0
                answer = await self.tcp_retries(ttl)
                if answer is None:
                    return
                if answer.reply is Reply.TIME_EXCEEDED:
                    ttl += 1
                    continue
                if answer.reply in TERMINAL_TCP:
                    terminal = answer
                    break
                if udp.reply is Reply.TIME_EXCEEDED:
                    await self._find_host(ttl + 1)  # the SYN died before this router; how far is the host?
                return
            silent_run += 1
            if silent_run >= settings.silent_hops:
                return
            ttl += 1
        if terminal is not None and terminal.reply is Reply.RESET:
            # Was it the host's own reset? Only its distance tells: ask the same TTL with UDP.
            udp = await self.udp_tries(ttl, 1 + settings.retries)
            if udp is not None and udp.reply is Reply.TIME_EXCEEDED:
                await self._find_host(ttl + 1)

    async def _find_host(self, ttl: int) -> None:
        """UDP only, one try per TTL, until the host (or a router's unreachable) answers."""
        silent_run = 0
        while ttl <= self.settings.max_hops:
            answer = await self.udp(ttl)
            if answer is None:
                return
            if answer.reply is not Reply.TIME_EXCEEDED and answer.answered:
                return
            silent_run = silent_run + 1 if not answer.answered else 0
            if silent_run >= self.settings.silent_hops:
                return
            ttl += 1

    async def collect_late(self, reserve: float) -> None:
        """Take answers that arrive late (a router giving up on ARP), within the time budget less
        ``reserve`` seconds."""
        for ttl, probe in self.pending:
            remaining = self.deadline - reserve - self.loop.time()
            if remaining > 0 and not probe.answer.done():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(probe.answer), remaining)
            if probe.answer.done():
                answer = probe.answer.result()
                if answer.answered:
                    self.hop(ttl).late("udp", answer)
            probe.close()


async def diagnose(
    address: str,
    port: int,
    *,
    deadline: float | None = None,
    settings: DiagnosisSettings = DEFAULT_SETTINGS,
    source: str | None = None,
) -> PathDiagnosis:
    """Diagnose the path to ``address`` (an IP literal) port ``port``. ``deadline`` in loop time
    (capped at ``settings.max_seconds`` from now). Never raises for a network failure."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    end = started + settings.max_seconds
    if deadline is not None:
        end = min(end, deadline)
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    trace = _Trace(family, address, port, settings, end, source)
    try:
        await trace.run()
        decision = decide(address, port, list(trace.hops.values()), cut_short=trace.cut_short)
        if decision.verdict is Verdict.UNKNOWN and decision.hops_to_host is None and loop.time() + 1.0 < end:
            # The pending UDP answers may still settle it (e.g. a router's ARP failure, ~3 s).
            await trace.collect_late(reserve=ECHO_RESERVE)
            decision = decide(address, port, list(trace.hops.values()), cut_short=trace.cut_short)
        echo = None
        if (
            decision.verdict is Verdict.UNKNOWN
            and Verdict.HOST_DOWN in decision.remaining
            and trace.packets < settings.max_packets
            and loop.time() + 0.5 < end
        ):
            echo = await echo_probe(family, address, min(ECHO_RESERVE, end - loop.time()))
            if echo is not None:
                trace.packets += 1
                decision = decide(address, port, list(trace.hops.values()), host_echo=echo, cut_short=trace.cut_short)
    finally:
        for _ttl, probe in trace.pending:
            probe.close()
    notes = []
    if echo is not None:
        notes.append(f"ICMP echo: {'the host replied' if echo else 'no reply'}")
    hops_to_host = decision.hops_to_host
    return PathDiagnosis(
        target=address,
        port=port,
        decision=decision,
        hops=tuple(sorted(trace.hops.values(), key=lambda hop: hop.ttl)),
        host_up=True if hops_to_host is not None or echo else None,
        packets=trace.packets,
        seconds=loop.time() - started,
        finished_at=time.time(),
        notes=tuple(notes),
    )
