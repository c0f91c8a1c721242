"""A diagnosis for people and programs: the hop table and verdict for ``check``, the ``path``
object of ``check --json``, and one-line words for the status page and reports."""

from __future__ import annotations

from exporter.pathdiag.model import Answer, PathDiagnosis, Reply, Verdict

REPLY_WORDS = {
    Reply.TIME_EXCEEDED: "time exceeded (a router on the way)",
    Reply.SYN_ACK: "SYN-ACK: connected",
    Reply.RESET: "TCP reset",
    Reply.PORT_UNREACHABLE: "port unreachable",
    Reply.PROHIBITED: "administratively prohibited",
    Reply.HOST_UNREACHABLE: "host unreachable",
    Reply.NO_ROUTE: "no route",
    Reply.UNREACHABLE: "unreachable",
    Reply.UDP_REPLY: "UDP reply",
    Reply.SILENCE: "no answer",
    Reply.ERROR: "could not send",
}

VERDICT_TITLES = {
    Verdict.REACHED: "reached the host",
    Verdict.HOST_REJECTED: "rejected by the host",
    Verdict.NETWORK_REJECTED: "rejected in the network",
    Verdict.DROPPED_IN_NETWORK: "dropped in the network",
    Verdict.DROPPED_AT_LAST_HOP: "dropped at the host's last hop",
    Verdict.HOST_DOWN: "host down",
    Verdict.NO_ROUTE: "no route",
    Verdict.UNKNOWN: "undecided",
}


def _ms(answer: Answer | None) -> float | None:
    return None if answer is None or answer.rtt is None or not answer.answered else round(answer.rtt * 1000, 3)


def _reply_text(answer: Answer | None) -> str:
    if answer is None:
        return "-"
    words = answer.icmp.description if answer.icmp is not None else REPLY_WORDS[answer.reply]
    if answer.reply is Reply.TIME_EXCEEDED:
        words = REPLY_WORDS[answer.reply]
    return words


def summary(diagnosis: PathDiagnosis) -> str:
    """One line: the verdict and its words (the status page, reports, transcripts)."""
    decision = diagnosis.decision
    return f"path: {decision.verdict} — {decision.words}"


def short(diagnosis: PathDiagnosis) -> str:
    """A few words for a table cell, e.g. "dropped after 10.0.2.2 (hop 2)"."""
    decision = diagnosis.decision
    where = decision.blocked_by
    hop = f" (hop {decision.blocked_at_hop})" if decision.blocked_at_hop else ""
    if decision.verdict in (Verdict.DROPPED_IN_NETWORK, Verdict.DROPPED_AT_LAST_HOP) and where:
        return f"dropped after {where}{hop}"
    if decision.verdict in (Verdict.NETWORK_REJECTED, Verdict.HOST_REJECTED) and where:
        return f"rejected by {where}{hop}"
    if decision.verdict in (Verdict.HOST_DOWN, Verdict.NO_ROUTE) and where:
        return f"{VERDICT_TITLES[decision.verdict]} (said {where}{hop})"
    if decision.verdict is Verdict.UNKNOWN and decision.remaining:
        return "undecided: " + " or ".join(str(v) for v in decision.remaining)
    return VERDICT_TITLES[decision.verdict]


def hop_table(diagnosis: PathDiagnosis) -> list[str]:
    """Lines of the hop table: TTL, who answered the SYN, what, RTT; and the UDP probe's answer."""
    lines = [
        f"Path to {diagnosis.target} port {diagnosis.port} (TCP traceroute, {diagnosis.packets} probe packets, "
        f"{diagnosis.seconds:.1f} s):",
        f"  {'TTL':>3}  {'answered by':<28} {'TCP SYN drew':<36} {'RTT':>9}  UDP probe",
    ]
    for hop in diagnosis.hops:
        tcp, udp = hop.tcp, hop.udp
        who = tcp.address if tcp is not None and tcp.answered and tcp.address else "*"
        rtt = _ms(tcp)
        udp_text = (
            "-"
            if udp is None
            else (f"{_reply_text(udp)} from {udp.address}" if udp.answered and udp.address else _reply_text(udp))
        )
        tries = f" ({hop.tcp_tries} tries)" if hop.tcp_tries > 1 else ""
        lines.append(
            f"  {hop.ttl:>3}  {who:<28} {(_reply_text(tcp) + tries):<36} "
            f"{(f'{rtt:.2f} ms' if rtt is not None else '-'):>9}  {udp_text}"
        )
    decision = diagnosis.decision
    lines.append(f"Path verdict: {decision.verdict} ({short(diagnosis)})")
    words = decision.words
    lines.append(words[:1].upper() + words[1:])
    lines += list(diagnosis.notes)
    return lines


def path_json(diagnosis: PathDiagnosis) -> dict[str, object]:
    """The ``path`` object of ``check --json`` (its first keys are a contract)."""
    decision = diagnosis.decision
    return {
        "verdict": str(decision.verdict),
        "blocked_by": decision.blocked_by,
        "blocked_at_hop": decision.blocked_at_hop,
        "hops_to_host": decision.hops_to_host,
        "hops": [
            {
                "ttl": hop.ttl,
                "address": hop.tcp.address if hop.tcp is not None and hop.tcp.answered else None,
                "reply": str(hop.tcp.reply) if hop.tcp is not None else None,
                "rtt_ms": _ms(hop.tcp),
                "tries": hop.tcp_tries,
                "udp": None
                if hop.udp is None
                else {
                    "address": hop.udp.address if hop.udp.answered else None,
                    "reply": str(hop.udp.reply),
                    "rtt_ms": _ms(hop.udp),
                    "tries": hop.udp_tries,
                },
            }
            for hop in diagnosis.hops
        ],
        "words": decision.words,
        "remaining": [str(verdict) for verdict in decision.remaining],
        "last_responding_hop": decision.last_responding_hop,
        "host_up": diagnosis.host_up,
        "packets": diagnosis.packets,
        "seconds": round(diagnosis.seconds, 3),
        "target": diagnosis.target,
        "port": diagnosis.port,
        "notes": list(diagnosis.notes),
    }
