"""The per-target text writer (exporter.exposition): the fast writers of ``single``/``one_hot`` give
byte-for-byte the text of the generic sample loop, and large expositions with hostile label
values read back exactly through prometheus_client's parser and pass ``promtool check metrics``."""

from __future__ import annotations

import math
import random
import subprocess

from hypothesis import given, settings
from hypothesis import strategies as st

from exporter.core.exposition import Family, format_value, label_prefix, labelled, one_hot, render, single
from exporter.probers.connect.metrics import COMMON_FAMILIES, TCP_FAMILIES
from exporter.probers.connect.result import ProbeResult, TcpState
from tests.helpers.configs import require_binary
from tests.helpers.metrics_text import samples

FAMILIES = COMMON_FAMILIES + TCP_FAMILIES
# A one-hot family whose current value can fall outside its set (then every series is 0).
ODD = Family(
    "probe_test_phase",
    "gauge",
    "Test family.",
    one_hot("phase", ["a", 'q"uote', "back\\slash"], lambda r: r.detail or None),
)
SPARSE = Family("probe_test_optional", "gauge", "Left out when None.", single(lambda r: r.details))
ALL = (*FAMILIES, ODD, SPARSE)


def generic(family: Family) -> Family:
    """The same family through the generic labelled writer (its samples as pairs, not its fast writer)."""
    return Family(
        family.name, family.type, family.help, labelled(lambda result, samples=family.samples: samples(result))
    )


floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 5))
results = st.builds(
    lambda success, state, connect, duration, protocol, phase, optional: _result(
        success, state, connect, duration, protocol, phase, optional
    ),
    st.booleans(),
    st.sampled_from(list(TcpState)),
    st.one_of(st.none(), floats),
    floats,
    st.sampled_from([0, 4, 6]),
    st.sampled_from(["", "a", 'q"uote', "back\\slash", "other"]),
    st.one_of(st.none(), floats),
)
label_values = st.text(max_size=20)


def _result(success, state, connect, duration, protocol, phase, optional) -> ProbeResult:
    result = ProbeResult(
        success=success,
        state=state,
        tcp_state=state,
        connect_seconds=connect,
        duration_seconds=duration,
        ip_protocol=protocol,
        detail=phase,
    )
    result.details = optional
    return result


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(label_values, results, st.booleans()), max_size=12))
def test_fast_writers_match_the_generic_loop(entries):
    triples = []
    for index, (note, result, with_labels) in enumerate(entries):
        prefix = label_prefix([("target", f"t{index}"), ("note", note)]) if with_labels else ""
        # Some targets lack some families, as targets of different probers do.
        present = frozenset(ALL if index % 3 else FAMILIES)
        triples.append((prefix, result, present))
    assert render(triples, ALL) == _generic_render(triples)


def _generic_render(triples) -> str:
    """Render with every family swapped for its generic twin, presence mapped accordingly."""
    twins = {family: generic(family) for family in ALL}
    return render(
        [(prefix, result, frozenset(twins[f] for f in present)) for prefix, result, present in triples],
        [twins[family] for family in ALL],
    )


def test_format_value():
    assert [format_value(v) for v in (0, 1, True, False, 4, -3)] == ["0", "1", "1", "0", "4", "-3"]
    assert [format_value(v) for v in (0.0, -0.0, 0.5, 1e-07, 1.5e300, 0.1 + 0.2)] == [
        "0.0",
        "-0.0",
        "0.5",
        "1e-07",
        "1.5e+300",
        "0.30000000000000004",
    ]
    assert [format_value(v) for v in (math.nan, math.inf, -math.inf)] == ["NaN", "+Inf", "-Inf"]


def large_exposition(count: int, seed: int) -> tuple[str, list[tuple[dict, ProbeResult]]]:
    """``count`` targets with random label values (quotes, backslashes, newlines, any Unicode)."""
    rng = random.Random(seed)
    alphabet = ['"', "\\", "\n", "\t", " ", "{", "}", ",", "=", "é", "☃", "\U0001f600", "a", "Z", "0"]
    expected, triples = [], []
    for index in range(count):
        labels = {
            "target": f"10.{index // 250}.{index % 250}.1:{rng.randint(1, 65535)}",
            "module": "tcp_connect",
            "note": "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12))),
        }
        state = rng.choice(list(TcpState))
        result = ProbeResult(
            success=state is TcpState.OPEN,
            state=state,
            tcp_state=state,
            connect_seconds=None if state is TcpState.DNS_ERROR else rng.random() / 100,
            duration_seconds=rng.random(),
            ip_protocol=rng.choice([4, 6]),
        )
        triples.append((label_prefix(list(labels.items())), result, frozenset(FAMILIES)))
        expected.append((labels, result))
    return render(triples, FAMILIES), expected


def test_large_exposition_reads_back_exactly():
    text, expected = large_exposition(2000, seed=7)
    parsed = samples(text)
    for labels, result in expected:
        key = frozenset(labels.items())
        assert parsed[("probe_success", key)] == (1 if result.success else 0)
        assert parsed[("probe_duration_seconds", key)] == result.duration_seconds
        assert parsed[("probe_ip_protocol", key)] == result.ip_protocol
        connect = parsed.get(("probe_tcp_connect_duration_seconds", key))
        assert connect == result.connect_seconds
        states = {state.value: parsed[("probe_tcp_state", key | {("state", state.value)})] for state in TcpState}
        assert states == {state.value: (1 if state is result.tcp_state else 0) for state in TcpState}
    assert len(parsed) == sum(10 + (r.connect_seconds is not None) for _, r in expected)


def test_large_exposition_passes_promtool():
    promtool = require_binary("promtool")
    text, _ = large_exposition(5000, seed=11)
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, (check.stdout + check.stderr)[:2000]
