"""Per-target counters and histograms of continuous probing, stored compactly and written as text.

10,000 continuous targets each carry three histograms and a counter per outcome state, so the
storage is two flat arrays per target (``array('q')`` for every count, ``array('d')`` for the
histograms' sums), laid out by a ``Layout`` that all targets of a module share. Bucket counts are
kept per bucket and made cumulative only when written.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate

from exporter.core.exposition import escape_label_value

# Upper bounds in seconds; every bound costs one series per continuous target, so the default is three
# bounds, each separating a physical regime of a connect: up to 10 ms a LAN, a metro network or the same
# region; up to 100 ms a continent; up to 1 s the other side of the world or a satellite hop; above 1 s
# the first SYN (or its SYN-ACK) was lost and retransmitted (Linux's initial RTO is 1 s). A module
# that needs more resolution lists its own (histogram_buckets.connect).
DEFAULT_CONNECT_BUCKETS = (0.01, 0.1, 1.0)
# An SMTP greeting is often delayed on purpose (anti-spam "greet pause", 5-30 s) and may take
# longer under load; RFC 5321 4.5.3.2.1 lets a client wait 5 minutes for it.
DEFAULT_BANNER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
DEFAULT_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
MAX_BUCKETS = 40
# Histograms a continuous target has unless its module lists others (``histograms:``): connect time only.
HISTOGRAM_NAMES = ("connect", "banner", "duration")
DEFAULT_HISTOGRAMS = ("connect",)


@dataclass(frozen=True, slots=True)
class HistogramBuckets:
    """Bucket upper bounds (seconds, increasing; +Inf is implicit) of a module's three histograms, and
    which of them its continuous targets have (``histograms``, a subset of ``HISTOGRAM_NAMES``)."""

    connect: tuple[float, ...] = DEFAULT_CONNECT_BUCKETS
    banner: tuple[float, ...] = DEFAULT_BANNER_BUCKETS
    duration: tuple[float, ...] = DEFAULT_DURATION_BUCKETS
    histograms: tuple[str, ...] = DEFAULT_HISTOGRAMS


def _le(bound: float) -> str:
    return repr(float(bound))


class Layout:
    """Where each count lives in a target's arrays, for one set of states and buckets.

    counts: [state 0 .. state S-1, state changes, skipped ticks, successes, connect buckets + overflow,
    banner buckets + overflow, duration buckets + overflow]; sums: [connect, banner, duration].
    A histogram the module does not have keeps only its overflow slot and is neither counted nor written.
    """

    __slots__ = (
        "states",
        "state_index",
        "fallback_state",
        "bounds",
        "hist_base",
        "size",
        "le_texts",
        "with_banner",
        "written",
        "state_texts",
    )

    def __init__(self, states: Sequence[str], buckets: HistogramBuckets, with_banner: bool, fallback_state: str):
        self.states = tuple(states)
        self.state_index = {state: index for index, state in enumerate(self.states)}
        self.fallback_state = self.state_index[fallback_state]
        self.with_banner = with_banner and "banner" in buckets.histograms
        self.written = (
            "connect" in buckets.histograms,
            self.with_banner,
            "duration" in buckets.histograms,
        )
        self.bounds = tuple(
            bounds if written else ()
            for bounds, written in zip((buckets.connect, buckets.banner, buckets.duration), self.written, strict=True)
        )
        bases, offset = [], len(self.states) + 3
        for bounds in self.bounds:
            bases.append(offset)
            offset += len(bounds) + 1
        self.hist_base = tuple(bases)
        self.size = offset
        self.le_texts = tuple(tuple(f'le="{_le(b)}"' for b in bounds) + ('le="+Inf"',) for bounds in self.bounds)
        self.state_texts = tuple(f'state="{escape_label_value(state)}"' for state in self.states)


CONNECT, BANNER, DURATION = 0, 1, 2


class TargetTally:
    """Everything counted for one continuous target since it was configured (or the exporter started)."""

    __slots__ = ("layout", "counts", "sums", "last_state", "consecutive_failures")

    def __init__(self, layout: Layout):
        self.layout = layout
        self.counts = array("q", bytes(8 * layout.size))
        self.sums = array("d", bytes(8 * 3))
        self.last_state = -1
        self.consecutive_failures = 0

    def observe(self, state: str, success: bool, connect: float | None, banner: float | None, duration: float) -> None:
        layout, counts = self.layout, self.counts
        index = layout.state_index.get(state, layout.fallback_state)
        counts[index] += 1
        if self.last_state >= 0 and index != self.last_state:
            counts[len(layout.states)] += 1
        self.last_state = index
        if success:
            counts[len(layout.states) + 2] += 1
            self.consecutive_failures = 0
        else:
            self.consecutive_failures += 1
        written = layout.written
        if connect is not None and written[CONNECT]:
            self._observe(CONNECT, connect)
        if banner is not None and written[BANNER]:
            self._observe(BANNER, banner)
        if written[DURATION]:
            self._observe(DURATION, duration)

    def _observe(self, which: int, value: float) -> None:
        layout = self.layout
        # bisect_left: a value equal to a bound belongs to that bucket (le is "less than or equal").
        self.counts[layout.hist_base[which] + bisect_left(layout.bounds[which], value)] += 1
        self.sums[which] += value

    def relaid(self, layout: Layout) -> TargetTally:
        """A tally for new buckets: the state counters carry over (same states), the histograms restart."""
        fresh = TargetTally(layout)
        if layout.states == self.layout.states:
            keep = len(layout.states) + 3
            fresh.counts[:keep] = self.counts[:keep]
            fresh.last_state, fresh.consecutive_failures = self.last_state, self.consecutive_failures
        return fresh

    def skip(self) -> None:
        self.counts[len(self.layout.states) + 1] += 1

    # --- reading ------------------------------------------------------------------------------

    def state_count(self, state: str) -> int:
        return self.counts[self.layout.state_index[state]]

    @property
    def total(self) -> int:
        return sum(self.counts[: len(self.layout.states)])

    @property
    def state_changes(self) -> int:
        return self.counts[len(self.layout.states)]

    @property
    def skipped(self) -> int:
        return self.counts[len(self.layout.states) + 1]

    def buckets(self, which: int) -> list[int]:
        """Per-bucket (not cumulative) counts of one histogram, the overflow bucket last."""
        base = self.layout.hist_base[which]
        return list(self.counts[base : base + len(self.layout.bounds[which]) + 1])

    def window_counts(self) -> array[int]:
        """What the status page compares over time: state counts and the connect histogram."""
        end = self.layout.hist_base[CONNECT] + len(self.layout.bounds[CONNECT]) + 1
        return self.counts[:end]


def quantile(q: float, bounds: Sequence[float], per_bucket: Sequence[int]) -> float | None:
    """``histogram_quantile`` as Prometheus computes it: linear inside the bucket, the highest finite
    bound for the overflow bucket; None without observations."""
    total = sum(per_bucket)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for index, count in enumerate(per_bucket):
        if count and seen + count >= rank:
            if index == len(bounds):
                return bounds[-1]
            lower = bounds[index - 1] if index else 0.0
            return lower + (bounds[index] - lower) * (rank - seen) / count
        seen += count
    return bounds[-1]


# --- exposition -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HistogramFamily:
    name: str
    help: str
    which: int


RESULTS_HELP = "Background probes of a continuous target since the exporter started, by outcome state."
CHANGES_HELP = "Times a continuous target's outcome state differed from its previous probe's (flaps)."
SKIPPED_HELP = (
    "Scheduled probes of a continuous target not started because its previous probe "
    "was still running (a probe never overlaps itself); absent until one is skipped."
)
CONSECUTIVE_HELP = "Failed background probes in a row of a continuous target (0 after a success)."
HISTOGRAMS = (
    HistogramFamily(
        "probe_tcp_connect_time_seconds",
        "TCP connect time of a continuous target's successful connects, in seconds.",
        CONNECT,
    ),
    HistogramFamily(
        "probe_smtp_banner_time_seconds",
        "Time from connect to the complete SMTP greeting of a continuous target, in seconds.",
        BANNER,
    ),
    HistogramFamily(
        "probe_total_time_seconds", "Duration of a continuous target's whole background probe, in seconds.", DURATION
    ),
)
FAMILY_NAMES = (
    "probe_results_total",
    "probe_state_changes_total",
    "probe_skipped_total",
    "probe_consecutive_failures",
    *(family.name for family in HISTOGRAMS),
)

Tallied = Sequence[tuple[str, TargetTally]]  # (escaped label prefix, tally)
TARGETS_PER_CHUNK = 1000
_Writer = Callable[[str, TargetTally], str]  # (label prefix, tally) -> its lines of one family


def _chunked(tallies: Tallied, header: str, write: _Writer) -> Iterator[str]:
    for start in range(0, len(tallies), TARGETS_PER_CHUNK):
        body = "".join(
            [text for prefix, tally in tallies[start : start + TARGETS_PER_CHUNK] if (text := write(prefix, tally))]
        )
        if body:
            if header:
                yield header
                header = ""
            yield body


def _header(name: str, kind: str, help_text: str) -> str:
    return f"# HELP {name} {help_text}\n# TYPE {name} {kind}\n"


def _results(prefix: str, tally: TargetTally) -> str:
    counts = tally.counts
    return "".join(
        [f"probe_results_total{{{prefix},{text}}} {counts[i]}\n" for i, text in enumerate(tally.layout.state_texts)]
    )


def _changes(prefix: str, tally: TargetTally) -> str:
    return f"probe_state_changes_total{{{prefix}}} {tally.counts[len(tally.layout.states)]}\n"


def _skipped(prefix: str, tally: TargetTally) -> str:
    # Absent until a tick is skipped: a skip needs a probe that outlasts its interval, which a
    # healthy target with timeout < interval never has, so a zero here would be a series per
    # target that says nothing.
    count = tally.counts[len(tally.layout.states) + 1]
    return f"probe_skipped_total{{{prefix}}} {count}\n" if count else ""


def _consecutive(prefix: str, tally: TargetTally) -> str:
    return f"probe_consecutive_failures{{{prefix}}} {tally.consecutive_failures}\n"


def tally_families() -> list[tuple[str, str, _Writer]]:
    """(name, header, writer) of every counter and histogram family of continuous targets, in order; a
    writer gives one target's lines (or nothing). Several processes' lines of a family join under one header."""
    return [
        ("probe_results_total", _header("probe_results_total", "counter", RESULTS_HELP), _results),
        ("probe_state_changes_total", _header("probe_state_changes_total", "counter", CHANGES_HELP), _changes),
        ("probe_skipped_total", _header("probe_skipped_total", "counter", SKIPPED_HELP), _skipped),
        ("probe_consecutive_failures", _header("probe_consecutive_failures", "gauge", CONSECUTIVE_HELP), _consecutive),
        *(
            (family.name, _header(family.name, "histogram", family.help), _histogram_writer(family))
            for family in HISTOGRAMS
        ),
    ]


def render_tallies(tallies: Tallied) -> Iterator[str]:
    """The counter and histogram families of continuous targets, family by family, in pieces."""
    if not tallies:
        return
    for _, header, write in tally_families():
        yield from _chunked(tallies, header, write)


def _histogram_writer(family: HistogramFamily) -> _Writer:
    which = family.which
    bucket, total, count = family.name + "_bucket{", family.name + "_sum{", family.name + "_count{"

    def write(prefix: str, tally: TargetTally) -> str:
        layout = tally.layout
        if not layout.written[which]:
            return ""
        base = layout.hist_base[which]
        les = layout.le_texts[which]
        cumulative = list(accumulate(tally.counts[base : base + len(les)]))
        lines = [f"{bucket}{prefix},{le}}} {n}\n" for le, n in zip(les, cumulative, strict=False)]
        lines.append(f"{total}{prefix}}} {tally.sums[which]!r}\n{count}{prefix}}} {cumulative[-1]}\n")
        return "".join(lines)

    return write
