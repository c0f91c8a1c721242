"""Config loading: one small invalid file per rule, each with its exact message."""

from __future__ import annotations

from pathlib import Path

import pytest

from exporter.config.loader import ConfigError, load_config, parse_config

INVALID = sorted((Path(__file__).parent / "configs" / "invalid").glob("*.yml"))
ROOT = Path(__file__).parent.parent


def expected_errors(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [
        line.removeprefix("# expect: ").replace("{file}", str(path)) for line in lines if line.startswith("# expect: ")
    ]


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_config_reports_exact_errors(path: Path):
    expected = expected_errors(path)
    assert expected, f"{path.name} has no '# expect:' line"
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.errors == expected


def test_example_config_is_valid():
    config = load_config(str(ROOT / "config.example.yml"))
    assert {t.module for t in config.targets} <= set(config.modules)
    assert len(config.targets) >= 2


def test_config_is_typed_and_immutable():
    config = parse_config("""
modules:
  tcp_connect:
    prober: tcp
    timeout: 1m30s
    tcp: {preferred_ip_protocol: ip6, ip_protocol_fallback: false, source_ip_address: "::1"}
targets:
  - {target: "db.example.com:5432", module: tcp_connect, labels: {site: hq, rack: 12}}
  - {target: "[::1]:25", module: tcp_connect}
""")
    module = config.modules["tcp_connect"]
    assert module.timeout == 90.0
    assert module.tcp.preferred_ip_protocol == "ip6"
    assert module.tcp.ip_protocol_fallback is False
    assert module.tcp.source_ip_address == "::1"
    first, second = config.targets
    assert (first.address.host, first.address.port, first.labels) == (
        "db.example.com",
        5432,
        (("site", "hq"), ("rack", "12")),
    )
    assert (second.address.host, second.address.port, str(second.address)) == ("::1", 25, "[::1]:25")
    with pytest.raises(AttributeError):
        module.timeout = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.modules["other"] = module  # type: ignore[index]


def test_same_target_with_two_modules_is_not_a_duplicate():
    config = parse_config("""
modules: {a: {prober: tcp}, b: {prober: tcp, timeout: 1s}}
targets:
  - {target: "h.example:1", module: a}
  - {target: "h.example:1", module: b}
""")
    assert len(config.targets) == 2


def test_unreadable_file_is_one_line(tmp_path):
    missing = tmp_path / "nope.yml"
    with pytest.raises(ConfigError) as caught:
        load_config(str(missing))
    assert caught.value.errors == [f"{missing}: cannot read the config file: No such file or directory"]


def test_non_utf8_file(tmp_path):
    path = tmp_path / "latin1.yml"
    path.write_bytes(b"modules: {m: {prober: tcp}}\n# caf\xe9\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.errors == [f"{path}: the config file is not UTF-8 text (byte 33)"]
