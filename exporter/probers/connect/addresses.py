"""Every address of a name (``tcp.probe_addresses: all``): what each address did, the verdict over all of
them, the time an RFC 8305 (Happy Eyeballs) client would wait, and one sentence of what users feel.

Pure logic over per-address outcomes; the connects themselves are in ``exporter.probers.connect.every``.
"""

from __future__ import annotations

from collections.abc import Sequence

from exporter.pathdiag.render import path_json
from exporter.pathdiag.render import summary as path_summary
from exporter.probers.connect.result import AddressesReport, AddressesState, AddressOutcome, TcpState

# RFC 8305 section 8 ("Summary of Configurable Values"): the recommended Connection Attempt Delay.
# Section 5 recommends bounds for a delay computed from RTT history (Minimum Connection Attempt Delay 100 ms,
# never under 10 ms; Maximum 2 s); the 250 ms is the one for a client without RTT data, which we model.
CONNECTION_ATTEMPT_DELAY = 0.25
# RFC 8305 section 8: First Address Family Count, how many addresses of the preferred family (IPv6,
# RFC 6724's default policy) come before the first address of the other family in the interleaved list.
FIRST_ADDRESS_FAMILY_COUNT = 1
# RFC 8305 section 5: "a subsequent connection MUST NOT be started within 10 milliseconds of the previous".
MIN_ATTEMPT_SPACING = 0.01

NO_IPV6_ROUTE = "this exporter cannot reach IPv6: no route"


def happy_eyeballs_order(outcomes: Sequence[AddressOutcome]) -> list[AddressOutcome]:
    """RFC 8305 section 4: interleave the families, IPv6 first (First Address Family Count 1), each
    family in the order the resolver sorted it (RFC 6724)."""
    v6 = [o for o in outcomes if o.ip_protocol == 6]
    v4 = [o for o in outcomes if o.ip_protocol == 4]
    ordered = v6[:FIRST_ADDRESS_FAMILY_COUNT]
    v6 = v6[FIRST_ADDRESS_FAMILY_COUNT:]
    first, second = (v4, v6)
    while first or second:
        if first:
            ordered.append(first.pop(0))
        first, second = second, first
    return ordered


def happy_eyeballs_seconds(outcomes: Sequence[AddressOutcome], delay: float = CONNECTION_ATTEMPT_DELAY) -> float | None:
    """When an RFC 8305 client, given these per-address outcomes, would be connected (seconds from its
    first attempt), or None when no address connects.

    RFC 8305 section 5: attempts start one at a time in the section 4 order, each ``delay`` after the
    previous one; a started attempt keeps running; the first to connect wins. Section 5 states only the
    delay; when every started attempt has already failed (a reset, an ICMP error) we start the next one at
    once, as common implementations do (Python's asyncio staggered_race, for one): a client that waits out
    the delay anyway is slower by at most ``delay`` per such failure. The Resolution Delay (50 ms waiting
    for AAAA after A) is not modelled: the probe asks for both families in one getaddrinfo call, so it
    does not see which answer came first.
    """
    start = 0.0
    best: float | None = None
    all_failed_at = 0.0  # when the last of the started attempts failed; inf while one may still connect
    for outcome in happy_eyeballs_order(outcomes):
        if best is not None and start >= best:
            break  # connected before this attempt would have started
        seconds = outcome.connect_seconds
        if outcome.ok and seconds is not None:
            best = start + seconds if best is None else min(best, start + seconds)
            all_failed_at = float("inf")
        elif seconds is not None and outcome.state is not TcpState.TIMEOUT:
            all_failed_at = max(all_failed_at, start + seconds)
        else:
            all_failed_at = float("inf")  # no answer: the client waits the delay out
        # Section 5: never within MIN_ATTEMPT_SPACING of the previous attempt.
        start = max(start + MIN_ATTEMPT_SPACING, min(start + delay, all_failed_at))
    return best


def distinct(report: AddressesReport) -> AddressesReport:
    """Each address once (two MX hosts may share one), its first outcome kept."""
    seen: dict[str, AddressOutcome] = {}
    for outcome in report.outcomes:
        seen.setdefault(outcome.address, outcome)
    return AddressesReport(list(seen.values()), len(seen) + report.cut)


def classify(report: AddressesReport) -> AddressesState:
    """The verdict over the counted addresses."""
    if not report.outcomes:
        return AddressesState.DNS_ERROR
    counted = report.counted
    if not counted or not any(o.ok for o in counted):
        return AddressesState.ALL_FAILING
    if all(o.ok for o in counted):
        return AddressesState.ALL_OK
    families = {
        version: [o.ok for o in counted if o.ip_protocol == version]
        for version in (4, 6)
        if any(o.ip_protocol == version for o in counted)
    }
    if len(families) == 2:
        if not any(families[6]):
            return AddressesState.IPV6_FAILING
        if not any(families[4]):
            return AddressesState.IPV4_FAILING
    return AddressesState.SOME_FAILING


def finish(report: AddressesReport) -> AddressesReport:
    """Fill the verdict fields from the outcomes."""
    v6 = [o for o in report.outcomes if o.ip_protocol == 6]
    # Every IPv6 address refused by the local kernel for want of a route: the host has no IPv6
    # connectivity; its addresses say nothing about the target.
    report.no_route_families = (6,) if v6 and all(o.no_local_route for o in v6) else ()
    report.state = classify(report)
    # A family this host cannot reach at all is not the target's: the time is that of a client without it.
    report.happy_eyeballs_seconds = happy_eyeballs_seconds(report.counted)
    return report


