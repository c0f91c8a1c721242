"""Strict loading of the YAML configuration into typed, immutable objects.

Every problem is reported at once, each as one line naming the file, the path
inside it (``targets[3].module``) and what is wrong; unknown keys are errors.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import socket
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from exporter.address import AddressError, HostPort, is_host_name, parse_host_port
from exporter import yamlload
from exporter.durations import parse_duration
from exporter.histogram import (DEFAULT_BANNER_BUCKETS, DEFAULT_CONNECT_BUCKETS, DEFAULT_DURATION_BUCKETS,
                                MAX_BUCKETS, HistogramBuckets)

MAX_CONFIG_BYTES = 16 * 1024 * 1024
MAX_LABEL_VALUE_LENGTH = 1024
LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
MODULE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
# Labels the exporter or Prometheus set themselves; a user label of that name would clash.
RESERVED_LABELS = frozenset({"target", "module", "state", "stage", "capability", "mechanism", "version", "code",
                             "instance", "job", "le", "quantile"})


class ConfigError(Exception):
    """The configuration is invalid; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]):
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True, slots=True)
class TcpSettings:
    preferred_ip_protocol: str = "ip4"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None


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


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: PemFile | None = None       # None: the system's trust store
    server_name: str | None = None       # None: the target's host
    insecure_skip_verify: bool = False


@dataclass(frozen=True, slots=True)
class SmtpAuth:
    username: str
    password: Secret
    mechanism: str = "auto"              # auto | plain | login


@functools.cache
def local_fqdn() -> str:
    """This host's FQDN, the default EHLO name; looked up once, at the first load that needs it."""
    return socket.getfqdn() or "localhost"


DEFAULT_TEST_SUBJECT = "connectivity_exporter test message"
DEFAULT_TEST_BODY = "This message was sent by connectivity_exporter to test mail delivery.\n"


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    ehlo: str | None = None              # None: this host's FQDN (filled in at load)
    expect_banner: re.Pattern | None = None
    starttls: str = "opportunistic"      # no | opportunistic | required (ignored with tls: true)
    tls: bool = False                    # implicit TLS from the first byte (port 465)
    tls_config: TlsConfig = TlsConfig()
    mail_from: str | None = None
    rcpt_to: str | None = None
    send_test_message: bool = False
    subject: str = DEFAULT_TEST_SUBJECT
    body: str = DEFAULT_TEST_BODY
    auth: SmtpAuth | None = None

    def __post_init__(self) -> None:
        if self.ehlo is None:
            object.__setattr__(self, "ehlo", local_fqdn())
        if self.rcpt_to and not self.mail_from:
            raise ValueError("rcpt_to needs mail_from (the envelope starts with MAIL FROM)")
        if self.send_test_message and not (self.mail_from and self.rcpt_to):
            raise ValueError("send_test_message needs mail_from and rcpt_to")
        if "\n" in self.subject or "\r" in self.subject:
            raise ValueError("subject must be a single line")
        if self.auth is not None and not (self.tls or self.starttls == "required"):
            raise ValueError("auth needs an encrypted session: set starttls: required or tls: true")

    @property
    def encrypted(self) -> bool:
        return self.tls or self.starttls != "no"


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    prober: str
    timeout: float = 5.0
    tcp: TcpSettings = TcpSettings()
    smtp: SmtpSettings | None = None     # set for prober: smtp
    # Continuous probing (docs/continuous.md): probe every `interval` seconds in the background.
    interval: float | None = None
    histogram_buckets: HistogramBuckets | None = None


@dataclass(frozen=True, slots=True)
class TargetConfig:
    address: HostPort
    module: str
    labels: tuple[tuple[str, str], ...] = ()
    interval: float | None = None        # continuous probing; overrides the module's interval


DEFAULT_MAX_CONCURRENCY = 512
DEFAULT_SCRAPE_TIMEOUT_OFFSET = 0.5
DEFAULT_SCRAPE_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class GlobalSettings:
    # Probes in flight at once, across all scrapes (each holds a socket).
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    # Subtracted from Prometheus' scrape timeout so the reply arrives before it gives up.
    scrape_timeout_offset: float = DEFAULT_SCRAPE_TIMEOUT_OFFSET
    # Used when a request carries no X-Prometheus-Scrape-Timeout-Seconds header.
    default_scrape_timeout: float = DEFAULT_SCRAPE_TIMEOUT


