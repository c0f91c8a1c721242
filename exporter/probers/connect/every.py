"""``tcp.probe_addresses: all``: connect to every address of the name at once, under the probe's deadline.

Built on ``connect_target``: each address is one ``connect_target`` call with that address as an IP
literal, so each is timed, classified and ICMP-read exactly as a single connect is. The prober gets the
first socket that opens and runs its dialogue on it at once; the other connects keep running until their
own outcome (at the latest the probe's deadline), and the runner waits for them before the result is
published (``settle``). Probers do not know about any of this.
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.connect.addresses import experience, finish, happy_eyeballs_order
from exporter.probers.connect.resolve import Resolved, ResolveError, Resolver
from exporter.probers.connect.result import AddressesReport, AddressOutcome, ProbeResult, TcpState

if TYPE_CHECKING:
    from exporter.probers.connect.settings import TcpSettings

ConnectTarget = Callable[[ProbeResult, HostPort, "TcpSettings", Deadline, Resolver], Awaitable[socket.socket | None]]

log = logging.getLogger("exporter.addresses")

# True inside one address's connect: that connect_target call is the plain single-address step.
_PER_ADDRESS: ContextVar[bool] = ContextVar("per_address", default=False)
# Set by the runner around a probe of an ``all`` module: connects still running when the prober is done.
_PENDING: ContextVar[list[_Pending] | None] = ContextVar("pending_addresses", default=None)
# Names whose cut by probe_addresses_max was already logged (bounded: a warning per name, not per scrape).
_CUT_LOGGED: set[str] = set()
_CUT_LOGGED_MAX = 10_000
_NO_ROUTE_LOGGED: list[bool] = [False]
# The per-address connects end this much before the probe's deadline (at most a tenth of the time left): an
# address still silent then is a timeout, and the verdict over all of them (computed after the last connect,
# several event-loop turns later) is ready before the deadline instead of racing the handler's cut. The handler
# cuts 20 ms after the deadline, so a process that gets no CPU across the whole window between the connects' end
# and that cut loses the verdict (/probe answers with the deadline's timeout result, without the per-address
# series). At 100 ms one scheduling delay on a loaded 2-core machine was enough (the lab's dropping cases); 250 ms
# widens the window 2.5 times and costs a dropped address at most 0.15 s of waiting it would have reported as a
# timeout anyway.
CONNECT_RESERVE = 0.25


def _connects_deadline(deadline: Deadline) -> Deadline:
    return deadline.earlier(min(CONNECT_RESERVE, deadline.remaining() / 10))


Collecting = tuple[list["_Pending"], Token[list["_Pending"] | None]]


@dataclass(slots=True)
class _Pending:
    result: ProbeResult
    report: AddressesReport
    subs: list[ProbeResult]
    lead: int  # the address whose connect the result's own fields describe
    connects: asyncio.Future[list[None]]


def every_address(tcp: TcpSettings) -> bool:
    """Whether ``connect_target`` should connect to every address (and not just the one)."""
    return tcp.probe_addresses == "all" and not _PER_ADDRESS.get()


async def connect_every_address(
    result: ProbeResult,
    target: HostPort,
    tcp: TcpSettings,
    deadline: Deadline,
    resolver: Resolver,
    connect_target: ConnectTarget,
) -> socket.socket | None:
    """``connect_target`` for ``probe_addresses: all``: the same contract (fills ``result``, returns the
    connected socket or None), plus ``result.addresses``. ``connect_target`` (passed in by dial.py, which
    dispatches here) connects each address."""
    report = result.addresses = AddressesReport()
    started = time.perf_counter()
    if target.ip is None:
        result.note(f"Resolving {target.host}: every address, IPv4 and IPv6 (probe_addresses: all)...")
    try:
        async with asyncio.timeout_at(deadline):
            found = await resolver.resolve_every(target, tcp)
    except (ResolveError, TimeoutError) as exc:
        reason = exc.reason if isinstance(exc, ResolveError) else f"no answer from the resolver for {target.host}"
        result.dns_lookup_seconds = time.perf_counter() - started
        result.tcp_state = result.state = TcpState.DNS_ERROR
        result.note(reason)
        result.detail = f"the name could not be resolved to an address: {reason}"
        finish(report)
        return None
    if target.ip is None:
        result.dns_lookup_seconds = time.perf_counter() - started
    probed = _ordered(found)[: tcp.probe_addresses_max]
    report.resolved = len(found)
    if target.ip is None:
        result.note(
            f"Resolved {target.host} to {len(found)} address(es) in {result.dns_lookup_seconds * 1000:.1f} ms: "
            + ", ".join(r.ip for r in probed)
        )
    if len(found) > len(probed):
        _warn_cut(result.note, target.host, len(found), len(probed))
    outcomes = [AddressOutcome(r.ip, r.ip_protocol) for r in probed]
    report.outcomes = outcomes
    subs = [ProbeResult() for _ in probed]
    connects_deadline = _connects_deadline(deadline)
    loop = asyncio.get_running_loop()
    first: asyncio.Future[int] = loop.create_future()  # the index of the first address that connected
    sockets: list[socket.socket | None] = [None] * len(probed)

    async def one(index: int, resolved: Resolved) -> None:
        _PER_ADDRESS.set(True)  # this task's own context: its connect_target is the single-address step
        literal = HostPort(resolved.ip, target.port, ipaddress.ip_address(resolved.ip))
        sock = await connect_target(subs[index], literal, tcp, connects_deadline, resolver)
        _record(outcomes[index], subs[index])
        if sock is None:
            return
        if first.done():
            sock.close()  # another address already carries the session
        else:
            sockets[index] = sock
            first.set_result(index)

    connects = asyncio.gather(*(one(index, resolved) for index, resolved in enumerate(probed)))
    try:
        waited: list[asyncio.Future[Any]] = [first, connects]  # two result types: no common Future[T]
        await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        connects.cancel()
        _close_chosen(first, sockets)
        raise
    chosen = first.result() if first.done() else None
    sock = sockets[chosen] if chosen is not None else None
    # The session's fields are those of the address it runs on, or of the first address an RFC 8305
    # client would try when none connected.
    lead = chosen if chosen is not None else outcomes.index(happy_eyeballs_order(outcomes)[0])
    _adopt(result, subs[lead])
    pending = _Pending(result, report, subs, lead, connects)
    collector = _PENDING.get()
    if collector is not None and not connects.done():
        collector.append(pending)  # the runner settles it once the prober is done
    else:
        try:
            await connects
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        _conclude(pending)
    return sock


async def connect_each_beside(
    work: Awaitable[None],
    addresses: Sequence[str],
    port: int,
    tcp: TcpSettings,
    deadline: Deadline,
    resolver: Resolver,
    every: AddressesReport,
    connect_target: ConnectTarget,
    name: str = "",
) -> None:
    """dial.connect_beside: ``work`` connects to one address at a time; every address is connected at once.

    ``every`` gathers the addresses of several names (a mail domain's MX hosts): an address already in it is
    not connected again, and ``tcp.probe_addresses_max`` bounds all of them together (the series stay within
    the cap however many MX hosts there are); a cut is warned about as for a single name."""
    known = {outcome.address for outcome in every.outcomes}
    new = [address for address in dict.fromkeys(addresses) if address not in known]
    room = max(0, tcp.probe_addresses_max - len(every.outcomes))
    probed = new[:room]
    every.resolved += len(new)
    if len(new) > len(probed):
        # Shown by check's table and probe_addresses_not_probed (every.cut); the log says it once per name.
        shown = name or "addresses " + ", ".join(new[:3]) + (", ..." if len(new) > 3 else "")
        shown += " with the names probed before it" if known else ""
        _warn_cut(None, shown, len(every.outcomes) + len(new), tcp.probe_addresses_max)
    outcomes = [AddressOutcome(address, 6 if ":" in address else 4) for address in probed]
    every.outcomes += outcomes  # reserved now: a later name sees them as known
    connects_deadline = _connects_deadline(deadline)

    async def one(outcome: AddressOutcome) -> None:
        _PER_ADDRESS.set(True)
        sub = ProbeResult()
        literal = HostPort(outcome.address, port, ipaddress.ip_address(outcome.address))
        sock = await connect_target(sub, literal, tcp, connects_deadline, resolver)
        if sock is not None:
            sock.close()
        _record(outcome, sub)

    connects = asyncio.gather(*(one(outcome) for outcome in outcomes))
    token = _PER_ADDRESS.set(True)  # the work's own connects: one address each, as it asks
    try:
        await work
        await connects
    finally:
        _PER_ADDRESS.reset(token)
        connects.cancel()  # a no-op once done; a cancelled probe leaves nothing running


def _ordered(found: list[Resolved]) -> list[Resolved]:
    """The Happy Eyeballs order (IPv6 first, families interleaved), so a cap keeps both families."""
    by_ip = {r.ip: r for r in found}
    return [by_ip[o.address] for o in happy_eyeballs_order([AddressOutcome(r.ip, r.ip_protocol) for r in found])]


def _warn_cut(note: Callable[[str], None] | None, name: str, resolved: int, probed: int) -> None:
    words = (
        f"{name}: {resolved} addresses; probing the first {probed} (tcp.probe_addresses_max): "
        f"{resolved - probed} not probed"
    )
    if note is not None:
        note(f"Warning: {words}")
    if name not in _CUT_LOGGED and len(_CUT_LOGGED) < _CUT_LOGGED_MAX:
        _CUT_LOGGED.add(name)
        log.warning("%s", words)


def _record(outcome: AddressOutcome, sub: ProbeResult) -> None:
    outcome.state = sub.tcp_state
    outcome.connect_seconds = sub.connect_seconds
    outcome.detail = sub.detail
    if outcome.ip_protocol == 6 and sub.tcp_state is TcpState.UNREACHABLE and sub.icmp is None:
        outcome.no_local_route = _no_local_route(outcome.address)


def _no_local_route(address: str) -> bool:
    """Whether this host's routing table has no route to ``address`` (a UDP connect sends nothing)."""
    probe = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        probe.connect((address, 9))
    except OSError as exc:
        return exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH)
    finally:
        probe.close()
    return False


