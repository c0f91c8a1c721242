"""``--web.config.file``: TLS, basic auth and response headers in Prometheus' exporter-toolkit format.

This module parses and validates; ``exporter.webtls`` builds the SSL context, ``exporter.webauth``
checks passwords and ``exporter.webguard`` applies it all to the application.

The file is parsed as strictly as the main config (unknown keys are errors, every problem reported at
once as ``{file}: {key path}: {problem}``); it is read once at start (no reload: restart to change it).
Secrets (passwords, password hashes, private keys) never appear in an error or a log line.
"""

from __future__ import annotations

import importlib
import os
import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from exporter.core.configfile import ConfigError, load_yaml, read_config_text
from exporter.core.schema import INVALID, Errors, Field, Invalid, boolean, choice, kind, section
from exporter.web.tls import CIPHER_SUITES, CLIENT_AUTH_TYPES, TLS_VERSIONS, TlsSettings, build_ssl_context

# Go accepts a client certificate without verifying it for these two; Python's ssl module always
# verifies a certificate it asks for, so they cannot be honoured and are rejected rather than changed.
UNVERIFIED_CLIENT_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")
HEADER_RULES: dict[str, tuple[str, ...] | None] = {
    "Content-Security-Policy": None,
    "X-Frame-Options": ("deny", "sameorigin"),
    "X-Content-Type-Options": ("nosniff",),
    "X-XSS-Protection": None,
    "Strict-Transport-Security": None,
}
BCRYPT_HASH = re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}\Z")
NOT_SUPPORTED = "is part of the exporter-toolkit format but not supported by connectivity_exporter"


@dataclass(frozen=True)
class WebConfig:
    source: str = "<web config>"
    tls: TlsSettings | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, bytes] = field(default_factory=dict, repr=False)
    ssl_context: ssl.SSLContext | None = None


# --- parsing ------------------------------------------------------------------------------


