"""Prometheus-style durations: ``250ms``, ``5s``, ``1m30s``, ``1h``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str) -> float:
    """Return seconds; raise ValueError with a message fit for a config error."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration such as 250ms, 5s or 1m, got {text!r} (durations need a unit)")
    pos, total, seen = 0, 0.0, False
    for match in _PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos, seen = match.end(), True
    if not seen or pos != len(text):
        raise ValueError(
            f"invalid duration {text!r}: expected a number and a unit (ms, s, m, h, d), e.g. 250ms, 5s, 1m30s"
        )
    return total


def format_duration(seconds: float) -> str:
    if seconds < 1 and seconds * 1000 == int(seconds * 1000):
        return f"{int(seconds * 1000)}ms"
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{seconds:g}s"
