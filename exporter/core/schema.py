"""A small schema language for strict YAML configuration files.

A section is a mapping of key -> ``Field`` (a parser and a default). Parsers take (value, path, errors) and
return the parsed value or ``INVALID`` after recording one line ``{file}: {path}: {problem}``, so every problem
in a file is reported at once. Used by the main configuration, each prober's own sections and the web config.
"""

from __future__ import annotations

import enum
import ipaddress
import os
import re
import ssl
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Generic, TypeVar

from exporter.core.configfile import FileProblem, read_bounded
from exporter.core.durations import parse_duration


class Invalid(enum.Enum):
    """The type of ``INVALID``: one member, so ``value is INVALID`` narrows ``T | Invalid`` to ``T``."""

    INVALID = "INVALID"


REQUIRED = object()
INVALID: Final = Invalid.INVALID  # what a parser returns after recording its problem


class Unreadable(enum.Enum):
    """The type of ``UNREADABLE``: a file that could not be read (its module is marked unusable)."""

    UNREADABLE = "UNREADABLE"


UNREADABLE: Final = Unreadable.UNREADABLE  # the field gets a stand-in; exporter/config/unusable.py
MAX_SMALL_FILE_BYTES = 1024 * 1024


class Errors:
    """The problems found in one file, each one line naming the file and the key path."""

    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []
        self.warnings: list[str] = []
        # (path, problem) of each file a module names that cannot be read: not an error at load, the
        # module's probes fail instead (exporter/config/unusable.py); ``--config.check`` reports them as errors.
        self.unreadable: list[tuple[str, str]] = []

    def add(self, path: str, problem: str) -> Invalid:
        self.lines.append(self._line(path, problem))
        return INVALID

    def unreadable_file(self, path: str, problem: str) -> None:
        """A file named at ``path`` cannot be read (missing, permissions): recorded, not an error."""
        self.unreadable.append((path, problem))

    def unreadable_lines(self) -> tuple[str, ...]:
        """One line per unreadable file, in the form of an error line (for ``--config.check``)."""
        return tuple(self._line(path, problem) for path, problem in self.unreadable)

    def warn(self, path: str, problem: str) -> None:
        """Something that loads but that a person should know about (logged once at load)."""
        self.warnings.append(self._line(path, problem))

    def _line(self, path: str, problem: str) -> str:
        line = f"{self.source}: {path}: {problem}" if path else f"{self.source}: {problem}"
        return line.replace("\r", "\\r").replace("\n", "\\n")


Parser = Callable[[Any, str, Errors], Any]


@dataclass(frozen=True)
class Field:
    parse: Parser
    default: Any = REQUIRED


Built = TypeVar("Built", covariant=True)


@dataclass(frozen=True)
class Section(Generic[Built]):
    """A configuration section: its fields and the (frozen dataclass) type they build.

    The type's ``__post_init__`` may raise ValueError for rules across fields; the message becomes the
    section's error line."""

    fields: Mapping[str, Field]
    build: Callable[..., Built]

    def parse(self, raw: Any, path: str, errs: Errors) -> Built | Invalid:
        values = section(raw, path, self.fields, errs)
        if values is INVALID:
            return INVALID
        try:
            return self.build(**values)
        except ValueError as exc:
            return errs.add(path, str(exc))


def kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        bytes: "binary data",
        type(None): "nothing (null)",
    }.get(type(value), type(value).__name__)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}\Z")


def join(path: str, key: Any) -> str:
    """``path.key``, or ``path['odd key']`` when the key could make the path ambiguous or span lines."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
    return f"{path}[{shown}]"


def unknown_keys(raw: dict[Any, Any], path: str, allowed: Iterable[str], errs: Errors) -> list[Any]:
    """Record one error per key of ``raw`` not in ``allowed``; return those keys."""
    allowed = list(allowed)
    unknown = [key for key in raw if key not in allowed]
    for key in unknown:
        errs.add(join(path, key), f"unknown key (valid keys: {', '.join(allowed)})")
    return unknown


def section(raw: Any, path: str, fields: Mapping[str, Field], errs: Errors) -> dict[str, Any] | Invalid:
    """The parsed values of a mapping with exactly these keys (unknown keys are errors)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return errs.add(path, f"expected a mapping, got {kind(raw)}")
    out: dict[str, Any] = {}
    unknown_keys(raw, path, fields, errs)
    for key, spec in fields.items():
        if key in raw:
            out[key] = spec.parse(raw[key], join(path, key), errs)
        elif spec.default is REQUIRED:
            out[key] = errs.add(join(path, key), "missing required key")
        else:
            out[key] = spec.default
    if any(value is INVALID for value in out.values()):
        return INVALID
    return out


