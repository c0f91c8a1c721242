"""The live status page (``/``) and the transcript of a recorded probe, rendered on view.

Plain HTML with inline CSS, no scripts and nothing fetched from elsewhere (works offline).
Every string that came from a config, a server or a client is escaped; ``esc`` is the one
way text enters the page.
"""

from __future__ import annotations

import html
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import lru_cache
from urllib.parse import quote, urlencode

from exporter.config.model import Config
from exporter.core.address import HostPort
from exporter.pathdiag.render import summary as path_summary
from exporter.probers.connect.addresses import summary as address_summary
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.module import Module
from exporter.probers.table import PROBERS
from exporter.probing.report import debug_report
from exporter.service.history import Recorded, Row

MAX_DETAIL = 300
# The words of a target's latest background path diagnosis, if it has one.
PathWords = Callable[[HostPort, Module], str | None]
# (state, success) -> targets in it: the summary line above a table.
StateTally = Counter[tuple[str, bool]]
MAX_ROWS = 2000
KNOWN_STATES = frozenset(state.value for state in TcpState)

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{font-weight:bold;white-space:nowrap}
.s-open,.s-ok{background:#c8f0c8}
.s-refused{background:#f6b8b8}
.s-timeout{background:#fcd9a0}
.s-unreachable{background:#f3b6e6}
.s-dns_error{background:#d8c8f4}
.s-error,.s-fail{background:#e6b0b0}
.s-pending{background:#eee;color:#666}
.detail{max-width:40em;font-size:90%;color:#444}
.why{font-weight:normal}
.summary span{margin-right:1em}
"""


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def state_class(result: ProbeResult | None) -> str:
    if result is None:
        return "s-pending"
    state = str(result.state)
    if state in KNOWN_STATES:
        return "s-" + state
    # Other probers' states (e.g. SMTP) get the colour of success or failure.
    return "s-ok" if result.success else "s-fail"


def summary_class(state: str, success: bool) -> str:
    if state in KNOWN_STATES:
        return "s-" + state
    if state == "not probed yet":
        return "s-pending"
    # Other probers' states (e.g. SMTP's connect_failed) get the colour of success or failure.
    return "s-ok" if success else "s-fail"


def link(path: str, **query: str) -> str:
    return esc(f"{path}?{urlencode(query)}") if query else esc(path)


def ms(seconds: float | None) -> str:
    return f"{seconds * 1000:.2f} ms" if isinstance(seconds, (int, float)) else ""


def age(when: float | None, now: float) -> str:
    if when is None:
        return "never"
    seconds = max(0.0, now - when)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


def truncated(text: str, limit: int = MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


@lru_cache(maxsize=20_000)
def target_cells(address: HostPort, module_name: str) -> tuple[str, str]:
    """The parts of a row that only change with the config: (row start with target and module, link cell)."""
    target = str(address)
    probe = f"/probe?target={quote(target, safe=':[]')}&module={quote(module_name, safe='')}&debug=true"
    return (
        f'<tr data-target="{esc(target)}" data-module="{esc(module_name)}">'
        f"<td>{esc(target)}</td><td>{esc(module_name)}</td>",
        f'<td><a href="{esc(probe)}">probe now</a></td></tr>',
    )


def columns_for(rows: list[Row]) -> list[str]:
    """The fact columns the probers of these rows declare, each once, in first-seen order."""
    names = dict.fromkeys(module.prober for _, module, _, _ in rows)
    return list(dict.fromkeys(column for name in names for column in PROBERS[name].columns))


def state_cell(result: ProbeResult) -> str:
    """The state, and for a prober whose dialogue never started, the TCP outcome that stopped it."""
    shown = esc(result.state)
    if result.tcp_state is not TcpState.OPEN and str(result.state) != str(result.tcp_state):
        shown += f" <span class=why>(TCP: {esc(result.tcp_state)})</span>"
    if result.addresses is not None:  # tcp.probe_addresses: all
        shown += f" <span class=addresses>{esc(address_summary(result.addresses))}</span>"
    return f'<td class="state {state_class(result)}">{shown}</td>'


def status_table(
    table_id: str,
    rows: Iterable[Row],
    now: float,
    tally: StateTally,
    max_rows: int = MAX_ROWS,
    path_words: PathWords | None = None,
) -> list[str]:
    rows = list(rows)
    for _, _, _, result in rows:
        tally[("not probed yet", False) if result is None else (str(result.state), result.success)] += 1
    hidden = 0
    if len(rows) > max_rows:  # problems first, so a cut never hides one
        failing = [row for row in rows if row[3] is None or not row[3].success]
        healthy = [row for row in rows if row[3] is not None and row[3].success]
        hidden = len(rows) - max_rows
        rows = (failing + healthy)[:max_rows]
    columns = columns_for(rows)
    out = [
        f"<table id={table_id}><thead><tr><th>Target</th><th>Module</th><th>State</th><th>Connect</th>"
        + "".join(f"<th>{esc(column)}</th>" for column in columns)
        + "<th>Probed</th><th>Detail</th><th>Transcript</th></tr></thead><tbody>"
    ]
    empty_facts = "<td></td>" * len(columns)
    for address, module, when, result in rows:
        start, end = target_cells(address, module.name)
        if result is None:
            out.append(
                f'{start}<td class="state s-pending">not probed yet</td><td></td>{empty_facts}'
                f"<td>never</td><td></td>{end}"
            )
            continue
        facts = {fact.label: fact.text for fact in result.details.facts(str(result.state), now)}
        cells = "".join(f"<td>{esc(facts.get(column, ''))}</td>" for column in columns)
        out.append(
            f"{start}{state_cell(result)}"
            f"<td class=num>{ms(result.connect_seconds)}</td>{cells}<td>{age(when, now)}</td>"
            f"<td class=detail>{esc(truncated(result.detail))}{_path_cell(address, module, result, path_words)}"
            f"</td>{end}"
        )
    out.append("</tbody></table>")
    if hidden:
        out.append(
            f"<p>{hidden} more targets, all succeeding, are not shown (the table shows at most "
            f'{max_rows}, failures first); <a href="/metrics">/metrics</a> has them all.</p>'
        )
    return out


def _path_cell(address: HostPort, module: Module, result: ProbeResult, path_words: PathWords | None) -> str:
    """Issue 13: the words of the target's latest path diagnosis, under the detail."""
    if result.success:
        return ""
    words = (
        path_summary(result.path) if result.path is not None else (path_words(address, module) if path_words else None)
    )
    return f"<br><span class=path>{esc(words)}</span>" if words else ""


def summary(tally: StateTally) -> str:
    return "".join(
        f'<span class="state {summary_class(state, success)}">{esc(state)}: {count}</span>'
        for (state, success), count in sorted(tally.items())
    )


def history_table(table_id: str, entries: Iterable[Recorded], now: float) -> list[str]:
    out = [
        f"<table id={table_id}><thead><tr><th>When</th><th>Target</th><th>Module</th><th>State</th>"
        "<th>Duration</th><th>Detail</th><th>Transcript</th></tr></thead><tbody>"
    ]
    for entry in entries:
        result = entry.result
        out.append(
            f"<tr><td>{esc(time.strftime('%H:%M:%S', time.localtime(entry.when)))} ({age(entry.when, now)})</td>"
            f"<td>{esc(entry.address)}</td><td>{esc(entry.module.name)}</td>"
            f'<td class="state {state_class(result)}">{esc(result.state)}</td>'
            f"<td class=num>{ms(result.duration_seconds)}</td>"
            f"<td class=detail>{esc(truncated(result.detail))}</td>"
            f'<td><a href="{link("/history", id=str(entry.id))}">transcript</a></td></tr>'
        )
    out.append("</tbody></table>")
    return out


def render_status_page(
    *,
    version: str,
    config: Config,
    rows: Iterable[Row],
    ad_hoc: Iterable[Row] = (),
    recent: Iterable[Recorded],
    failures: Iterable[Recorded],
    now: float | None = None,
    refresh: int | None = None,
    max_rows: int = MAX_ROWS,
    vantage: str | None = None,
    central_url: str | None = None,
    path_words: PathWords | None = None,
    sections: Iterable[str] = (),
) -> str:
    """``sections``: more HTML after the targets table (the continuous targets' section)."""
    now = time.time() if now is None else now
    example = next(iter(config.targets), None)
    probe_link = (
        link("/probe", target=str(example.address), module=example.module, debug="true")
        if example
        else link("/probe", target="127.0.0.1:22", module="tcp_connect", debug="true")
    )
    tally: StateTally = Counter()
    table = status_table("targets", rows, now, tally, max_rows, path_words)
    ad_hoc_tally: StateTally = Counter()
    ad_hoc = list(ad_hoc)
    ad_hoc_table = status_table("adhoc", ad_hoc, now, ad_hoc_tally, max_rows) if ad_hoc else []
    head_refresh = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    parts = [
        "<!doctype html>",
        f'<html><head><meta charset="utf-8">{head_refresh}<title>connectivity_exporter</title>'
        f"<style>{STYLE}</style></head><body>",
        f"<h1>connectivity_exporter {esc(version)}</h1>",
        f"<p>{len(config.targets)} configured targets, {len(config.modules)} modules "
        f"(config <code>{esc(config.source)}</code>). "
        f'Auto-refresh: <a href="/">off</a> · <a href="/?refresh=10">10s</a> · '
        f'<a href="/?refresh=60">60s</a>.</p>',
        "<ul>",
        '<li><a href="/metrics">Metrics</a>: every configured target, probed now</li>',
        f'<li><a href="{probe_link}">Debug probe</a>: one target with its transcript</li>',
        '<li><a href="/-/healthy">Health</a> and <a href="/-/ready">readiness</a></li>',
        *site_items(vantage, central_url),
        "</ul>",
        "<h2>Targets</h2>",
        "<p>Latest result of each target, from the last scrape of <code>/metrics</code> or "
        "<code>/probe</code> (continuous targets: their latest background probe).</p>",
        f"<p class=summary>{summary(tally)}</p>",
        *table,
        *sections,
        *(
            [
                "<h2>Targets probed through /probe</h2>",
                "<p>Not in the configuration: probed on request (Prometheus' multi-target pattern or by hand); "
                "the latest result of each.</p>",
                f"<p class=summary>{summary(ad_hoc_tally)}</p>",
                *ad_hoc_table,
            ]
            if ad_hoc
            else []
        ),
        "<h2>Recent probes</h2>",
        *history_table("recent", reversed(list(recent)), now),
        "<h2>Recent failures</h2>",
        "<p>Kept longer than successes, so a flood of successful probes does not hide them.</p>",
        *history_table("failures", reversed(list(failures)), now),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def site_items(vantage: str | None, central_url: str | None) -> list[str]:
    """List items naming this exporter's vantage point and linking to the all-sites view, when configured."""
    items = []
    if vantage:
        items.append(
            f"<li id=vantage>Vantage point: <b>{esc(vantage)}</b> (the <code>vantage</code> label on every series)</li>"
        )
    if central_url:
        items.append(
            f'<li id=central><a href="{esc(central_url)}" rel=noopener>Central view</a>: every '
            "target from every vantage point, to tell a target that is down everywhere from one "
            "that only this site cannot reach</li>"
        )
    return items


def render_transcript(entry: Recorded, metrics_text: str) -> str:
    """Plain text (served as text/plain with nosniff): what /probe?debug=true shows, for a past probe."""
    return debug_report(
        [
            f"Probe #{entry.id} of {entry.address} with module {entry.module.name}",
            f"At {time.strftime('%Y-%m-%d %H:%M:%S %Z', time.localtime(entry.when))}",
        ],
        entry.result,
        entry.module,
        metrics_text,
    )