@dataclass(frozen=True, slots=True)
class RateLimit:
    requests_per_second: float
    burst: int


@dataclass(frozen=True, slots=True)
class ProbeAccess:
    """What GET /probe may be asked to probe. Each restriction applies only when it is set."""
    allowed_modules: frozenset[str] | None = None
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    allowed_hosts: tuple[str, ...] = ()  # glob patterns, lower case
    allowed_ports: tuple[tuple[int, int], ...] = ()
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Config:
    modules: Mapping[str, Module]
    targets: tuple[TargetConfig, ...] = ()
    settings: GlobalSettings = GlobalSettings()
    source: str = "<config>"
    probe_access: ProbeAccess | None = None  # None: /probe may probe anything (blackbox_exporter's default)


SMTP_PORT = 25
SMTPS_PORT = 465


def default_port(module: Module) -> int | None:
    """Port used when a target leaves it out (None: the port is required)."""
    if module.smtp is not None:
        return SMTPS_PORT if module.smtp.tls else SMTP_PORT
    return None


# --- a tiny schema language -------------------------------------------------------------

_REQUIRED = object()
_INVALID = object()


class _Errors:
    def __init__(self, source: str):
        self.source = source
        self.lines: list[str] = []

    def add(self, path: str, problem: str) -> object:
        line = f"{self.source}: {path}: {problem}" if path else f"{self.source}: {problem}"
        self.lines.append(line.replace("\r", "\\r").replace("\n", "\\n"))
        return _INVALID


Parser = Callable[[Any, str, _Errors], Any]


@dataclass(frozen=True)
class Field:
    parse: Parser
    default: Any = _REQUIRED


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]{1,100}\Z")


def _join(path: str, key: Any) -> str:
    """``path.key``, or ``path['odd key']`` when the key could make the path ambiguous or span lines."""
    if isinstance(key, str) and _PLAIN_KEY.match(key):
        return f"{path}.{key}" if path else key
    shown = repr(key) if len(repr(key)) <= 60 else repr(key)[:57] + "..."
    return f"{path}[{shown}]"


def _section(raw: Any, path: str, fields: Mapping[str, Field], errs: _Errors) -> dict[str, Any] | object:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return errs.add(path, f"expected a mapping, got {_kind(raw)}")
    out: dict[str, Any] = {}
    for key in raw:
        if key not in fields:
            errs.add(_join(path, key), f"unknown key (valid keys: {', '.join(fields)})")
    for key, spec in fields.items():
        if key in raw:
            out[key] = spec.parse(raw[key], _join(path, key), errs)
        elif spec.default is _REQUIRED:
            out[key] = errs.add(_join(path, key), "missing required key")
        else:
            out[key] = spec.default
    if any(value is _INVALID for value in out.values()):
        return _INVALID
    return out


