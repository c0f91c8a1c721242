"""Small configurations and tool checks shared by the tests."""

from __future__ import annotations

import shutil

import pytest

from exporter.config.loader import Config, parse_config


def tcp_config(*targets: str, timeout: str = "2s", extra: str = "") -> Config:
    lines = "\n".join(f"  - {{target: '{t}', module: tcp_connect}}" for t in targets)
    return parse_config(
        f"""
modules:
  tcp_connect: {{prober: tcp, timeout: {timeout}}}
{extra}
targets:
{lines}
""",
        "test.yml",
    )


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package 'prometheus' provides it; .ci/run installs it)")
    return path
