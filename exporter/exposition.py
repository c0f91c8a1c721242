"""A small text writer for the per-target probe metrics (Prometheus text format 0.0.4).

prometheus_client costs ~10 µs per sample; with thousands of targets and a dozen series
each that exceeds the whole probing budget of a scrape. Target label sets are escaped
once (``label_prefix``) and each family is written as plain string concatenation.
The exporter's own metrics still go through prometheus_client.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from exporter.probers.result import ProbeResult, TcpState

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Samples = Callable[[ProbeResult], Iterable[tuple[str, float]]]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_prefix(labels: Sequence[tuple[str, str]]) -> str:
    """``a="x",b="y"`` for a target's fixed labels; computed once per config load."""
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels)


def format_value(value: float) -> str:
    if value.__class__ is int or value.__class__ is bool:
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


@dataclass(frozen=True, eq=False)
class Family:
    name: str
    type: str
    help: str
    samples: Samples

    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.type}\n"


def one_hot(label: str, values: Iterable[str], current: Callable[[ProbeResult], str | None]) -> Samples:
    """Samples for a state set: one series per possible value, exactly one of them 1."""
    rendered = [(value, f'{label}="{escape_label_value(value)}"') for value in values]

    def samples(result: ProbeResult) -> Iterable[tuple[str, float]]:
        now = current(result)
        return [(text, 1 if value == now else 0) for value, text in rendered]
    return samples


def single(get: Callable[[ProbeResult], float | None]) -> Samples:
    """One unlabelled sample, left out when ``get`` returns None."""
    def samples(result: ProbeResult) -> Iterable[tuple[str, float]]:
        value = get(result)
        return () if value is None else (("", value),)
    return samples


# Owned by the handler, with blackbox_exporter's names and meaning.
COMMON_FAMILIES = (
    Family("probe_success", "gauge", "Whether the probe succeeded (1) or not (0).",
           single(lambda r: 1 if r.success else 0)),
    Family("probe_duration_seconds", "gauge", "How long the whole probe took, in seconds.",
           single(lambda r: r.duration_seconds)),
    Family("probe_dns_lookup_time_seconds", "gauge", "How long the DNS lookup took, in seconds (0 for IP literals).",
           single(lambda r: r.dns_lookup_seconds)),
    Family("probe_ip_protocol", "gauge", "IP protocol version of the address probed: 4 or 6, 0 if unresolved.",
           single(lambda r: r.ip_protocol)),
)

TCP_FAMILIES = (
    Family("probe_tcp_connect_duration_seconds", "gauge",
           "Time until the TCP connect attempt had an outcome (connected, refused, unreachable or timed out).",
           single(lambda r: r.connect_seconds)),
    Family("probe_tcp_state", "gauge",
           "Outcome of the TCP connect: exactly one of open, refused, timeout, unreachable, dns_error, error is 1.",
           one_hot("state", [state.value for state in TcpState], lambda r: r.tcp_state.value)),
)


def render(results: Sequence[tuple[str, ProbeResult, frozenset[Family]]],
           families: Sequence[Family]) -> str:
    """Write ``families`` for every (label_prefix, result, families it has) triple, grouped by family."""
    out: list[str] = []
    append = out.append
    for family in families:
        wrote_header = False
        name = family.name
        samples = family.samples
        for prefix, result, present in results:
            if family not in present:
                continue
            for extra, value in samples(result):
                if not wrote_header:
                    append(family.header())
                    wrote_header = True
                if prefix and extra:
                    append(f"{name}{{{prefix},{extra}}} {format_value(value)}\n")
                elif prefix or extra:
                    append(f"{name}{{{prefix or extra}}} {format_value(value)}\n")
                else:
                    append(f"{name} {format_value(value)}\n")
    return "".join(out)
