"""From the evidence of a trace to one verdict of the fixed set, with its words.

Pure: the same hops always give the same decision. Classification uses reply kinds (ICMP type and
code, TCP SYN-ACK or reset) and the addresses that answered, never message text. Where the
evidence leaves several verdicts open the decision is ``unknown`` and says which remain.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, TypedDict

from exporter.pathdiag.icmp import same_address
from exporter.pathdiag.model import ICMP_REJECTIONS, TERMINAL_TCP, Answer, Decision, HopEvidence, Reply, Verdict

# For an unknown verdict: what each remaining possibility would mean, in words.
POSSIBILITIES = {
    Verdict.REACHED: "the host itself refused the connection with a TCP reset",
    Verdict.NETWORK_REJECTED: "a network device forged the TCP reset before the host",
    Verdict.DROPPED_IN_NETWORK: "a network firewall drops the SYN before the host's last hop",
    Verdict.DROPPED_AT_LAST_HOP: "the host's own firewall or its last router drops the SYN",
    Verdict.HOST_DOWN: "the host is down",
    Verdict.NO_ROUTE: "a router has no route to the host",
    Verdict.HOST_REJECTED: "the host's firewall rejects the connection",
}


class _Witness(NamedTuple):
    """A hop whose TCP probe drew silence while its UDP probe drew an answer."""

    ttl: int
    udp: Answer


class _Distances(TypedDict):
    """The two distances every decision carries (``Decision`` fields of the same names)."""

    hops_to_host: int | None
    last_responding_hop: int | None


def _hops(count: int) -> str:
    return f"{count} hop" if count == 1 else f"{count} hops"


def _hop_name(address: str | None, ttl: int | None) -> str:
    if address is None:
        return f"hop {ttl}" if ttl else "an unknown device"
    return f"{address} (hop {ttl})" if ttl else address


def decide(
    target: str, port: int, hops: Sequence[HopEvidence], *, host_echo: bool | None = None, cut_short: str | None = None
) -> Decision:
    """The verdict for ``target``:``port`` from its hops (any order); ``host_echo`` the outcome of an
    ICMP echo (None: not tried); ``cut_short`` why the trace stopped early, if it did."""
    hops = sorted(hops, key=lambda hop: hop.ttl)
    # Where each router answered "time exceeded" (either protocol): its position on the path.
    router_at: dict[int, str] = {}
    for hop in hops:
        for answer in (hop.tcp, hop.udp):
            if answer is not None and answer.reply is Reply.TIME_EXCEEDED and answer.address:
                router_at.setdefault(hop.ttl, answer.address)
    first_ttl_of: dict[str, int] = {}
    for ttl, address in sorted(router_at.items()):
        first_ttl_of.setdefault(address, ttl)

    def from_host(answer: Answer | None) -> bool:
        # A reset is no proof: a middlebox forging one writes the target's address into it.
        return (
            answer is not None
            and answer.answered
            and answer.address is not None
            and answer.reply not in (Reply.TIME_EXCEEDED, Reply.RESET)
            and same_address(answer.address, target)
        )

    # The host's distance: the smallest TTL at which the host itself answered anything.
    hops_to_host = next((hop.ttl for hop in hops if from_host(hop.tcp) or from_host(hop.udp)), None)
    host_up = hops_to_host is not None or bool(host_echo)
    tcp_answered = [hop.ttl for hop in hops if hop.tcp is not None and hop.tcp.answered]
    last_responding = max(tcp_answered) if tcp_answered else None
    common = _Distances(hops_to_host=hops_to_host, last_responding_hop=last_responding)
    shown = f"[{target}]:{port}" if ":" in target else f"{target}:{port}"

    terminal = next(((hop.ttl, hop.tcp) for hop in hops if hop.tcp is not None and hop.tcp.reply in TERMINAL_TCP), None)
    if terminal is not None:
        ttl, answer = terminal
        if answer.reply is Reply.SYN_ACK:
            distance = hops_to_host or ttl
            return Decision(
                Verdict.REACHED,
                f"the host {target} itself answered: port {port} accepted the "
                f"connection, {distance} hop{'s' if distance != 1 else ''} away; the path is clear",
                hops_to_host=distance,
                last_responding_hop=last_responding,
            )
        if answer.reply in ICMP_REJECTIONS:
            sender = answer.address
            if sender is None:
                what = "has no route" if answer.reply is Reply.NO_ROUTE else "cannot reach its next hop"
                return Decision(Verdict.NO_ROUTE, f"this machine {what} towards {target}: nothing left it", **common)
            description = answer.icmp.description if answer.icmp else str(answer.reply)
            if same_address(sender, target):
                return Decision(
                    Verdict.HOST_REJECTED,
                    f"{description} by {target} itself — the host's own firewall rejects port {port}, not the network",
                    blocked_by=target,
                    blocked_at_hop=hops_to_host or ttl,
                    hops_to_host=hops_to_host or ttl,
                    last_responding_hop=last_responding,
                )
            position = first_ttl_of.get(sender)
            at_hop = position if position is not None else ttl
            where = _hop_name(sender, at_hop)
            if answer.reply is Reply.NO_ROUTE or (
                answer.reply is Reply.HOST_UNREACHABLE and (position is None or position >= ttl)
            ):
                # It answered at the TTL where it was itself the hop: it refused before forwarding.
                return Decision(
                    Verdict.NO_ROUTE,
                    f"{description} from {where}: that router has no route to {target} and did not forward the packet",
                    blocked_by=sender,
                    blocked_at_hop=at_hop,
                    **common,
                )
            if answer.reply is Reply.HOST_UNREACHABLE:
                return Decision(
                    Verdict.HOST_DOWN,
                    f"{description} from {where}, the last router before {target}: "
                    "it forwarded the packet but could not deliver it — the host is down or gone from "
                    "its network",
                    blocked_by=sender,
                    blocked_at_hop=at_hop,
                    **common,
                )
            return Decision(
                Verdict.NETWORK_REJECTED,
                f"{description} by {where} — a network firewall, not the host, rejects the connection to {shown}",
                blocked_by=sender,
                blocked_at_hop=at_hop,
                **common,
            )
        # A TCP reset: the host's own, or forged by a middlebox on the way?
        if hops_to_host is None:
            return _unknown(
                f"a TCP reset came back at hop {ttl}, but the host's distance is not known "
                "(it did not answer the UDP probe), so its origin cannot be told",
                (Verdict.REACHED, Verdict.NETWORK_REJECTED),
                host_up,
                common,
                cut_short,
            )
        if ttl >= hops_to_host:
            return Decision(
                Verdict.REACHED,
                f"the host {target} itself answered with a TCP reset from its own hop "
                f"({_hops(hops_to_host)} away): it is up and reachable, but nothing listens on port {port} or "
                "its own firewall rejects with a reset",
                blocked_by=target,
                blocked_at_hop=hops_to_host,
                **common,
            )
        before = ttl - 1
        forger = router_at.get(before)
        return Decision(
            Verdict.NETWORK_REJECTED,
            f"a TCP reset came back at hop {ttl}, but {target} is "
            f"{hops_to_host} hops away: a device at or just after {_hop_name(forger, before)} forges "
            f"resets for port {port} — a network firewall, not the host",
            blocked_by=forger,
            blocked_at_hop=before if before else None,
            **common,
        )

    # No decisive TCP answer: the SYN died somewhere. Where did it last draw an answer?
    last = max((hop.ttl for hop in hops if hop.tcp is not None and hop.tcp.reply is Reply.TIME_EXCEEDED), default=0)
    beyond = [hop for hop in hops if hop.ttl > last]
    # A router beyond that point that could not deliver even the UDP probe speaks for the host.
    for hop in beyond:
        udp = hop.udp
        if udp is None or not udp.answered or udp.address is None or same_address(udp.address, target):
            continue
        position = first_ttl_of.get(udp.address)
        description = udp.icmp.description if udp.icmp else str(udp.reply)
        where = _hop_name(udp.address, position if position is not None else hop.ttl)
        if udp.reply is Reply.HOST_UNREACHABLE and position is not None and position < hop.ttl:
            return Decision(
                Verdict.HOST_DOWN,
                f"{description} from {where}, the last router before {target}: "
                "it forwarded the probe but could not deliver it — the host is down or gone from its "
                "network",
                blocked_by=udp.address,
                blocked_at_hop=position,
                **common,
            )
        if udp.reply in (Reply.NO_ROUTE, Reply.HOST_UNREACHABLE):
            return Decision(
                Verdict.NO_ROUTE,
                f"{description} from {where}: that router has no route to {target}",
                blocked_by=udp.address,
                blocked_at_hop=position or hop.ttl,
                **common,
            )
    tried = [(hop.ttl, hop.tcp, hop.udp) for hop in beyond if hop.tcp is not None]
    if not tried:
        return _unknown(
            "the trace ended before the SYN's fate was seen", _failures(host_up), host_up, common, cut_short
        )
    after = router_at.get(last) if last else None
    # The first hop past the last TCP answer that answered *us* (UDP) while the SYN drew silence:
    # the SYN never got there.
    witness = next(
        (
            _Witness(ttl, udp)
            for ttl, tcp, udp in tried
            if tcp.reply is Reply.SILENCE and udp is not None and udp.answered
        ),
        None,
    )
    if witness is not None and from_host(witness.udp):
        if witness.ttl == last + 1:
            if last == 0:
                return Decision(
                    Verdict.DROPPED_AT_LAST_HOP,
                    f"{target} is up (it answered a UDP probe, on this "
                    f"machine's own network) but the SYN to port {port} got no answer: the host's own "
                    "firewall drops it",
                    blocked_by=target,
                    blocked_at_hop=witness.ttl,
                    **common,
                )
            return Decision(
                Verdict.DROPPED_AT_LAST_HOP,
                f"dropped after {_hop_name(after, last)}, at the host's own "
                f"hop: {target} is up ({witness.ttl} hops away, it answered a UDP probe) but the SYN to "
                f"port {port} got no answer there — the host's own firewall, or its last router "
                f"{after}, drops it",
                blocked_by=after,
                blocked_at_hop=last,
                **common,
            )
        return _unknown(
            f"routers answered the SYN up to hop {last}; the host is up, {witness.ttl} hops away, but "
            f"the hops between answered nothing, so where the SYN dies cannot be told",
            (Verdict.DROPPED_IN_NETWORK, Verdict.DROPPED_AT_LAST_HOP),
            host_up,
            common,
            cut_short,
        )
    if witness is not None:  # a router past the last TCP answer answered the UDP probe: the host is farther
        farther = f"{hops_to_host} hops away" if hops_to_host else f"farther than hop {witness.ttl}"
        if last == 0:
            return Decision(
                Verdict.DROPPED_IN_NETWORK,
                f"dropped before the first router answered: the SYN to port "
                f"{port} draws no answer at any hop while {witness.udp.address} (hop {witness.ttl}) "
                f"answers other probes, and the host is {farther} — a firewall on this machine's own "
                "network or at the first router drops it",
                blocked_at_hop=None,
                **common,
            )
        return Decision(
            Verdict.DROPPED_IN_NETWORK,
            f"dropped after {_hop_name(after, last)}: routers answer the SYN "
            f"to port {port} up to hop {last}, it dies after that router, and the host is {farther} — "
            "a network firewall at that router or the next drops it",
            blocked_by=after,
            blocked_at_hop=last,
            **common,
        )
    reason = (
        f"the SYN got answers up to hop {last}, then silence, and nothing beyond answered the UDP probe either"
        if last
        else "nothing on the path answered the SYN or the UDP probe"
    )
    return _unknown(reason, _failures(host_up), host_up, common, cut_short)


def _failures(host_up: bool) -> tuple[Verdict, ...]:
    drops = (Verdict.DROPPED_IN_NETWORK, Verdict.DROPPED_AT_LAST_HOP)
    return drops if host_up else (*drops, Verdict.HOST_DOWN)


def _unknown(
    reason: str, remaining: tuple[Verdict, ...], host_up: bool, common: _Distances, cut_short: str | None
) -> Decision:
    if cut_short:
        reason = f"{reason} ({cut_short})"
    if host_up and Verdict.HOST_DOWN in remaining:
        remaining = tuple(verdict for verdict in remaining if verdict is not Verdict.HOST_DOWN)
    options = "; or ".join(POSSIBILITIES[verdict] for verdict in remaining)
    return Decision(
        Verdict.UNKNOWN,
        f"not enough answers to decide: {reason}. Still possible: {options}",
        remaining=remaining,
        **common,
    )
