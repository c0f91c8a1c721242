"""How ``tcp.mtu_check``'s report is shown: metric families, ``check --json``'s ``"mtu"``, lines for people.

Every family is absent for a probe that did not run the check (``mtu_check`` off, or no connection).
"""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.exposition import Family, escape_label_value, labelled, one_hot, single
from exporter.probers.connect.mtu import MtuReport, MtuState
from exporter.probers.connect.result import ProbeResult


def has_mtu(result: ProbeResult) -> bool:
    return result.mtu is not None


def _state(result: ProbeResult) -> str | None:
    return result.mtu.state.value if result.mtu is not None else None


def _path_mtu(result: ProbeResult) -> float | None:
    return result.mtu.path_mtu if result.mtu is not None else None


def _reported_by(result: ProbeResult) -> Iterable[tuple[str, float]]:
    report = result.mtu
    if report is None or report.reported_by is None:
        return ()
    return ((f'address="{escape_label_value(report.reported_by)}"', 1),)


MTU_FAMILIES: tuple[Family[ProbeResult], ...] = (
    Family(
        "probe_mtu_state",
        "gauge",
        "tcp.mtu_check: whether full-size packets pass both ways; exactly one of ok, reduced, "
        "blackhole_to_target, blackhole_from_target, unknown is 1 (absent without the check).",
        one_hot("state", [state.value for state in MtuState], _state, only_if=has_mtu),
    ),
    Family(
        "probe_path_mtu_bytes",
        "gauge",
        "tcp.mtu_check: the path MTU towards the target, in bytes (a reduced one as an ICMP reported it or the "
        "kernel learnt it; otherwise the largest packet that passed); absent when undecided.",
        single(_path_mtu, only_if=has_mtu),
    ),
    Family(
        "probe_path_mtu_reported_by_info",
        "gauge",
        "tcp.mtu_check: the router whose ICMP 'fragmentation needed' / 'packet too big' reported a smaller "
        "path MTU, by address; always 1 (absent when none did).",
        labelled(_reported_by, only_if=has_mtu),
    ),
)


def mtu_json(report: MtuReport | None) -> dict[str, object] | None:
    """``check --json``'s ``"mtu"`` object (contract: state, path_mtu, reported_by, tested)."""
    if report is None:
        return None
    return {
        "state": report.state.value,
        "path_mtu": report.path_mtu,
        "reported_by": report.reported_by,
        "tested": list(dict.fromkeys(report.tested)),
        "detail": report.detail,
        "possible": list(report.possible),
        "to_target": None if report.to_target is None else report.to_target.value,
        "from_target": None if report.from_target is None else report.from_target.value,
        "largest_sent": report.largest_sent,
        "largest_received": report.largest_received,
        "learnt_before": report.learnt_before,
        "seconds": round(report.seconds, 6),
        "extra_packets": report.extra_packets,
    }


def mtu_lines(report: MtuReport | None) -> list[str]:
    """What ``check`` prints about the check."""
    if report is None:
        return []
    size = f", path MTU {report.path_mtu} bytes" if report.path_mtu is not None else ""
    who = f", reported by {report.reported_by}" if report.reported_by else ""
    tested = " and ".join(direction.replace("_", " ") for direction in dict.fromkeys(report.tested)) or "nothing"
    return [f"Path MTU: {report.state}{size}{who} (tested {tested}): {report.detail}"]
