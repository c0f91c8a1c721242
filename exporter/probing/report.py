"""The plain-text report of one probe: one builder for what ``check`` prints and what /probe?debug=true
and the status page's history show. Server text is escaped here (``printable``), once, for both."""

from __future__ import annotations

import time

from exporter.core.transcript import printable
from exporter.pathdiag.render import hop_table
from exporter.probers.connect.addresses import table as address_table
from exporter.probers.connect.mtu_report import mtu_lines
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module


def details_lines(result: ProbeResult, now: float | None = None) -> list[str]:
    """What the prober's details say to a person: facts, replies explained, longer blocks (an MX table)."""
    details = result.details
    when = time.time() if now is None else now
    lines = [f"{fact.label}: {printable(fact.text)}" for fact in details.facts(str(result.state), when)]
    if explanations := details.explanations():
        lines.append("Reply codes explained:")
        lines += [f"  {printable(heading)}: {printable(meaning)}" for heading, meaning in explanations]
    lines += [printable(line) for line in details.report_lines()]
    if result.addresses is not None:  # tcp.probe_addresses: all: the table and what users experience
        lines += [printable(line) for line in address_table(result.addresses, said=result.detail)]
    lines += [printable(line) for line in mtu_lines(result.mtu)]  # tcp.mtu_check (docs/mtu.md)
    return lines


def path_lines(result: ProbeResult) -> list[str]:
    """The hop table of a path diagnosis run for this probe, after a blank line; [] without one."""
    if result.path is None:
        return []
    lines = ["", *hop_table(result.path)]
    if result.addresses is not None:  # tcp.probe_addresses: all: every failing address traced, each its table
        for outcome in result.addresses.outcomes:
            if outcome.path is not None and outcome.path is not result.path:
                lines += ["", *hop_table(outcome.path)]
    return lines


def debug_report(heading: list[str], result: ProbeResult, module: Module, metrics_text: str) -> str:
    verdict = "SUCCESS" if result.success else "FAILURE"
    lines = [
        *heading,
        f"Verdict: {verdict}, state {result.state}: {printable(result.detail)}",
        f"Duration: {result.duration_seconds * 1000:.2f} ms",
        *details_lines(result),
        "",
        "Transcript:",
    ]
    lines += [f"  {printable(line)}" for line in result.transcript]
    lines += path_lines(result)
    lines += ["", "Metrics:", metrics_text]
    return "\n".join(lines)
