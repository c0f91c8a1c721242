"""The path diagnosis metric families (names are a contract), written in the text format.

Per target, and only where a diagnosis exists: one verdict one-hot, the last responding hop, the
host's distance when known, the blocking device as an info series (one address per target at a
time: bounded), and when the diagnosis finished. ``probe_tcp_rejected_by`` belongs to every probe
the connect step saw rejected by ICMP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from exporter.exposition import Family, escape_label_value, format_value
from exporter.pathdiag.model import PathDiagnosis, Verdict
from exporter.probers.result import ProbeResult

VERDICTS = tuple(verdict.value for verdict in Verdict)

# (name, help) of each family, in the order they are written.
PATH_FAMILIES = (
    ("probe_path_diagnosis", "Path diagnosis verdict of the latest failed connect: exactly one of "
                             + ", ".join(VERDICTS) + " is 1."),
    ("probe_path_last_responding_hop", "Highest TTL at which a device answered the diagnosis' TCP SYN."),
    ("probe_path_hops_to_host", "Hops to the target host, when the diagnosis saw the host answer."),
    ("probe_path_blocked_by_info", "The device that rejected the connection, or the last one that answered "
                                   "before the SYN was dropped (value always 1)."),
    ("probe_path_blocked_at_hop", "Hop (TTL) of the device in probe_path_blocked_by_info, when known."),
    ("probe_path_diagnosis_timestamp_seconds", "Unix time the latest path diagnosis finished."),
)


def _lines(name: str, prefix: str, diagnosis: PathDiagnosis) -> Iterator[str]:
    decision = diagnosis.decision
    head = f"{name}{{{prefix}," if prefix else f"{name}{{"
    bare = f"{name}{{{prefix}}} " if prefix else f"{name} "
    if name == "probe_path_diagnosis":
        for verdict in VERDICTS:
            yield f'{head}verdict="{verdict}"}} {1 if verdict == decision.verdict else 0}\n'
    elif name == "probe_path_last_responding_hop":
        if decision.last_responding_hop is not None:
            yield f"{bare}{decision.last_responding_hop}\n"
    elif name == "probe_path_hops_to_host":
        if decision.hops_to_host is not None:
            yield f"{bare}{decision.hops_to_host}\n"
    elif name == "probe_path_blocked_by_info":
        if decision.blocked_by is not None:
            yield f'{head}address="{escape_label_value(decision.blocked_by)}"}} 1\n'
    elif name == "probe_path_blocked_at_hop":
        if decision.blocked_at_hop is not None:
            yield f"{bare}{decision.blocked_at_hop}\n"
    elif name == "probe_path_diagnosis_timestamp_seconds":
        yield f"{bare}{format_value(float(diagnosis.finished_at))}\n"


def render_path_families(entries: Iterable[tuple[str, PathDiagnosis | None]]) -> Iterator[str]:
    """Text of the path families for (target label prefix, diagnosis) pairs; targets without a
    diagnosis write nothing, and a family with no sample at all writes no header either."""
    present: Sequence[tuple[str, PathDiagnosis]] = [(prefix, d) for prefix, d in entries if d is not None]
    if not present:
        return
    for name, help_text in PATH_FAMILIES:
        body = "".join(line for prefix, diagnosis in present for line in _lines(name, prefix, diagnosis))
        if body:
            yield f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{body}"


def _rejected_by(result: ProbeResult) -> Iterable[tuple[str, float]]:
    icmp = result.icmp
    if icmp is None or result.address is None:
        return ()
    by_host = icmp.sent_by_host(result.address)
    return (('by="host"', 1 if by_host else 0), ('by="network"', 0 if by_host else 1))


TCP_REJECTED_BY = Family(
    "probe_tcp_rejected_by", "gauge",
    "For a connect ended by an ICMP error: 1 on by=\"host\" when the target itself sent it, on by=\"network\" "
    "when another address did (a router or network firewall).", _rejected_by)