# --- words ------------------------------------------------------------------------------------

_CAUSES = {
    TcpState.TIMEOUT: "drops packets (no answer)",
    TcpState.REFUSED: "refuses connections (TCP reset)",
    TcpState.UNREACHABLE: "is unreachable (an ICMP error came back)",
    TcpState.ERROR: "could not be tried from this machine",
}


def _family_words(version: int) -> str:
    return f"IPv{version}"


def _causes(failed: Sequence[AddressOutcome]) -> str:
    states = list(dict.fromkeys(o.state for o in failed))
    return " or ".join(_CAUSES.get(state, str(state)) for state in states)


def _seconds(value: float | None) -> str:
    if value is None:
        return "never"
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.1f} ms"


def experience(report: AddressesReport) -> str:
    """One sentence: what a user of the name experiences."""
    counted = report.counted
    failed = [o for o in counted if not o.ok]
    he = report.happy_eyeballs_seconds
    state = report.state
    if state is AddressesState.DNS_ERROR:
        return "clients cannot connect: the name has no address"
    if state is AddressesState.ALL_OK:
        families = sorted({o.ip_protocol for o in counted})
        over = " and ".join(_family_words(v) for v in families)
        return f"every address connects over {over}: clients connect in {_seconds(he)}"
    if state is AddressesState.ALL_FAILING:
        return f"no client can connect: every address {_causes(failed)}"
    if state is AddressesState.IPV6_FAILING:
        if all(o.state is TcpState.TIMEOUT for o in failed):
            why = "the IPv6 path drops packets"
        else:
            why = f"every IPv6 address {_causes(failed)}"
        return f"clients with IPv6 wait {_seconds(he)}, then connect over IPv4: {why}"
    if state is AddressesState.IPV4_FAILING:
        return (
            f"clients without IPv6 cannot connect (every IPv4 address {_causes(failed)}); "
            f"clients with IPv6 connect in {_seconds(he)}"
        )
    shown = ", ".join(f"{o.address} {_CAUSES.get(o.state, str(o.state)).split(' (')[0]}" for o in failed)
    return (
        f"{len(failed)} of {len(counted)} addresses fail ({shown}): a client that tries only one "
        f'address fails now and then ("it works, sometimes"); Happy Eyeballs clients connect in {_seconds(he)}'
    )


# --- what people read: check's table and JSON (docs/metrics.md, "Every address of a name") ---------------


def note(report: AddressesReport) -> str | None:
    """Said once per report: this exporter itself cannot reach a family, so its addresses are not counted."""
    if not report.no_route_families:
        return None
    return f"{NO_IPV6_ROUTE} (the IPv6 addresses of the name are not counted)"


def summary(report: AddressesReport) -> str:
    """A few words for a status table: the verdict, how many addresses work, the Happy Eyeballs time."""
    counted = report.counted
    words = f"every address: {report.state}, {sum(o.ok for o in counted)} of {len(counted)} connect"
    if report.happy_eyeballs_seconds is not None:
        words += f", Happy Eyeballs {_seconds(report.happy_eyeballs_seconds)}"
    return words


def to_json(report: AddressesReport) -> dict[str, object]:
    """``check --json``'s "addresses" object (a documented contract)."""
    return {
        "state": report.state.value,
        "happy_eyeballs_seconds": report.happy_eyeballs_seconds,
        "experience": experience(report),
        "resolved": report.resolved,
        "not_probed": report.cut,
        "no_route_families": list(report.no_route_families),
        "note": note(report),
        "list": [
            {
                "address": o.address,
                "ip_protocol": o.ip_protocol,
                "state": o.state.value,
                "connect_seconds": o.connect_seconds,
                "counted": o.ip_protocol not in report.no_route_families,
                "path": None if o.path is None else path_json(o.path),
            }
            for o in report.outcomes
        ],
    }


def table(report: AddressesReport, said: str = "") -> list[str]:
    """The per-address table and the sentence of what users experience, as report lines (the sentence left
    out when it is ``said`` already, as the verdict)."""
    rows = [("ADDRESS", "IP", "STATE", "CONNECT")]
    for o in report.outcomes:
        took = "-" if o.connect_seconds is None else f"{o.connect_seconds * 1000:.2f} ms"
        state = str(o.state) + (
            " (no route from here: not counted)" if o.ip_protocol in report.no_route_families else ""
        )
        rows.append((o.address, f"v{o.ip_protocol}", state, took))
    widths = [max(len(row[column]) for row in rows) for column in range(3)]
    lines = [f"Every address ({report.state}):"]
    lines += [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3]
        for row in rows
    ]
    if report.cut:
        lines.append(f"  ... {report.cut} more not probed (tcp.probe_addresses_max)")
    lines += [f"  {o.address}: {path_summary(o.path)}" for o in report.outcomes if o.path is not None]
    he = report.happy_eyeballs_seconds
    lines.append(f"Happy Eyeballs (RFC 8305): {_seconds(he)}" + ("" if he is not None else " (no address connects)"))
    if (noted := note(report)) is not None:
        lines.append(f"Note: {noted}")
    sentence = experience(report)
    if sentence != said:
        lines.append("What users experience: " + sentence[:1].upper() + sentence[1:] + ".")
    return lines
