"""Reading configuration files: bounded in size, UTF-8, YAML parsed strictly.

Every problem is one ``ConfigError`` line naming the file.
"""

from __future__ import annotations

from typing import Any

import yaml

from exporter.core import yamlload

MAX_CONFIG_BYTES = 16 * 1024 * 1024


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


class FileProblem(Exception):
    """A file could not be used; ``reason`` says why in words that name it."""

    def __init__(self, reason: str, unreadable: bool = False):
        super().__init__(reason)
        self.reason = reason
        # True when the file could not be opened or read (missing, permissions): a module naming it
        # still loads and its probes fail (exporter/config/unusable.py); other problems are config errors.
        self.unreadable = unreadable


def read_bounded(path: str, limit: int, subject: str) -> str:
    """The UTF-8 text of ``path``, at most ``limit`` bytes; ``subject`` names it in messages
    ("the config file", "CA file 'ca.pem'")."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(limit + 1)
    except OSError as exc:
        raise FileProblem(f"cannot read {subject}: {exc.strerror or exc}", unreadable=True) from None
    if len(data) > limit:
        size = f"{limit // (1024 * 1024)} MiB" if limit >= 1024 * 1024 else f"{limit} bytes"
        raise FileProblem(f"{subject} is larger than {size}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FileProblem(f"{subject} is not UTF-8 text (byte {exc.start})") from None


def read_config_text(path: str, what: str = "config file") -> str:
    """The file's text; problems are one ConfigError line."""
    try:
        return read_bounded(path, MAX_CONFIG_BYTES, f"the {what}")
    except FileProblem as problem:
        raise ConfigError([f"{path}: {problem.reason}"]) from None


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely and strictly (duplicate keys are errors); a syntax error is one ConfigError line."""
    try:
        return yamlload.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}: {where}invalid YAML: {problem}"]) from None