def subsection(spec: Section[object]) -> Parser:
    return spec.parse


def raw(value: Any, path: str, errs: Errors) -> Any:
    """Taken as it is: parsed later, once what it depends on is known."""
    return value


def string(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a non-empty string, got {kind(value)}")
    return value


def boolean(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, bool):
        return errs.add(path, f"expected true or false, got {kind(value)}")
    return value


def choice(*choices: str) -> Parser:
    def parse(value: Any, path: str, errs: Errors) -> Any:
        if value not in choices:
            return errs.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    return parse


def duration(minimum: float, maximum: float) -> Parser:
    def parse(value: Any, path: str, errs: Errors) -> Any:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            return errs.add(path, str(exc))
        if not minimum <= seconds <= maximum:
            return errs.add(path, f"duration {value} is out of range {minimum:g}s to {maximum:g}s")
        return seconds

    return parse


def integer(minimum: int, maximum: int) -> Parser:
    def parse(value: Any, path: str, errs: Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return errs.add(path, f"expected an integer, got {kind(value)}")
        if not minimum <= value <= maximum:
            return errs.add(path, f"{value} is out of range {minimum} to {maximum}")
        return value

    return parse


def ip_address(value: Any, path: str, errs: Errors) -> Any:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return errs.add(path, f"{value!r} is not an IP address")


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def regex(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a regular expression, got {kind(value)}")
    try:
        # Searched in a whole multi-line text (e.g. a greeting): ^ and $ match at each line.
        return re.compile(value, re.MULTILINE)
    except re.error as exc:
        return errs.add(path, f"invalid regular expression {value!r}: {exc.msg} at position {exc.pos}")


def token(what: str, example: str, pattern: re.Pattern[str]) -> Parser:
    """A word sent on a protocol command line, matching ``pattern``."""

    def parse(value: Any, path: str, errs: Errors) -> Any:
        if not isinstance(value, str) or not pattern.match(value):
            shown = repr(value) if isinstance(value, str) else kind(value)
            return errs.add(
                path, f"expected {what} like {example} (printable ASCII, no spaces or angle brackets), got {shown}"
            )
        return value

    return parse


def list_of(item: Parser) -> Parser:
    def parse(value: Any, path: str, errs: Errors) -> Any:
        if not isinstance(value, list) or not value:
            return errs.add(path, f"expected a non-empty list, got {kind(value)}")
        items = [item(element, f"{path}[{index}]", errs) for index, element in enumerate(value)]
        return INVALID if any(i is INVALID for i in items) else tuple(items)

    return parse


# --- values read from files named in a configuration ----------------------------------------


@dataclass(frozen=True, slots=True)
class Secret:
    """A password read from a file: compared and hashed by value, never shown by ``repr``/``str``."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class PemFile:
    """A CA bundle read (and checked) at load time, so a reload picks up a changed file."""

    path: str
    text: str = field(repr=False)


def small_file(what: str) -> Parser:
    """The UTF-8 text of a file of at most 1 MiB, relative to the config file as Prometheus does."""

    def parse(value: Any, path: str, errs: Errors) -> Any:
        if not isinstance(value, str) or not value:
            return errs.add(path, f"expected a file path, got {kind(value)}")
        location = value
        if not os.path.isabs(value) and os.path.isfile(errs.source):
            location = os.path.join(os.path.dirname(errs.source), value)
        try:
            return read_bounded(location, MAX_SMALL_FILE_BYTES, f"{what} {value!r}")
        except FileProblem as problem:
            if problem.unreadable:
                errs.unreadable_file(path, problem.reason)
                return UNREADABLE
            return errs.add(path, problem.reason)

    return parse


def ca_file(value: Any, path: str, errs: Errors) -> Any:
    text = small_file("CA file")(value, path, errs)
    if text is INVALID:
        return INVALID
    if text is UNREADABLE:
        return None  # the system store stands in: the module is never probed (exporter/config/unusable.py)
    try:
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):
        return errs.add(path, f"CA file {value!r} holds no valid PEM certificate")
    return PemFile(value, text)


def password_file(value: Any, path: str, errs: Errors) -> Any:
    text = small_file("password file")(value, path, errs)
    if text is INVALID:
        return INVALID
    if text is UNREADABLE:
        return Secret("")  # a stand-in: the module is never probed (exporter/config/unusable.py)
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        return errs.add(path, f"password file {value!r} must hold the password on one line")
    return Secret(password)
