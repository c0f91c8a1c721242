"""tcp.mtu_check in the configuration: off by default, for every prober that connects, and a bad value is
one clear line naming the key and the file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config.loader import ConfigError, parse_config

ROOT = Path(__file__).resolve().parent.parent


def test_off_by_default_and_on_for_tcp_and_smtp() -> None:
    config = parse_config(
        """
modules:
  plain: {prober: tcp, timeout: 2s}
  tls: {prober: tcp, timeout: 2s, tcp: {tls: true, mtu_check: true}}
  mail: {prober: smtp, timeout: 5s, tcp: {mtu_check: true}}
""",
        "test.yml",
    )
    assert config.modules["plain"].tcp.mtu_check is False
    assert config.modules["tls"].tcp.mtu_check is True
    assert config.modules["mail"].tcp.mtu_check is True


def test_a_bad_value_is_one_line_naming_it() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config("modules:\n  m: {prober: tcp, tcp: {mtu_check: sometimes}}\n", "bad.yml")
    message = str(raised.value)
    assert "\n" not in message and "mtu_check" in message and "bad.yml" in message, message


def test_check_says_it_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  m: {prober: tcp, tcp: {mtu_check: 3}}\n")
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check", "--config.file", str(config), "--module", "m", "127.0.0.1:9"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 2, done.stderr  # check's exit code for a usage or configuration error
    assert "Traceback" not in done.stderr and "mtu_check" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
