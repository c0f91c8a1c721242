"""The configuration keys of continuous probing (docs/continuous.md): ``interval`` on a module or a
target, ``histogram_buckets`` on a module. Parsed with the schema language of ``exporter.schema``;
``exporter.config`` adds these fields to its module and target sections."""

from __future__ import annotations

import re
from typing import Any

from exporter.core import schema
from exporter.core.histogram import (
    DEFAULT_BANNER_BUCKETS,
    DEFAULT_CONNECT_BUCKETS,
    DEFAULT_DURATION_BUCKETS,
    DEFAULT_HISTOGRAMS,
    HISTOGRAM_NAMES,
    MAX_BUCKETS,
    HistogramBuckets,
)
from exporter.core.schema import INVALID, Errors, Field, Invalid
from exporter.probers.table import PROBERS

MIN_INTERVAL, MAX_INTERVAL = 0.1, 86400.0
_EXPONENT_AS_TEXT = re.compile(r"[0-9]+[eE][-+]?[0-9]+")


def reads_greeting(prober: str) -> bool:
    """Whether the prober reads a greeting first (it has a banner histogram)."""
    return PROBERS[prober].reads_greeting


def _bucket_bounds(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, list) or not value:
        return errs.add(
            path,
            "expected a non-empty list of increasing upper bounds in seconds, "
            f"such as [0.001, 0.01, 0.1], got {schema.kind(value)}",
        )
    if len(value) > MAX_BUCKETS:
        return errs.add(path, f"{len(value)} buckets are more than {MAX_BUCKETS} (each costs a series per target)")
    bounds: list[float] = []
    for index, bound in enumerate(value):
        where = f"{path}[{index}]"
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < float("inf"):
            hint = ""
            if isinstance(bound, str) and _EXPONENT_AS_TEXT.fullmatch(bound):
                hint = " (YAML reads an exponent without a decimal point as text: write 0.00002, not 2e-05)"
            return errs.add(where, f"expected a number of seconds above 0, got {bound!r}{hint}")
        if bounds and bound <= bounds[-1]:
            return errs.add(where, f"{bound!r} is not above the previous bound {bounds[-1]!r} (bounds must increase)")
        bounds.append(float(bound))
    return tuple(bounds)


INTERVAL = Field(schema.duration(MIN_INTERVAL, MAX_INTERVAL), None)
HISTOGRAM_BUCKET_FIELDS = {
    "connect": Field(_bucket_bounds, DEFAULT_CONNECT_BUCKETS),
    "banner": Field(_bucket_bounds, DEFAULT_BANNER_BUCKETS),
    "duration": Field(_bucket_bounds, DEFAULT_DURATION_BUCKETS),
}
# Added to a module's keys; ``histograms`` and ``histogram_buckets`` are parsed once the prober is known.
MODULE_FIELDS = {
    "interval": INTERVAL,
    "histograms": Field(schema.raw, None),
    "histogram_buckets": Field(schema.raw, None),
}


def _histogram_names(value: Any, prober: str, path: str, errs: Errors) -> tuple[str, ...] | Invalid:
    """The histograms a module's continuous targets have (each costs its buckets + 3 series per target)."""
    if value is None:
        return DEFAULT_HISTOGRAMS
    if not isinstance(value, list):
        return errs.add(
            path, f"expected a list of histogram names ({', '.join(HISTOGRAM_NAMES)}), got {schema.kind(value)}"
        )
    names: list[str] = []
    for index, name in enumerate(value):
        where = f"{path}[{index}]"
        if name not in HISTOGRAM_NAMES:
            return errs.add(where, f"expected one of {', '.join(HISTOGRAM_NAMES)}, got {str(name)[:40]!r}")
        if name == "banner" and not reads_greeting(prober):
            return errs.add(where, f"not used by prober {prober!r} (only the smtp prober reads a banner)")
        if name in names:
            return errs.add(where, f"{name!r} is listed twice")
        names.append(name)
    return tuple(names)


def histogram_buckets(
    raw: Any, prober: str, path: str, errs: Errors, histograms: Any = None, histograms_path: str = "histograms"
) -> HistogramBuckets | Invalid | None:
    """The module's histograms and buckets, None when it sets neither (the defaults apply), or INVALID.

    ``histograms`` is the raw ``histograms:`` list, found at ``histograms_path``."""
    names = _histogram_names(histograms, prober, histograms_path, errs)
    if names is INVALID:
        return INVALID
    if raw is None:
        return None if histograms is None else HistogramBuckets(histograms=names)
    if isinstance(raw, dict) and "banner" in raw and not reads_greeting(prober):
        return errs.add(
            schema.join(path, "banner"), f"not used by prober {prober!r} (only the smtp prober reads a banner)"
        )
    fields = schema.section(raw, path, HISTOGRAM_BUCKET_FIELDS, errs)
    if fields is INVALID:
        return INVALID
    for name in fields:
        if name in raw and name not in names:
            # Buckets for a histogram the module does not have would silently do nothing.
            return errs.add(
                schema.join(path, name),
                f"buckets for a histogram this module does not have: add {name!r} to histograms "
                f"(now {list(names)}) or remove them",
            )
    return HistogramBuckets(**fields, histograms=names)
