"""Reading exposition text back with prometheus_client's own parser."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    """{(sample name, frozenset of label pairs): value} for every sample in ``text``."""
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    wanted = frozenset(labels.items())
    matches = [v for (n, lab), v in samples(text).items() if n == name and wanted <= lab]
    if len(matches) != 1:
        raise AssertionError(f"{len(matches)} samples of {name} match {labels}")
    return matches[0]


def state_of(text: str, family: str = "probe_tcp_state", **labels: str) -> str:
    """The one state whose one-hot series is 1."""
    wanted = frozenset(labels.items())
    on = [dict(lab)["state"] for (n, lab), v in samples(text).items() if n == family and wanted <= lab and v == 1]
    if len(on) != 1:
        raise AssertionError(f"expected exactly one {family} at 1 for {labels}, got {on}")
    return on[0]
