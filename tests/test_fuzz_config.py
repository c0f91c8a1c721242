"""Property-based: any YAML document gives a Config or one-line errors, never another exception."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exporter.config.loader import Config, ConfigError, parse_config

KEYS = [
    "global",
    "modules",
    "targets",
    "prober",
    "timeout",
    "tcp",
    "target",
    "module",
    "labels",
    "tcp_connect",
    "preferred_ip_protocol",
    "ip_protocol_fallback",
    "source_ip_address",
    "max_concurrency",
    "scrape_timeout_offset",
    "default_scrape_timeout",
    "smtp",
    "site",
    "__x",
    "1a",
]
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True),
    st.sampled_from(
        [
            "tcp",
            "smtp",
            "5s",
            "250ms",
            "0s",
            "1h",
            "ip4",
            "ip6",
            "127.0.0.1:1",
            "[::1]:25",
            "::1",
            "x:0",
            "a.example:65536",
            "localhost",
            "tcp_connect",
        ]
    ),
    st.text(max_size=20),
)
DOCUMENTS = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), children, max_size=5),
    ),
    max_leaves=30,
)


def check(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.yml")
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert line.startswith("fuzz.yml: ")
            assert "\n" not in line
            assert "Traceback" not in line
    else:
        assert isinstance(config, Config)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_structured_documents(document):
    check(yaml.safe_dump(document, allow_unicode=True))


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.sampled_from(KEYS), DOCUMENTS, max_size=3))
def test_top_level_mappings(document):
    check(yaml.safe_dump({"modules": {"m": {"prober": "tcp"}}, **document}))


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_arbitrary_text(text):
    check(text)