def _string(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a non-empty string, got {_kind(value)}")
    return value


def _boolean(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, bool):
        return errs.add(path, f"expected true or false, got {_kind(value)}")
    return value


def _choice(*choices: str) -> Parser:
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        if value not in choices:
            return errs.add(path, f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    return parse


def _duration(minimum: float, maximum: float) -> Parser:
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        try:
            seconds = parse_duration(value)
        except ValueError as exc:
            return errs.add(path, str(exc))
        if not minimum <= seconds <= maximum:
            return errs.add(path, f"duration {value} is out of range {minimum:g}s to {maximum:g}s")
        return seconds
    return parse


def _integer(minimum: int, maximum: int) -> Parser:
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            return errs.add(path, f"expected an integer, got {_kind(value)}")
        if not minimum <= value <= maximum:
            return errs.add(path, f"{value} is out of range {minimum} to {maximum}")
        return value
    return parse


def _ip_address(value: Any, path: str, errs: _Errors) -> Any:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return errs.add(path, f"{value!r} is not an IP address")


def _labels(value: Any, path: str, errs: _Errors) -> Any:
    if value is None:
        return ()
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping of label names to values, got {_kind(value)}")
    labels, ok = [], True
    for name, label_value in value.items():
        where = _join(path, name)
        if not isinstance(name, str) or not LABEL_NAME.match(name) or name.startswith("__"):
            ok = errs.add(where, f"invalid label name {name!r}: use letters, digits and underscores, "
                                 "not starting with a digit or '__'") is None
        elif name in RESERVED_LABELS:
            ok = errs.add(where, f"label name {name!r} is reserved (set by the exporter or Prometheus)") is None
        elif isinstance(label_value, bool) or not isinstance(label_value, (str, int)):
            ok = errs.add(where, f"expected a string label value, got {_kind(label_value)}") is None
        elif len(str(label_value)) > MAX_LABEL_VALUE_LENGTH:
            ok = errs.add(where, f"label value is longer than {MAX_LABEL_VALUE_LENGTH} characters") is None
        else:
            labels.append((name, str(label_value)))
    return tuple(labels) if ok else _INVALID


def _regex(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a regular expression, got {_kind(value)}")
    try:
        # Searched in the whole greeting, one line per reply line: ^ and $ match at each line.
        return re.compile(value, re.MULTILINE)
    except re.error as exc:
        return errs.add(path, f"invalid regular expression {value!r}: {exc.msg} at position {exc.pos}")


def _token(what: str, example: str, pattern: re.Pattern) -> Parser:
    """A printable-ASCII word sent on an SMTP command line: no spaces, controls or angle brackets."""
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(value, str) or not pattern.match(value):
            shown = repr(value) if isinstance(value, str) else _kind(value)
            return errs.add(path, f"expected {what} like {example} (printable ASCII, no spaces or "
                                  f"angle brackets), got {shown}")
        return value
    return parse


_SMTP_WORD = re.compile(r"[!-;=?-~]{1,254}\Z")  # printable ASCII minus '<' and '>'


def _starttls(value: Any, path: str, errs: _Errors) -> Any:
    # YAML 1.1 reads an unquoted `no` as false; accept it as the word it was meant to be.
    return _choice("no", "opportunistic", "required")("no" if value is False else value, path, errs)


def _read_small_file(value: Any, path: str, errs: _Errors, what: str) -> str | object:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a file path, got {_kind(value)}")
    location = value
    if not os.path.isabs(value) and os.path.isfile(errs.source):
        location = os.path.join(os.path.dirname(errs.source), value)  # relative to the config file, as Prometheus does
    try:
        with open(location, "rb") as handle:
            data = handle.read(1024 * 1024 + 1)
    except OSError as exc:
        return errs.add(path, f"cannot read {what} {value!r}: {exc.strerror or exc}")
    if len(data) > 1024 * 1024:
        return errs.add(path, f"{what} {value!r} is larger than 1 MiB")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return errs.add(path, f"{what} {value!r} is not UTF-8 text")


def _ca_file(value: Any, path: str, errs: _Errors) -> Any:
    text = _read_small_file(value, path, errs, "CA file")
    if text is _INVALID:
        return _INVALID
    try:
        ssl.create_default_context(cadata=text)
    except (ssl.SSLError, ValueError):
        return errs.add(path, f"CA file {value!r} holds no valid PEM certificate")
    return PemFile(value, text)


def _password_file(value: Any, path: str, errs: _Errors) -> Any:
    text = _read_small_file(value, path, errs, "password file")
    if text is _INVALID:
        return _INVALID
    password = text.rstrip("\r\n")
    if not password or "\n" in password:
        return errs.add(path, f"password file {value!r} must hold the password on one line")
    return Secret(password)


def _subsection(fields: Mapping[str, Field], build: Callable[..., Any]) -> Parser:
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        parsed = _section(value, path, fields, errs)
        return _INVALID if parsed is _INVALID else build(**parsed)
    return parse


def _server_name(value: Any, path: str, errs: _Errors) -> Any:
    if isinstance(value, str) and (is_host_name(value) or _is_ip(value)):
        return value
    return errs.add(path, f"{value!r} is not a host name or IP address to verify the certificate against")


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


TCP_FIELDS = {
    "preferred_ip_protocol": Field(_choice("ip4", "ip6"), "ip4"),
    "ip_protocol_fallback": Field(_boolean, True),
    "source_ip_address": Field(_ip_address, None),
}
TLS_CONFIG_FIELDS = {
    "ca_file": Field(_ca_file, None),
    "server_name": Field(_server_name, None),
    "insecure_skip_verify": Field(_boolean, False),
}
AUTH_FIELDS = {
    "username": Field(_string),
    "password_file": Field(_password_file),
    "mechanism": Field(_choice("auto", "plain", "login"), "auto"),
}
SMTP_FIELDS = {
    "ehlo": Field(_token("a host name", "probe.example.com", _SMTP_WORD), None),
    "expect_banner": Field(_regex, None),
    "starttls": Field(_starttls, "opportunistic"),
    "tls": Field(_boolean, False),
    "tls_config": Field(_subsection(TLS_CONFIG_FIELDS, TlsConfig), TlsConfig()),
    "mail_from": Field(_token("a mail address", "probe@example.com", _SMTP_WORD), None),
    "rcpt_to": Field(_token("a mail address", "postmaster@example.com", _SMTP_WORD), None),
    "send_test_message": Field(_boolean, False),
    "subject": Field(_string, DEFAULT_TEST_SUBJECT),
    "body": Field(_string, DEFAULT_TEST_BODY),
    "auth": Field(_subsection(AUTH_FIELDS, lambda username, password_file, mechanism:
                              SmtpAuth(username, password_file, mechanism)), None),
}
# Prober name -> the module sections it reads, each with its fields and the class it builds.
PROBER_SECTIONS: dict[str, dict[str, tuple[Mapping[str, Field], type]]] = {
    "tcp": {"tcp": (TCP_FIELDS, TcpSettings)},
    "smtp": {"tcp": (TCP_FIELDS, TcpSettings), "smtp": (SMTP_FIELDS, SmtpSettings)},
}


# --- continuous probing (docs/continuous.md) ---------------------------------------------------

MIN_INTERVAL, MAX_INTERVAL = 0.1, 86400.0


def _bucket_bounds(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, list) or not value:
        return errs.add(path, "expected a non-empty list of increasing upper bounds in seconds, "
                              f"such as [0.001, 0.01, 0.1], got {_kind(value)}")
    if len(value) > MAX_BUCKETS:
        return errs.add(path, f"{len(value)} buckets are more than {MAX_BUCKETS} (each costs a series per target)")
    bounds: list[float] = []
    for index, bound in enumerate(value):
        where = f"{path}[{index}]"
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not 0 < bound < float("inf"):
            hint = ""
            if isinstance(bound, str) and re.fullmatch(r"[0-9]+[eE][-+]?[0-9]+", bound):
                hint = " (YAML reads an exponent without a decimal point as text: write 0.00002, not 2e-05)"
            return errs.add(where, f"expected a number of seconds above 0, got {bound!r}{hint}")
        if bounds and bound <= bounds[-1]:
            return errs.add(where, f"{bound!r} is not above the previous bound {bounds[-1]!r} (bounds must increase)")
        bounds.append(float(bound))
    return tuple(bounds)


HISTOGRAM_BUCKET_FIELDS = {
    "connect": Field(_bucket_bounds, DEFAULT_CONNECT_BUCKETS),
    "banner": Field(_bucket_bounds, DEFAULT_BANNER_BUCKETS),
    "duration": Field(_bucket_bounds, DEFAULT_DURATION_BUCKETS),
}
CONTINUOUS_MODULE_FIELDS = {
    "interval": Field(_duration(MIN_INTERVAL, MAX_INTERVAL), None),
    "histogram_buckets": Field(lambda value, path, errs: value, None),
}


def _histogram_buckets(raw: Any, prober: str, path: str, errs: _Errors) -> Any:
    if raw is None:
        return None
    if isinstance(raw, dict) and "banner" in raw and prober != "smtp":
        return errs.add(_join(path, "banner"), f"not used by prober {prober!r} (only the smtp prober reads a banner)")
    fields = _section(raw, path, HISTOGRAM_BUCKET_FIELDS, errs)
    return _INVALID if fields is _INVALID else HistogramBuckets(**fields)

# --- end of continuous probing -------------------------------------------------------------------


MODULE_FIELDS = {
    "prober": Field(_choice(*PROBER_SECTIONS)),
    "timeout": Field(_duration(0.001, 600.0), 5.0),
    **CONTINUOUS_MODULE_FIELDS,
    **{section: Field(lambda value, path, errs: value, None)
       for sections in PROBER_SECTIONS.values() for section in sections},
}
GLOBAL_FIELDS = {
    "max_concurrency": Field(_integer(1, 100_000), DEFAULT_MAX_CONCURRENCY),
    "scrape_timeout_offset": Field(_duration(0.0, 60.0), DEFAULT_SCRAPE_TIMEOUT_OFFSET),
    "default_scrape_timeout": Field(_duration(0.001, 600.0), DEFAULT_SCRAPE_TIMEOUT),
}
TARGET_FIELDS = {
    "target": Field(_string),
    "module": Field(_string),
    "labels": Field(_labels, ()),
    "interval": Field(_duration(MIN_INTERVAL, MAX_INTERVAL), None),  # continuous probing
}
def _list_of(item: Parser) -> Parser:
    def parse(value: Any, path: str, errs: _Errors) -> Any:
        if not isinstance(value, list) or not value:
            return errs.add(path, f"expected a non-empty list, got {_kind(value)}")
        items = [item(element, f"{path}[{index}]", errs) for index, element in enumerate(value)]
        return _INVALID if any(i is _INVALID for i in items) else tuple(items)
    return parse


def _network(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, str):
        return errs.add(path, f"expected a network such as 10.0.0.0/8 or 2001:db8::/32, got {_kind(value)}")
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        try:
            loose = ipaddress.ip_network(value, strict=False)
        except ValueError:
            return errs.add(path, f"{value!r} is not a network such as 10.0.0.0/8 or 2001:db8::/32")
        return errs.add(path, f"{value!r} has host bits set; did you mean {loose}?")


def _host_pattern(value: Any, path: str, errs: _Errors) -> Any:
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.*?-]{1,253}", value):
        return errs.add(path, f"invalid host name pattern {value!r}: use letters, digits, '.', '-', '_' "
                              "and the wildcards '*' and '?'")
    return value.lower()


def _port_range(value: Any, path: str, errs: _Errors) -> Any:
    text = str(value) if isinstance(value, int) and not isinstance(value, bool) else value
    match = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", text) if isinstance(text, str) else None
    low, high = (int(match.group(1)), int(match.group(2) or match.group(1))) if match else (0, 0)
    if not match or not 1 <= low <= high <= 65535:
        return errs.add(path, f"invalid port or port range {value!r}: expected e.g. 25 or \"1024-2048\" within 1-65535")
    return (low, high)


RATE_LIMIT_FIELDS = {
    "requests_per_second": Field(lambda v, p, e: v if isinstance(v, (int, float)) and not isinstance(v, bool)
                                 and 0 < v <= 1e6 else e.add(p, f"expected a number above 0, got {v!r}")),
    "burst": Field(_integer(1, 1_000_000), None),
}
PROBE_ACCESS_FIELDS = {
    "allowed_modules": Field(_list_of(_string), None),
    "allowed_networks": Field(_list_of(_network), ()),
    "allowed_hosts": Field(_list_of(_host_pattern), ()),
    "allowed_ports": Field(_list_of(_port_range), ()),
    "rate_limit": Field(lambda value, path, errs: value, None),
}
TOP_FIELDS = {
    "global": Field(lambda value, path, errs: value, None),
    "modules": Field(lambda value, path, errs: value),
    "targets": Field(lambda value, path, errs: value, None),
    "probe_access": Field(lambda value, path, errs: value, None),
}


def _probe_access(raw: Any, modules: Mapping[str, Module], modules_ok: bool, errs: _Errors) -> Any:
    if raw is None:
        return None
    fields = _section(raw, "probe_access", PROBE_ACCESS_FIELDS, errs)
    if fields is _INVALID:
        return _INVALID
    rate_limit = None
    if fields["rate_limit"] is not None:
        rate = _section(fields["rate_limit"], "probe_access.rate_limit", RATE_LIMIT_FIELDS, errs)
        if rate is _INVALID:
            return _INVALID
        burst = rate["burst"] if rate["burst"] is not None else max(1, int(rate["requests_per_second"]))
        rate_limit = RateLimit(float(rate["requests_per_second"]), burst)
    allowed_modules = fields["allowed_modules"]
    if allowed_modules is not None:
        for index, name in enumerate(allowed_modules):
            if modules_ok and name not in modules:
                errs.add(f"probe_access.allowed_modules[{index}]",
                         f"unknown module {name!r} (defined: {', '.join(sorted(modules))})")
        allowed_modules = frozenset(allowed_modules)
    return ProbeAccess(allowed_modules, fields["allowed_networks"], fields["allowed_hosts"],
                       fields["allowed_ports"], rate_limit)


def _module(name: Any, raw: Any, errs: _Errors) -> Module | object:
    path = _join("modules", name)
    if not isinstance(name, str) or not MODULE_NAME.match(name):
        return errs.add(path, f"invalid module name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    fields = _section(raw, path, MODULE_FIELDS, errs)
    if fields is _INVALID:
        return _INVALID
    prober = fields["prober"]
    settings: dict[str, Any] = {}
    for section in MODULE_FIELDS.keys() - {"prober", "timeout", *CONTINUOUS_MODULE_FIELDS}:
        owned = PROBER_SECTIONS[prober].get(section)
        if owned is None:
            if fields[section] is not None:
                errs.add(_join(path, section), f"not used by prober {prober!r}; remove it or change the prober")
            continue
        section_fields, cls = owned
        parsed = _section(fields[section], _join(path, section), section_fields, errs)
        settings[section] = _INVALID if parsed is _INVALID else _build(cls, parsed, _join(path, section), errs)
    buckets = _histogram_buckets(fields["histogram_buckets"], prober, _join(path, "histogram_buckets"), errs)
    if buckets is _INVALID or any(value is _INVALID for value in settings.values()):
        return _INVALID
    return Module(name=name, prober=prober, timeout=fields["timeout"], interval=fields["interval"],
                  histogram_buckets=buckets, **settings)


def _build(cls: type, values: dict[str, Any], path: str, errs: _Errors) -> Any:
    """Construct a settings object; its ``__post_init__`` may raise ValueError for cross-field rules."""
    try:
        return cls(**values)
    except ValueError as exc:
        return errs.add(path, str(exc))


def _targets(raw: Any, modules: Mapping[str, Module], modules_ok: bool, errs: _Errors) -> list[TargetConfig]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        errs.add("targets", f"expected a list, got {_kind(raw)}")
        return []
    targets: list[TargetConfig] = []
    seen: dict[tuple[str, str], int] = {}
    for index, item in enumerate(raw):
        path = f"targets[{index}]"
        fields = _section(item, path, TARGET_FIELDS, errs)
        if fields is _INVALID:
            continue
        module = modules.get(fields["module"])
        if module is None:
            if modules_ok:
                errs.add(f"{path}.module", f"unknown module {fields['module']!r} "
                                           f"(defined: {', '.join(sorted(modules)) or 'none'})")
            continue
        try:
            address = parse_host_port(fields["target"], default_port(module))
        except AddressError as exc:
            errs.add(f"{path}.target", str(exc))
            continue
        key = (str(address), module.name)
        if key in seen:
            errs.add(path, f"duplicate target {str(address)!r} with module {module.name!r} "
                           f"(first at targets[{seen[key]}])")
            continue
        seen[key] = index
        targets.append(TargetConfig(address=address, module=module.name, labels=fields["labels"],
                                    interval=fields["interval"]))
    return targets


def load_yaml(text: str, source: str) -> Any:
    """Parse YAML safely and strictly (duplicate keys are errors); a syntax error is one ConfigError line."""
    try:
        return yamlload.load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{source}: {where}invalid YAML: {problem}"]) from None


def read_config_text(path: str, what: str = "config file") -> str:
    """The file's text, bounded in size and required to be UTF-8; problems are one ConfigError line."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read the {what}: {exc.strerror or exc}"]) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: the {what} is larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB"])
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: the {what} is not UTF-8 (byte {exc.start})"]) from None


def parse_config(text: str, source: str = "<config>") -> Config:
    errs = _Errors(source)
    raw = load_yaml(text, source)
    if raw is None:
        raise ConfigError([f"{source}: the file is empty; it needs at least a 'modules' section"])
    top = _section(raw, "", TOP_FIELDS, errs)
    if top is _INVALID:
        raise ConfigError(errs.lines)

    settings = _section(top["global"], "global", GLOBAL_FIELDS, errs)
    modules: dict[str, Module] = {}
    modules_ok = True
    if not isinstance(top["modules"], dict) or not top["modules"]:
        errs.add("modules", f"expected a mapping of module names to modules, got {_kind(top['modules'])}"
                 if not isinstance(top["modules"], dict) else "define at least one module")
        modules_ok = False
    else:
        for name, raw_module in top["modules"].items():
            module = _module(name, raw_module, errs)
            if module is _INVALID:
                modules_ok = False
            else:
                modules[name] = module
    targets = _targets(top["targets"], modules, modules_ok, errs)
    probe_access = _probe_access(top["probe_access"], modules, modules_ok, errs)
    if errs.lines:
        raise ConfigError(errs.lines)
    return Config(modules=MappingProxyType(modules), targets=tuple(targets),
                  settings=GlobalSettings(**settings), source=source, probe_access=probe_access)


def load_config(path: str) -> Config:
    return parse_config(read_config_text(path), source=path)
