"""The status page's section on continuous targets: failure ratio and connect-time percentiles over
the last few minutes, from the difference between a target's counts now and a snapshot."""

from __future__ import annotations

import math
import time

from exporter.continuous.prober import WINDOW_STEP, ContinuousProber
from exporter.core.durations import format_duration
from exporter.core.histogram import CONNECT, quantile
from exporter.web.statuspage import age, esc, ms, state_class, target_cells

MAX_CONTINUOUS_ROWS = 2000
QUANTILES = (0.5, 0.9, 0.99)


def _ratio(failures: int, probes: int) -> str:
    return f"{100 * failures / probes:.1f} %" if probes else ""


def continuous_section(
    prober: ContinuousProber, now: float | None = None, max_rows: int = MAX_CONTINUOUS_ROWS, elsewhere: int = 0
) -> list[str]:
    """HTML for this process's continuous targets (worst failure ratio first), or nothing without any;
    ``elsewhere``: how many more the probe workers own (listed in /metrics, not here)."""
    if not prober.targets and not elsewhere:
        return []
    if not prober.targets:
        return ["<h2>Continuous targets</h2>", _elsewhere(elsewhere)]
    now = time.time() if now is None else now
    rows = []
    for entry in prober.targets:
        stats = prober.window(entry, now)
        ratio = stats.failures / stats.probes if stats.probes else -1.0
        rows.append((ratio, entry, stats))
    rows.sort(key=lambda row: -row[0])
    out = [
        "<h2>Continuous targets</h2>",
        f"<p>Probed in the background every interval; figures over the last {WINDOW_STEP / 60:g} to "
        f"{2 * WINDOW_STEP / 60:g} minutes (the Window column says exactly), worst failure ratio first. "
        "Percentiles are estimated from the connect-time histogram's buckets as Prometheus' "
        "<code>histogram_quantile</code> does, over successful connects only.</p>",
        *([_elsewhere(elsewhere)] if elsewhere else []),
        "<table id=continuous><thead><tr><th>Target</th><th>Module</th><th>Interval</th><th>State</th>"
        "<th>Window</th><th>Probes</th><th>Failed</th><th>Failure ratio</th>"
        + "".join(f"<th>Connect p{round(q * 100)}</th>" for q in QUANTILES)
        + "<th>Flaps</th><th>Failures in a row</th><th>Skipped</th><th>Probed</th><th>Debug</th>"
        "</tr></thead><tbody>",
    ]
    bounds_of: dict[int, tuple[float, ...]] = {}  # id(layout) -> its connect bounds
    for _failure_ratio, entry, stats in rows[:max_rows]:
        start, end = target_cells(entry.address, entry.module.name)
        bounds = bounds_of.get(id(entry.tally.layout))
        if bounds is None:
            bounds = bounds_of[id(entry.tally.layout)] = entry.tally.layout.bounds[CONNECT]
        cells = "".join(f"<td class=num>{ms(quantile(q, bounds, stats.connect_buckets))}</td>" for q in QUANTILES)
        state = (
            '<td class="state s-pending">not probed yet</td>'
            if entry.latest is None
            else f'<td class="state {state_class(entry.latest)}">{esc(entry.latest.state)}</td>'
        )
        window = format_duration(round(stats.seconds)) if math.isfinite(stats.seconds) else ""
        out.append(
            f"{start}<td>{esc(format_duration(entry.interval))}</td>{state}<td class=num>{esc(window)}</td>"
            f"<td class=num>{stats.probes}</td><td class=num>{stats.failures}</td>"
            f"<td class=num>{_ratio(stats.failures, stats.probes)}</td>{cells}"
            f"<td class=num>{entry.tally.state_changes}</td><td class=num>{entry.tally.consecutive_failures}</td>"
            f"<td class=num>{entry.tally.skipped}</td><td>{age(entry.latest_at, now)}</td>{end}"
        )
    out.append("</tbody></table>")
    if len(rows) > max_rows:
        out.append(
            f"<p>{len(rows) - max_rows} more continuous targets, with lower failure ratios, are not "
            'shown; <a href="/metrics">/metrics</a> has them all.</p>'
        )
    return out


def _elsewhere(count: int) -> str:
    return (
        f"<p>{count:,} more continuous targets are probed by the probe worker processes "
        "(<code>--runtime.probe-processes</code>): their counters are in <code>/metrics</code>; "
        "this table lists the serving process's own.</p>"
    )
