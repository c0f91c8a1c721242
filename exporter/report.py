"""The plain-text report of one probe, as /probe?debug=true and the status page's history show it."""

from __future__ import annotations

from exporter.probers.maildomain import render_text as mail_domain_text  # issue 16
from exporter.probers.result import ProbeResult


def debug_report(heading: list[str], result: ProbeResult, metrics_text: str) -> str:
    verdict = "SUCCESS" if result.success else "FAILURE"
    lines = [*heading,
             f"Verdict: {verdict}, state {result.state}: {result.detail}",
             f"Duration: {result.duration_seconds * 1000:.2f} ms",
             "",
             "Transcript:"]
    lines += [f"  {line}" for line in result.transcript]
    # Probers that talk a protocol (smtp) explain each reply code the server sent.
    explanations = getattr(result.extra, "explanations", None)
    if explanations:
        lines += ["", "Reply codes explained:"]
        lines += [f"  {heading}: {meaning}" for heading, meaning in explanations]
    if domain_lines := mail_domain_text(result.extra):  # mail domains (issue 16): the MX table and verdict
        lines += ["", *domain_lines]
    lines += ["", "Metrics:", metrics_text]
    return "\n".join(lines)
