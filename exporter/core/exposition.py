"""A small text writer for the per-target probe metrics (Prometheus text format 0.0.4).

prometheus_client costs ~10 µs per sample; with thousands of targets and a dozen series
each that exceeds the whole probing budget of a scrape. Target label sets are escaped
once (``label_prefix``) and each family is written as plain string concatenation.
The exporter's own metrics still go through prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from math import isfinite
from typing import Generic, TypeVar

# What a family formats: a prober's result object. The exposition never looks inside it; the
# family's sample functions do.
R = TypeVar("R")

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Samples = Callable[[R], Iterable[tuple[str, float]]]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def label_prefix(labels: Sequence[tuple[str, str]]) -> str:
    """``a="x",b="y"`` for a target's fixed labels; computed once per config load."""
    return ",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels)


def format_value(value: float) -> str:
    if value.__class__ is float:
        if isfinite(value):
            return repr(value)
    elif value.__class__ is int or value.__class__ is bool:
        return str(int(value))
    else:
        value = float(value)
        if isfinite(value):
            return repr(value)
    if value != value:
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


@dataclass(frozen=True, eq=False)
class Family(Generic[R]):
    name: str
    type: str
    help: str
    samples: Samples[R]

    def header(self) -> str:
        return f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.type}\n"


# ``single`` and ``one_hot`` samples are also *writers*: given a family name they return a
# function (label prefix, result) -> that target's lines, built from pieces prepared once,
# which ``render`` uses instead of the generic per-sample loop (same text, a fraction of the cost).
# Any other callable returning (extra labels, value) pairs still works through the generic loop.


class _OneHot(Generic[R]):
    """Samples for a state set: one series per possible value, exactly one of them 1."""

    __slots__ = ("rendered", "current", "_known", "_writers")

    def __init__(self, label: str, values: Iterable[str], current: Callable[[R], str | None]):
        self.rendered = [(value, f'{label}="{escape_label_value(value)}"') for value in values]
        self.current = current
        self._known = frozenset(value for value, _ in self.rendered)
        self._writers: dict[str, Callable[[str, R], str]] = {}

    def __call__(self, result: R) -> Iterable[tuple[str, float]]:
        now = self.current(result)
        return [(text, 1 if value == now else 0) for value, text in self.rendered]

    def writer(self, name: str) -> Callable[[str, R], str]:
        write = self._writers.get(name)
        if write is None:
            write = self._writers[name] = self._make_writer(name)
        return write

    def _make_writer(self, name: str) -> Callable[[str, R], str]:
        current, known, rendered = self.current, self._known, self.rendered
        other = object()  # every value 0: ``current`` returned something outside the set
        # Per current value: the pieces that, joined with a target's label prefix as separator,
        # give all of that target's lines; and the lines of a result without target labels.
        layouts: dict[object, tuple[list[str], str]] = {}
        for now in [*known, other]:
            lines = [(text, 1 if value == now else 0) for value, text in rendered]
            pieces = [name + "{"] + [f",{text}}} {bit}\n{name}{{" for text, bit in lines]
            pieces[-1] = pieces[-1][: -len(name) - 1]
            bare = "".join(f"{name}{{{text}}} {bit}\n" for text, bit in lines)
            layouts[now] = (pieces if lines else [], bare)

        def write(prefix: str, result: R) -> str:
            now = current(result)
            pieces, bare = layouts[now if now in known else other]
            return prefix.join(pieces) if prefix else bare

        return write


class _Single(Generic[R]):
    """One unlabelled sample, left out when ``get`` returns None."""

    __slots__ = ("get",)

    def __init__(self, get: Callable[[R], float | None]):
        self.get = get

    def __call__(self, result: R) -> Iterable[tuple[str, float]]:
        value = self.get(result)
        return () if value is None else (("", value),)

    def writer(self, name: str) -> Callable[[str, R], str]:
        get, labelled, bare = self.get, name + "{", name + " "

        def write(prefix: str, result: R) -> str:
            value = get(result)
            if value is None:
                return ""
            if prefix:
                return f"{labelled}{prefix}}} {format_value(value)}\n"
            return f"{bare}{format_value(value)}\n"

        return write


def one_hot(label: str, values: Iterable[str], current: Callable[[R], str | None]) -> Samples[R]:
    """Samples for a state set: one series per possible value, exactly one of them 1."""
    return _OneHot(label, values, current)


def single(get: Callable[[R], float | None]) -> Samples[R]:
    """One unlabelled sample, left out when ``get`` returns None."""
    return _Single(get)


Results = Sequence[tuple[str, R, frozenset[Family[R]]]]


def render(results: Results[R], families: Sequence[Family[R]]) -> str:
    """Write ``families`` for every (label_prefix, result, families it has) triple, grouped by family."""
    return "".join(render_chunks(results, families))


# Targets per piece of a family's text: a piece of 10,000 targets' one-hot states is ~7 MB, held as
# lines, joined and encoded at once (measured: the largest transient of a 10,000-target scrape).
TARGETS_PER_CHUNK = 1000


def render_chunks(results: Results[R], families: Sequence[Family[R]]) -> Iterator[str]:
    """``render`` in pieces (a family's header, then its lines for up to TARGETS_PER_CHUNK targets
    at a time), so a large scrape is never held as one string as well as its encoded bytes."""
    for family in families:
        writer = getattr(family.samples, "writer", None)
        write = writer(family.name) if writer is not None else None
        header = family.header()
        for start in range(0, len(results), TARGETS_PER_CHUNK):
            piece = results[start : start + TARGETS_PER_CHUNK]
            if write is not None:
                body = "".join([write(prefix, result) for prefix, result, present in piece if family in present])
            else:
                body = "".join(_sample_lines(family, piece))
            if body:
                if header:
                    yield header
                    header = ""
                yield body


def _sample_lines(family: Family[R], results: Results[R]) -> Iterator[str]:
    name = family.name
    samples = family.samples
    for prefix, result, present in results:
        if family not in present:
            continue
        for extra, value in samples(result):
            if prefix and extra:
                yield f"{name}{{{prefix},{extra}}} {format_value(value)}\n"
            elif prefix or extra:
                yield f"{name}{{{prefix or extra}}} {format_value(value)}\n"
            else:
                yield f"{name} {format_value(value)}\n"
