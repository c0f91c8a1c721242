"""The ``tcp:`` section as the tcp prober reads it: the connect step's keys plus blackbox_exporter's
``query_response``, ``tls`` and ``tls_config``.

Semantics kept from blackbox_exporter (config/config.go, prober/query_response.go):
- a step may hold ``expect`` (a regular expression searched in each received line),
  ``expect_bytes``, ``send`` (a line; ``${1}``/``${name}`` expand the step's own ``expect``
  groups), ``starttls`` and ``labels`` (``probe_expect_info``, values expanded the same way);
- ``expect`` and ``expect_bytes`` are mutually exclusive;
- payloads may be ``!!binary``; regular expressions work on bytes with ASCII classes, as Go's do.
Stricter than blackbox_exporter, each a clear load-time error instead of a probe that can never work:
an empty step, ``labels`` without ``expect``, ``starttls`` on a connection that is already TLS
(``tls: true``), ``cert_file`` without ``key_file``.
"""

from __future__ import annotations

import functools
import os
import re
import ssl
from dataclasses import dataclass, field
from typing import Any

from exporter.core import schema
from exporter.core.schema import INVALID, Errors, Field, Section
from exporter.probers.connect.settings import TCP_FIELDS, TcpSettings
from exporter.probers.tcp import goregex

LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*\Z")
# The names the exporter sets itself on probe_expect_info (and Prometheus' own).
RESERVED_EXPECT_LABELS = frozenset({"target", "module", "instance", "job", "step"})
STEP_KEYS = ("expect", "expect_bytes", "send", "starttls", "labels")
TLS_CONFIG_KEYS = (
    "ca_file",
    "cert_file",
    "key_file",
    "server_name",
    "insecure_skip_verify",
    "min_version",
    "max_version",
)
# prometheus/common's names for TLS versions.
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
MAX_STEPS = 100
MAX_PAYLOAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class DialogueStep:
    """One ``query_response`` entry; each part is optional and runs in this order."""

    expect: re.Pattern[bytes] | None = None
    expect_bytes: bytes | None = None
    labels: tuple[tuple[str, bytes], ...] = ()  # (name, value template)
    send: bytes | None = None
    starttls: bool = False
    expect_text: str | None = None  # the regex as written (``expect`` may be translated from Go)

    def describe(self) -> str:
        """What the step waits for or does, for a person (the regex as written)."""
        parts = []
        if self.expect is not None:
            parts.append(f"expect {self.expect_text!r}")
        if self.expect_bytes is not None:
            parts.append(f"expect_bytes ({len(self.expect_bytes)} bytes)")
        if self.send is not None:
            parts.append("send")
        if self.starttls:
            parts.append("starttls")
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class TcpTlsConfig:
    """``tls_config`` of a tcp module (prometheus/common's TLS keys that make sense for a client probe)."""

    ca_file: str | None = None  # None: the system's trust store
    ca_text: str | None = field(default=None, repr=False, compare=True)
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # None: the target's host
    insecure_skip_verify: bool = False
    min_version: str | None = None  # TLS10 .. TLS13
    max_version: str | None = None