def _optional_string(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return errs.add(path, f"expected a non-empty string, got {kind(value)}")
    return value


def _secret_string(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        return errs.add(path, "expected a non-empty string")  # never echo a secret's value or type
    return value


def _client_auth_type(value: Any, path: str, errs: Errors) -> Any:
    if value in UNVERIFIED_CLIENT_AUTH_TYPES:
        return errs.add(
            path,
            f"{value} (a client certificate accepted without verification) is not supported: "
            "use RequireAndVerifyClientCert, VerifyClientCertIfGiven or NoClientCert",
        )
    return choice(*CLIENT_AUTH_TYPES)(value, path, errs)


def _string_list(allowed: Mapping[str, Any] | None = None) -> Callable[[Any, str, Errors], Any]:
    def parse(value: Any, path: str, errs: Errors) -> Any:
        if value is None:
            return ()
        if not isinstance(value, list):
            return errs.add(path, f"expected a list of strings, got {kind(value)}")
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item:
                ok = errs.add(f"{path}[{index}]", f"expected a non-empty string, got {kind(item)}") is None
            elif allowed is not None and item not in allowed:
                ok = (
                    errs.add(f"{path}[{index}]", f"unknown cipher suite {item!r} (known: {', '.join(allowed)})") is None
                )
        return tuple(value) if ok else INVALID

    return parse


def _unsupported(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return None
    return errs.add(path, NOT_SUPPORTED)


def _headers(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping of header names to values, got {kind(value)}")
    headers, ok = {}, True
    for name, header_value in value.items():
        where = f"{path}.{name}"
        allowed = HEADER_RULES.get(name)
        if name not in HEADER_RULES:
            ok = errs.add(where, f"unknown header (valid: {', '.join(HEADER_RULES)})") is None
        elif not isinstance(header_value, str) or any(c in header_value for c in "\r\n"):
            ok = errs.add(where, f"expected a one-line string, got {kind(header_value)}") is None
        elif not header_value:
            continue  # blank means unset, as in exporter-toolkit
        elif allowed is not None and header_value.lower() not in allowed:
            ok = errs.add(where, f"expected one of {', '.join(allowed)}, got {header_value!r}") is None
        else:
            headers[name] = header_value
    return headers if ok else INVALID


def _users(value: Any, path: str, errs: Errors) -> Any:
    if value is None:
        return {}
    if not isinstance(value, dict):
        return errs.add(path, f"expected a mapping of user names to bcrypt hashes, got {kind(value)}")
    users, ok = {}, True
    for name, hashed in value.items():
        where = f"{path}.{name}"
        if not isinstance(name, str) or not name or ":" in name:
            ok = errs.add(where, "invalid user name: a non-empty string without ':'") is None
        elif not isinstance(hashed, str) or not BCRYPT_HASH.match(hashed):
            # The value is a secret: say what is expected, never what was found.
            ok = (
                errs.add(
                    where,
                    "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a two-digit cost, "
                    "then 53 characters, e.g. from 'htpasswd -nBC 10 \"\" | tr -d :')",
                )
                is None
            )
        else:
            users[name] = hashed.encode()
    return users if ok else INVALID


TLS_FIELDS = {
    "cert_file": Field(_optional_string, None),
    "key_file": Field(_optional_string, None),
    "cert": Field(_optional_string, None),
    "key": Field(_secret_string, None),
    "client_ca_file": Field(_optional_string, None),
    "client_ca": Field(_optional_string, None),
    "client_auth_type": Field(_client_auth_type, "NoClientCert"),
    "client_allowed_sans": Field(_string_list(), ()),
    "min_version": Field(choice(*TLS_VERSIONS), "TLS12"),
    "max_version": Field(choice(*TLS_VERSIONS), "TLS13"),
    "cipher_suites": Field(_string_list(CIPHER_SUITES), ()),
    "prefer_server_cipher_suites": Field(boolean, True),
    "curve_preferences": Field(_unsupported, None),
}
HTTP_FIELDS = {
    # Only HTTP/1.1 is served; accepted so that toolkit files work unchanged.
    "http2": Field(boolean, True),
    "headers": Field(_headers, {}),
}
TOP_FIELDS = {
    "tls_server_config": Field(lambda value, path, errs: value, None),
    "http_server_config": Field(lambda value, path, errs: value, None),
    "basic_auth_users": Field(_users, {}),
    "rate_limit": Field(_unsupported, None),
}


def _tls(raw: Any, errs: Errors, directory: str) -> TlsSettings | Invalid | None:
    if raw is None:
        return None
    fields = section(raw, "tls_server_config", TLS_FIELDS, errs)
    if fields is INVALID:
        return INVALID
    fields.pop("curve_preferences")
    ok = True
    for inline, file in (("cert", "cert_file"), ("key", "key_file"), ("client_ca", "client_ca_file")):
        if fields[inline] is not None and fields[file] is not None:
            ok = errs.add(f"tls_server_config.{inline}", f"set either {inline} or {file}, not both") is None
        if fields[file] is not None:
            fields[file] = os.path.join(directory, fields[file])  # relative to the web config file
    if (fields["cert"] or fields["cert_file"]) is None:
        ok = errs.add("tls_server_config.cert_file", "missing: a server certificate is required for TLS") is None
    if (fields["key"] or fields["key_file"]) is None:
        ok = errs.add("tls_server_config.key_file", "missing: the certificate's private key is required") is None
    has_ca = (fields["client_ca"] or fields["client_ca_file"]) is not None
    auth = fields["client_auth_type"]
    if auth != "NoClientCert" and not has_ca:
        ok = (
            errs.add(
                "tls_server_config.client_ca_file",
                f"missing: client_auth_type {auth} needs the CA that signs client certificates",
            )
            is None
        )
    if auth == "NoClientCert" and has_ca:
        ok = (
            errs.add(
                "tls_server_config.client_auth_type",
                "a client CA is configured but client_auth_type is "
                "NoClientCert: set RequireAndVerifyClientCert to check client certificates",
            )
            is None
        )
    if fields["client_allowed_sans"] and auth != "RequireAndVerifyClientCert":
        ok = (
            errs.add("tls_server_config.client_allowed_sans", "needs client_auth_type RequireAndVerifyClientCert")
            is None
        )
    if TLS_VERSIONS[fields["min_version"]] > TLS_VERSIONS[fields["max_version"]]:
        ok = (
            errs.add(
                "tls_server_config.min_version", f"{fields['min_version']} is above max_version {fields['max_version']}"
            )
            is None
        )
    return TlsSettings(**fields) if ok else INVALID


def parse_web_config(text: str, source: str = "<web config>", directory: str = ".") -> WebConfig:
    """Parse and validate; also build the SSL context, so unreadable certificates fail at start."""
    errs = Errors(source)
    raw = load_yaml(text, source)
    top = section(raw, "", TOP_FIELDS, errs)
    if top is INVALID:
        raise ConfigError(errs.lines)
    if top["basic_auth_users"]:
        try:
            importlib.import_module("bcrypt")
        except ImportError:
            errs.add(
                "basic_auth_users", "checking bcrypt hashes needs the Python package 'bcrypt' (pip install bcrypt)"
            )
    tls = _tls(top["tls_server_config"], errs, directory)
    http = section(top["http_server_config"], "http_server_config", HTTP_FIELDS, errs)
    if errs.lines or tls is INVALID or http is INVALID:  # INVALID comes with its error line
        raise ConfigError(errs.lines)
    context = build_ssl_context(tls, errs) if tls is not None else None
    if errs.lines:
        raise ConfigError(errs.lines)
    return WebConfig(
        source=source, tls=tls, headers=http["headers"], users=top["basic_auth_users"], ssl_context=context
    )


def load_web_config(path: str) -> WebConfig:
    text = read_config_text(path, "web config file")
    return parse_web_config(text, source=path, directory=os.path.dirname(os.path.abspath(path)))