def _adopt(result: ProbeResult, sub: ProbeResult) -> None:
    result.tcp_state = result.state = sub.tcp_state
    result.connect_seconds = sub.connect_seconds
    result.address = sub.address
    result.ip_protocol = sub.ip_protocol
    result.detail = sub.detail
    result.icmp = sub.icmp
    result.transcript += sub.transcript


def _close_chosen(first: asyncio.Future[int], sockets: list[socket.socket | None]) -> None:
    if first.done() and not first.cancelled():
        chosen = sockets[first.result()]
        if chosen is not None:
            chosen.close()


def _conclude(pending: _Pending) -> None:
    """Every connect has its outcome: the verdict, and the other addresses' lines in the transcript."""
    report, result = finish(pending.report), pending.result
    for index, outcome in enumerate(report.outcomes):
        if index != pending.lead:
            shown = f"[{outcome.address}]" if outcome.ip_protocol == 6 else outcome.address
            took = "" if outcome.connect_seconds is None else f" in {outcome.connect_seconds * 1000:.2f} ms"
            result.note(f"Address {shown}: {outcome.state}{took}")
    if report.no_route_families and not _NO_ROUTE_LOGGED[0]:
        _NO_ROUTE_LOGGED[0] = True
        log.warning("this exporter cannot reach IPv6: no route (IPv6 addresses of names are not counted)")
    result.note(f"Every address: {report.state}")


def apply_verdict(result: ProbeResult) -> None:
    """After the prober: success needs every address to connect (the option exists to catch partial
    failures); a session that worked on one address gets the verdict about all of them."""
    report = result.addresses
    if report is None or report.all_connected:
        return
    if result.success or result.tcp_state is TcpState.OPEN:
        result.detail = experience(report)
    result.success = False


def start_collecting() -> Collecting:
    """Called by the runner before a probe of an ``all`` module: collect the connects it leaves running."""
    collector: list[_Pending] = []
    return collector, _PENDING.set(collector)


async def settle(collecting: Collecting) -> None:
    """Called by the runner after the prober returned: wait for the remaining connects (each ends by the
    probe's deadline) and conclude every report."""
    for pending in collecting[0]:
        await pending.connects
        _conclude(pending)


def stop_collecting(collecting: Collecting) -> None:
    """Called by the runner in ``finally``: cancel what a cancelled or failed probe left running."""
    collector, token = collecting
    for pending in collector:
        if not pending.connects.done():
            pending.connects.cancel()
    _PENDING.reset(token)