def _payload(value: Any, path: str, errs: Errors, what: str) -> Any:
    """A string (sent as UTF-8) or ``!!binary`` bytes; numbers are taken as written, as Go's YAML does."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes) or not value:
        return errs.add(path, f"expected {what} (a string or !!binary), got {schema.kind(value)}")
    if len(value) > MAX_PAYLOAD_BYTES:
        return errs.add(path, f"{what} is longer than {MAX_PAYLOAD_BYTES} bytes")
    return value


def _expect(value: Any, path: str, errs: Errors) -> Any:
    pattern = _payload(value, path, errs, "a regular expression")
    if not isinstance(pattern, bytes):
        return pattern
    try:
        return re.compile(goregex.translate(pattern))
    except re.error as exc:
        shown = pattern.decode("utf-8", "backslashreplace")
        return errs.add(path, f"invalid regular expression {shown!r}: {exc.msg} at position {exc.pos}")


def _expect_labels(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, list) or not value:
        return errs.add(path, f"expected a non-empty list of {{name, value}} mappings, got {schema.kind(value)}")
    labels: list[tuple[str, bytes]] = []
    before = len(errs.lines)
    for index, item in enumerate(value):
        where = f"{path}[{index}]"
        if not isinstance(item, dict) or set(item) - {"name", "value"} or "name" not in item:
            errs.add(where, "expected a mapping with keys name and value")
            continue
        name = item["name"]
        if not isinstance(name, str) or not LABEL_NAME.match(name) or name.startswith("__"):
            errs.add(
                f"{where}.name",
                f"invalid label name {name!r}: use letters, digits and underscores, not starting with a digit or '__'",
            )
        elif name in RESERVED_EXPECT_LABELS:
            errs.add(f"{where}.name", f"label name {name!r} is reserved (set by the exporter or Prometheus)")
        elif name in (seen for seen, _ in labels):
            errs.add(f"{where}.name", f"duplicate label name {name!r}")
        else:
            template = (
                _payload(item.get("value", ""), f"{where}.value", errs, "a label value")
                if item.get("value", "") != ""
                else b""
            )
            if isinstance(template, bytes):
                labels.append((name, template))
    return tuple(labels) if len(errs.lines) == before else INVALID


def _step(value: Any, path: str, errs: Errors) -> Any:
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping with keys {', '.join(STEP_KEYS)}, got {schema.kind(value)}")
    before = len(errs.lines)
    schema.unknown_keys(value, path, STEP_KEYS, errs)
    parsed: dict[str, Any] = {}
    if "expect" in value:
        parsed["expect"] = _expect(value["expect"], f"{path}.expect", errs)
        if isinstance(parsed["expect"], re.Pattern):
            written = value["expect"]
            parsed["expect_text"] = (
                written
                if isinstance(written, str)
                else bytes(written).decode("utf-8", "backslashreplace")
                if isinstance(written, bytes)
                else str(written)
            )
    if "expect_bytes" in value:
        parsed["expect_bytes"] = _payload(value["expect_bytes"], f"{path}.expect_bytes", errs, "bytes to expect")
    if "send" in value:
        parsed["send"] = _payload(value["send"], f"{path}.send", errs, "a line to send")
    if "starttls" in value:
        parsed["starttls"] = schema.boolean(value["starttls"], f"{path}.starttls", errs)
    if "labels" in value:
        parsed["labels"] = _expect_labels(value["labels"], f"{path}.labels", errs)
    if len(errs.lines) > before:
        return INVALID
    if "expect" in parsed and "expect_bytes" in parsed:
        return errs.add(path, "expect and expect_bytes are mutually exclusive")
    if "labels" in parsed and "expect" not in parsed:
        return errs.add(path, "labels need expect (their values are expanded from its match)")
    if not (parsed.keys() & {"expect", "expect_bytes", "send"}) and not parsed.get("starttls"):
        return errs.add(path, "empty step: give expect, expect_bytes, send or starttls: true")
    return DialogueStep(**parsed)


def parse_query_response(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return ()
    if not isinstance(value, list):
        return errs.add(path, f"expected a list of steps, got {schema.kind(value)}")
    if len(value) > MAX_STEPS:
        return errs.add(path, f"more than {MAX_STEPS} steps")
    before = len(errs.lines)
    steps = [_step(item, f"{path}[{index}]", errs) for index, item in enumerate(value)]
    return tuple(steps) if len(errs.lines) == before else INVALID


def _read_file(value: Any, path: str, errs: Errors, what: str) -> Any:
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a file path, got {schema.kind(value)}")
    location = value
    if not os.path.isabs(value) and os.path.isfile(errs.source):
        location = os.path.join(os.path.dirname(errs.source), value)  # relative to the config file
    try:
        with open(location, "rb") as handle:
            data = handle.read(1024 * 1024 + 1)
    except OSError as exc:
        # Not a config error: the module loads and its probes fail (exporter/config/unusable.py), as
        # blackbox_exporter does for a file that exists only on another machine.
        errs.unreadable_file(path, f"cannot read {what} {value!r}: {exc.strerror or exc}")
        return schema.UNREADABLE
    if len(data) > 1024 * 1024:
        return errs.add(path, f"{what} {value!r} is larger than 1 MiB")
    try:
        return location, data.decode("utf-8")
    except UnicodeDecodeError:
        return errs.add(path, f"{what} {value!r} is not UTF-8 text")


def parse_tls_config(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return TcpTlsConfig()
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping, got {schema.kind(value)}")
    before, unreadable_before = len(errs.lines), len(errs.unreadable)
    schema.unknown_keys(value, path, TLS_CONFIG_KEYS, errs)
    out: dict[str, Any] = {}
    if "ca_file" in value:
        read = _read_file(value["ca_file"], f"{path}.ca_file", errs, "CA file")
        if isinstance(read, tuple):
            try:
                ssl.create_default_context(cadata=read[1])
                out["ca_file"], out["ca_text"] = value["ca_file"], read[1]
            except (ssl.SSLError, ValueError):
                errs.add(f"{path}.ca_file", f"CA file {value['ca_file']!r} holds no valid PEM certificate")
    for key in ("cert_file", "key_file"):
        if key in value:
            read = _read_file(value[key], f"{path}.{key}", errs, key.replace("_", " "))
            if isinstance(read, tuple):
                out[key] = read[0]
    if "server_name" in value:
        name = value["server_name"]
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,253}", name):
            errs.add(
                f"{path}.server_name", f"{name!r} is not a host name or IP address to verify the certificate against"
            )
        else:
            out["server_name"] = name
    if "insecure_skip_verify" in value:
        out["insecure_skip_verify"] = schema.boolean(
            value["insecure_skip_verify"], f"{path}.insecure_skip_verify", errs
        )
    for key in ("min_version", "max_version"):
        if key in value:
            if value[key] not in TLS_VERSIONS:
                errs.add(f"{path}.{key}", f"expected one of {', '.join(TLS_VERSIONS)}, got {value[key]!r}")
            else:
                out[key] = value[key]
    if len(errs.lines) > before:
        return INVALID
    if (
        "min_version" in out
        and "max_version" in out
        and TLS_VERSIONS[out["min_version"]] > TLS_VERSIONS[out["max_version"]]
    ):
        return errs.add(path, "min_version is above max_version")
    if ("cert_file" in value) != ("key_file" in value):  # as written, whether or not they can be read
        return errs.add(path, "cert_file and key_file go together: give both or neither")
    if len(errs.unreadable) > unreadable_before:
        # A stand-in without the files: the module is never probed, and the check that needs both
        # files (a matching pair) can only run once they can be read.
        return TcpTlsConfig(**{key: item for key, item in out.items() if key not in ("cert_file", "key_file")})
    if "cert_file" in out:
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(out["cert_file"], out["key_file"])
        except (ssl.SSLError, OSError):
            return errs.add(
                path,
                f"cert_file {value['cert_file']!r} and key_file {value['key_file']!r} "
                "are not a matching PEM certificate and private key",
            )
    return TcpTlsConfig(**out)


@dataclass(frozen=True, slots=True)
class TcpProberSettings(TcpSettings):
    """The tcp prober's ``tcp:`` section: the connect step's settings, then the dialogue and TLS."""

    query_response: tuple[DialogueStep, ...] = ()
    tls: bool = False
    tls_config: TcpTlsConfig = TcpTlsConfig()

    def __post_init__(self) -> None:
        if self.tls:
            for index, step in enumerate(self.query_response):
                if step.starttls:
                    raise ValueError(
                        f"query_response[{index}] has starttls: true, but tls: true already "
                        "encrypts from the first byte; remove one of them"
                    )


TCP_PROBER_SECTION = Section(
    {
        **TCP_FIELDS,
        "query_response": Field(parse_query_response, ()),
        "tls": Field(schema.boolean, False),
        "tls_config": Field(parse_tls_config, TcpTlsConfig()),
    },
    TcpProberSettings,
)


@functools.lru_cache(maxsize=64)
def client_context(tls: TcpTlsConfig) -> ssl.SSLContext:
    """The client context for ``tls_config``, built once per settings (the system trust store is slow)."""
    if tls.insecure_skip_verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context(cadata=tls.ca_text) if tls.ca_text else ssl.create_default_context()
    if tls.min_version:
        context.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.max_version:
        context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.cert_file and tls.key_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context
