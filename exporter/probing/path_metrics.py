"""The path diagnosis metric families (names are a contract), written in the text format.

Per target, and only where a diagnosis exists: one verdict one-hot, the last responding hop, the
host's distance when known, the blocking device as an info series (one address per target at a
time: bounded), and when the diagnosis finished. ``probe_tcp_rejected_by`` belongs to every probe
the connect step saw rejected by ICMP.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from exporter.core.exposition import Family, escape_label_value, labelled, one_hot, render_chunks, single
from exporter.pathdiag.model import PathDiagnosis, Verdict

VERDICTS = tuple(verdict.value for verdict in Verdict)


def _blocked_by(diagnosis: PathDiagnosis) -> Iterable[tuple[str, float]]:
    blocked_by = diagnosis.decision.blocked_by
    return () if blocked_by is None else ((f'address="{escape_label_value(blocked_by)}"', 1),)


# Written for the targets that have a diagnosis, from the diagnosis itself.
PATH_FAMILIES: tuple[Family[PathDiagnosis], ...] = (
    Family(
        "probe_path_diagnosis",
        "gauge",
        "Path diagnosis verdict of the latest failed connect: exactly one of " + ", ".join(VERDICTS) + " is 1.",
        one_hot("verdict", VERDICTS, lambda d: str(d.decision.verdict)),
    ),
    Family(
        "probe_path_last_responding_hop",
        "gauge",
        "Highest TTL at which a device answered the diagnosis' TCP SYN.",
        single(lambda d: d.decision.last_responding_hop),
    ),
    Family(
        "probe_path_hops_to_host",
        "gauge",
        "Hops to the target host, when the diagnosis saw the host answer.",
        single(lambda d: d.decision.hops_to_host),
    ),
    Family(
        "probe_path_blocked_by_info",
        "gauge",
        "The device that rejected the connection, or the last one that answered before the SYN was dropped "
        "(value always 1).",
        labelled(_blocked_by),
    ),
    Family(
        "probe_path_blocked_at_hop",
        "gauge",
        "Hop (TTL) of the device in probe_path_blocked_by_info, when known.",
        single(lambda d: d.decision.blocked_at_hop),
    ),
    Family(
        "probe_path_diagnosis_timestamp_seconds",
        "gauge",
        "Unix time the latest path diagnosis finished.",
        single(lambda d: float(d.finished_at)),
    ),
)
_PATH_FAMILY_SET = frozenset(PATH_FAMILIES)


def render_path_families(entries: Iterable[tuple[str, PathDiagnosis | None]]) -> Iterator[str]:
    """Text of the path families for (target label prefix, diagnosis) pairs; targets without a
    diagnosis write nothing, and a family with no sample at all writes no header either."""
    holders = [(prefix, diagnosis, _PATH_FAMILY_SET) for prefix, diagnosis in entries if diagnosis is not None]
    return render_chunks(holders, PATH_FAMILIES)
