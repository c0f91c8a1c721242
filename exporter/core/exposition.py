"""A small text writer for the per-target probe metrics (Prometheus text format 0.0.4).

prometheus_client costs ~10 µs per sample; with thousands of targets and a dozen series
each that exceeds the whole probing budget of a scrape. Target label sets are escaped
once (``label_prefix``) and each family is written as plain string concatenation.
The exporter's own metrics still go through prometheus_client.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
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
    # Built once (a /probe request writes every family for one result: building writers per request
    # was a fifth of its CPU).
    text_header: str = field(init=False, repr=False)
    write_piece: PieceWriter[R] = field(init=False, repr=False)
    # ``write_piece`` for a piece whose results the caller already passed through ``samples.only_if`` (a scrape
    # filters a chunk once for every family sharing that guard: ``passing``).
    write_passed: PieceWriter[R] = field(init=False, repr=False)
    write_one: Writer[R] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text_header", f"# HELP {self.name} {self.help}\n# TYPE {self.name} {self.type}\n")
        object.__setattr__(self, "write_passed", self.samples.piece_writer(self))
        object.__setattr__(self, "write_piece", _guard_piece(self.write_passed, self.samples.only_if))
        object.__setattr__(self, "write_one", self.samples.writer(self.name))

    def header(self) -> str:
        return self.text_header


# Every family's samples are one of three kinds, each a *writer*: given a family name it returns a
# function (label prefix, result) -> that target's lines, built from pieces prepared once. ``single`` and
# ``one_hot`` precompute their text; ``labelled`` joins labels per sample through ``sample_line``.
# ``only_if`` skips a result at the cost of one test (e.g. results without TLS, most of a large scrape).
Writer = Callable[[str, R], str]
Guard = Callable[[R], bool] | None
# (label prefix, result, the families it has) per target, as the scrape holds them.
Results = Sequence[tuple[str, R, frozenset["Family[R]"]]]
# A family's lines for a run of targets (those whose result lacks the family are skipped).
PieceWriter = Callable[[Results[R]], str]


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
        return self._guarded(self.raw_writer(name))

    def raw_writer(self, name: str) -> Writer[R]:
        """``writer`` without the ``only_if`` test."""
        raise NotImplementedError

    def piece_writer(self, family: Family[R]) -> PieceWriter[R]:
        """The family's lines for a piece of results, ``only_if`` not asked (the caller filtered: ``passing``)."""
        write = self.raw_writer(family.name)

        def write_piece(piece: Results[R]) -> str:
            return "".join([write(prefix, result) for prefix, result, present in piece if family in present])

        return write_piece

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
            write = self._writers[name] = self._guarded(self.raw_writer(name))
        return write

    def raw_writer(self, name: str) -> Writer[R]:
        return self._make_writer(name)[0]

    def piece_writer(self, family: Family[R]) -> PieceWriter[R]:
        # Without a call per target: the target's lines are its label prefix joined into prepared pieces.
        layout = self._make_writer(family.name)[1]

        def write_piece(piece: Results[R]) -> str:
            out: list[str] = []
            for prefix, result, present in piece:
                if family in present:
                    pieces, bare = layout(result)
                    out.append(prefix.join(pieces) if prefix else bare)
            return "".join(out)

        return write_piece

    def _make_writer(self, name: str) -> tuple[Writer[R], Callable[[R], tuple[list[str], str]]]:
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

        def layout(result: R) -> tuple[list[str], str]:
            now = current(result)
            return layouts[now if now in known else other]

        return write, layout


class _Single(Samples[R]):
    """One unlabelled sample, left out when ``get`` returns None."""

    __slots__ = ("get",)

    def __init__(self, get: Callable[[R], float | None], only_if: Guard[R]):
        super().__init__(only_if)
        self.get = get

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        value = self.get(result)
        return () if value is None else (("", value),)

    def raw_writer(self, name: str) -> Writer[R]:
        get, labelled, bare = self.get, name + "{", name + " "

        def write(prefix: str, result: R) -> str:
            value = get(result)
            if value is None:
                return ""
            if prefix:
                return f"{labelled}{prefix}}} {format_value(value)}\n"
            return f"{bare}{format_value(value)}\n"

        return write

    def piece_writer(self, family: Family[R]) -> PieceWriter[R]:
        # The most common family kind, written without a call per sample: the value read and formatted
        # inline (floats and ints, the usual values, without format_value's call).
        get, labelled = self.get, family.name + "{"

        def write_piece(piece: Results[R]) -> str:
            out: list[str] = []
            for prefix, result, present in piece:
                if family in present and (value := get(result)) is not None:
                    kind = value.__class__
                    if kind is float and value - value == 0.0:  # finite
                        text = repr(value)
                    elif kind is int or kind is bool:
                        text = str(int(value))
                    else:
                        text = format_value(value)
                    out.append(f"{labelled}{prefix}}} {text}\n" if prefix else f"{family.name} {text}\n")
            return "".join(out)

        return write_piece


class _Labelled(Samples[R]):
    """Any number of samples, each with the family's own labels: (labels text, value) pairs."""

    __slots__ = ("read",)

    def __init__(self, read: Callable[[R], Iterable[tuple[str, float]]], only_if: Guard[R]):
        super().__init__(only_if)
        self.read = read

    def pairs(self, result: R) -> Iterable[tuple[str, float]]:
        return self.read(result)

    def raw_writer(self, name: str) -> Writer[R]:
        read = self.read

        def write(prefix: str, result: R) -> str:
            return "".join([sample_line(name, prefix, extra, value) for extra, value in read(result)])

        return write


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


def passing(piece: Results[R], only_if: Guard[R]) -> Results[R]:
    """The entries of ``piece`` whose result passes ``only_if`` (all of them without a guard)."""
    if only_if is None:
        return piece
    return [entry for entry in piece if only_if(entry[1])]


def _guard_piece(write_passed: PieceWriter[R], only_if: Guard[R]) -> PieceWriter[R]:
    if only_if is None:
        return write_passed

    def write_piece(piece: Results[R]) -> str:
        return write_passed(passing(piece, only_if))

    return write_piece


def render(results: Results[R], families: Sequence[Family[R]]) -> str:
    """Write ``families`` for every (label_prefix, result, families it has) triple, grouped by family."""
    if len(results) == 1:
        # /probe: one result, written family by family without the chunking (a third of its render time).
        prefix, result, present = results[0]
        out: list[str] = []
        for family in families:
            if family in present and (body := family.write_one(prefix, result)):
                out += (family.text_header, body)
        return "".join(out)
    return "".join(render_chunks(results, families))


# Targets per piece of a family's text: a piece of 10,000 targets' one-hot states is ~7 MB, held as
# lines, joined and encoded at once (measured: the largest transient of a 10,000-target scrape).
TARGETS_PER_CHUNK = 1000


def render_chunks(results: Results[R], families: Sequence[Family[R]]) -> Iterator[str]:
    """``render`` in pieces (a family's header, then its lines for up to TARGETS_PER_CHUNK targets
    at a time), so a large scrape is never held as one string as well as its encoded bytes."""
    for family in families:
        write_piece = family.write_piece
        header = family.text_header
        for start in range(0, len(results), TARGETS_PER_CHUNK):
            body = write_piece(
                results if len(results) <= TARGETS_PER_CHUNK else results[start : start + TARGETS_PER_CHUNK]
            )
            if body:
                if header:
                    yield header
                    header = ""
                yield body
