"""The plain-text report of one probe, as /probe?debug=true and the status page's history show it."""

from __future__ import annotations

import time

from exporter.pathdiag.render import hop_table
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probers.table import PROBERS


def debug_report(heading: list[str], result: ProbeResult, module: Module, metrics_text: str) -> str:
    prober = PROBERS[module.prober]
    verdict = "SUCCESS" if result.success else "FAILURE"
    lines = [
        *heading,
        f"Verdict: {verdict}, state {result.state}: {result.detail}",
        f"Duration: {result.duration_seconds * 1000:.2f} ms",
        *(f"{fact.label}: {fact.text}" for fact in prober.facts(result, time.time())),
        "",
        "Transcript:",
    ]
    lines += [f"  {line}" for line in result.transcript]
    explanations = prober.explanations(result)
    if explanations:
        lines += ["", "Reply codes explained:"]
        lines += [f"  {heading}: {meaning}" for heading, meaning in explanations]
    if blocks := prober.report_lines(result):
        lines += ["", *blocks]
    if result.path is not None:  # a path diagnosis run for this probe
        lines += ["", *hop_table(result.path)]
    lines += ["", "Metrics:", metrics_text]
    return "\n".join(lines)
