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


# Every family's samples are one of three kinds, each a *writer*: given a family name it returns a
# function (label prefix, result) -> that target's lines, built from pieces prepared once. ``single`` and
# ``one_hot`` precompute their text; ``labelled`` joins labels per sample through ``sample_line``.
# ``only_if`` skips a result at the cost of one test (e.g. results without TLS, most of a large scrape).
Writer = Callable[[str, R], str]
Guard = Callable[[R], bool] | None


def sample_line(name: str, prefix: str, extra: str, value: float) -> str:
    """One sample: the target's label prefix and the family's own labels joined, then the value."""
    if prefix and extra:
        return f"{name}{{{prefix},{extra}}} {format_value(value)}\n"
    if prefix or extra:
        return f"{name}{{{prefix or extra}}} {format_value(value)}\n"
    return f"{name} {format_value(value)}\n"


class Samples(Generic[R]):
    """How a family reads its samples from a result, and writes them."""

    __slots__ = ("only_if",)

    def __init__(self, only_if: Guard[R]):
        self.only_if = only_if

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        """(the family's own labels, value) per sample; for readers other than the text writer."""
        raise NotImplementedError

    def writer(self, name: str) -> Writer[R]:
        raise NotImplementedError

    def __call__(self, result: R) -> Iterable[tuple[str, float]]:
        if self.only_if is not None and not self.only_if(result):
            return ()
        return self.pairs(result)

    def _guarded(self, write: Writer[R]) -> Writer[R]:
        only_if = self.only_if
        if only_if is None:
            return write

        def guarded(prefix: str, result: R) -> str:
            return write(prefix, result) if only_if(result) else ""

        return guarded


class _OneHot(Samples[R]):
    """A state set: one series per possible value, exactly one of them 1."""

    __slots__ = ("rendered", "current", "_known", "_writers")

    def __init__(self, label: str, values: Iterable[str], current: Callable[[R], str | None], only_if: Guard[R]):
        super().__init__(only_if)
        self.rendered = [(value, f'{label}="{escape_label_value(value)}"') for value in values]
        self.current = current
        self._known = frozenset(value for value, _ in self.rendered)
        self._writers: dict[str, Writer[R]] = {}

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        now = self.current(result)
        return [(text, 1 if value == now else 0) for value, text in self.rendered]

    def writer(self, name: str) -> Writer[R]:
        write = self._writers.get(name)
        if write is None:
            write = self._writers[name] = self._guarded(self._make_writer(name))
        return write

    def _make_writer(self, name: str) -> Writer[R]:
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


class _Single(Samples[R]):
    """One unlabelled sample, left out when ``get`` returns None."""

    __slots__ = ("get",)

    def __init__(self, get: Callable[[R], float | None], only_if: Guard[R]):
        super().__init__(only_if)
        self.get = get

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        value = self.get(result)
        return () if value is None else (("", value),)

    def writer(self, name: str) -> Writer[R]:
        get, labelled, bare = self.get, name + "{", name + " "

        def write(prefix: str, result: R) -> str:
            value = get(result)
            if value is None:
                return ""
            if prefix:
                return f"{labelled}{prefix}}} {format_value(value)}\n"
            return f"{bare}{format_value(value)}\n"

        return self._guarded(write)


class _Labelled(Samples[R]):
    """Any number of samples, each with the family's own labels: (labels text, value) pairs."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[R], Iterable[tuple[str, float]]], only_if: Guard[R]):
        super().__init__(only_if)
        self.read = read

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        return self.read(result)

    def writer(self, name: str) -> Writer[R]:
        read = self.read

        def write(prefix: str, result: R) -> str:
            return "".join([sample_line(name, prefix, extra, value) for extra, value in read(result)])

        return self._guarded(write)


def one_hot(
    label: str, values: Iterable[str], current: Callable[[R], str | None], only_if: Guard[R] = None
) -> Samples[R]:
    """A state set: one series per possible value, exactly one of them 1 (all 0 for a value outside)."""
    return _OneHot(label, values, current, only_if)


def single(get: Callable[[R], float | None], only_if: Guard[R] = None) -> Samples[R]:
    """One unlabelled sample, left out when ``get`` returns None."""
    return _Single(get, only_if)


def labelled(read: Callable[[R], Iterable[tuple[str, float]]], only_if: Guard[R] = None) -> Samples[R]:
    """Samples with the family's own labels, as ``('a="x",b="y"', value)`` pairs (values escaped)."""
    return _Labelled(read, only_if)


def current_only(label: str, current: Callable[[R], str | None], only_if: Guard[R] = None) -> Samples[R]:
    """A state set too large or open for one-hot: only the current value's series, at 1 (absent: no
    value). A one-hot family would write a 0 series for every other value on every target."""

    def read(result: R) -> Iterable[tuple[str, float]]:
        now = current(result)
        return () if now is None else ((f'{label}="{escape_label_value(now)}"', 1),)

    return _Labelled(read, only_if)


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
        write = family.samples.writer(family.name)
        header = family.header()
        for start in range(0, len(results), TARGETS_PER_CHUNK):
            piece = results[start : start + TARGETS_PER_CHUNK]
            body = "".join([write(prefix, result) for prefix, result, present in piece if family in present])
            if body:
                if header:
                    yield header
                    header = ""
                yield body
