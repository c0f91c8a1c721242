"""``--web.config.file``: TLS, basic auth and response headers in Prometheus' exporter-toolkit format.

The file is parsed as strictly as the main config (unknown keys are errors, every problem reported at
once as ``{file}: {key path}: {problem}``); it is read once at start (no reload: restart to change it).
Secrets (passwords, password hashes, private keys) never appear in an error or a log line.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import importlib
import logging
import os
import re
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from exporter.configfile import ConfigError, load_yaml, read_config_text
from exporter.schema import INVALID, Errors, Field, boolean, choice, kind, section

log = logging.getLogger("exporter.web")

CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
# Go accepts a client certificate without verifying it for these two; Python's ssl module always
# verifies a certificate it asks for, so they cannot be honoured and are rejected rather than changed.
UNVERIFIED_CLIENT_AUTH_TYPES = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
# Go cipher suite names (crypto/tls) -> OpenSSL names. Go ignores cipher_suites for TLS 1.3, and so do
# we (OpenSSL configures TLS 1.3 suites separately), but the names are accepted as Go accepts them.
CIPHER_SUITES = {
    "TLS_RSA_WITH_AES_128_CBC_SHA": "AES128-SHA",
    "TLS_RSA_WITH_AES_256_CBC_SHA": "AES256-SHA",
    "TLS_RSA_WITH_AES_128_GCM_SHA256": "AES128-GCM-SHA256",
    "TLS_RSA_WITH_AES_256_GCM_SHA384": "AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA": "ECDHE-ECDSA-AES128-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA": "ECDHE-ECDSA-AES256-SHA",
    "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA": "ECDHE-RSA-AES128-SHA",
    "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA": "ECDHE-RSA-AES256-SHA",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_AES_128_GCM_SHA256": None,
    "TLS_AES_256_GCM_SHA384": None,
    "TLS_CHACHA20_POLY1305_SHA256": None,
}
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
class TlsSettings:
    cert_file: str | None
    key_file: str | None
    cert: str | None
    key: str | None = field(repr=False)
    client_ca_file: str | None
    client_ca: str | None
    client_auth_type: str
    client_allowed_sans: tuple[str, ...]
    min_version: str
    max_version: str
    cipher_suites: tuple[str, ...]
    prefer_server_cipher_suites: bool


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
        return errs.add(path, f"{value} (a client certificate accepted without verification) is not supported: "
                              "use RequireAndVerifyClientCert, VerifyClientCertIfGiven or NoClientCert")
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
                ok = errs.add(f"{path}[{index}]", f"unknown cipher suite {item!r} (known: {', '.join(allowed)})") \
                    is None
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
        if name not in HEADER_RULES:
            ok = errs.add(where, f"unknown header (valid: {', '.join(HEADER_RULES)})") is None
        elif not isinstance(header_value, str) or any(c in header_value for c in "\r\n"):
            ok = errs.add(where, f"expected a one-line string, got {kind(header_value)}") is None
        elif not header_value:
            continue  # blank means unset, as in exporter-toolkit
        elif HEADER_RULES[name] is not None and header_value.lower() not in HEADER_RULES[name]:
            ok = errs.add(where, f"expected one of {', '.join(HEADER_RULES[name])}, got {header_value!r}") is None
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
            ok = errs.add(where, "not a bcrypt hash (expected $2y$, $2b$ or $2a$, a two-digit cost, "
                                 "then 53 characters, e.g. from 'htpasswd -nBC 10 \"\" | tr -d :')") is None
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


def _tls(raw: Any, errs: Errors, directory: str) -> TlsSettings | None | object:
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
        ok = errs.add("tls_server_config.client_ca_file",
                      f"missing: client_auth_type {auth} needs the CA that signs client certificates") is None
    if auth == "NoClientCert" and has_ca:
        ok = errs.add("tls_server_config.client_auth_type", "a client CA is configured but client_auth_type is "
                      "NoClientCert: set RequireAndVerifyClientCert to check client certificates") is None
    if fields["client_allowed_sans"] and auth != "RequireAndVerifyClientCert":
        ok = errs.add("tls_server_config.client_allowed_sans",
                      "needs client_auth_type RequireAndVerifyClientCert") is None
    if TLS_VERSIONS[fields["min_version"]] > TLS_VERSIONS[fields["max_version"]]:
        ok = errs.add("tls_server_config.min_version",
                      f"{fields['min_version']} is above max_version {fields['max_version']}") is None
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
            errs.add("basic_auth_users", "checking bcrypt hashes needs the Python package 'bcrypt' "
                                         "(pip install bcrypt)")
    tls = _tls(top["tls_server_config"], errs, directory)
    http = section(top["http_server_config"], "http_server_config", HTTP_FIELDS, errs)
    if errs.lines:
        raise ConfigError(errs.lines)
    context = build_ssl_context(tls, errs) if tls is not None else None
    if errs.lines:
        raise ConfigError(errs.lines)
    return WebConfig(source=source, tls=tls, headers=http["headers"], users=top["basic_auth_users"],
                     ssl_context=context)


def load_web_config(path: str) -> WebConfig:
    text = read_config_text(path, "web config file")
    return parse_web_config(text, source=path, directory=os.path.dirname(os.path.abspath(path)))


# --- TLS ----------------------------------------------------------------------------------

def _ssl_problem(exc: Exception) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc)


def build_ssl_context(tls: TlsSettings, errs: Errors) -> ssl.SSLContext | None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    context.maximum_version = TLS_VERSIONS[tls.max_version]
    if tls.prefer_server_cipher_suites:
        context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ciphers = [CIPHER_SUITES[name] for name in tls.cipher_suites if CIPHER_SUITES[name]]
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError:
            errs.add("tls_server_config.cipher_suites", "none of these cipher suites is available in this OpenSSL")
    try:
        _load_cert_chain(context, tls)
    except (OSError, ValueError) as exc:
        where = "cert_file" if tls.cert_file else "cert"
        errs.add(f"tls_server_config.{where}", f"cannot load the certificate and key "
                 f"({tls.cert_file or 'inline'}, {tls.key_file or 'inline'}): {_ssl_problem(exc)}")
    if tls.client_auth_type != "NoClientCert":
        try:
            if tls.client_ca_file:
                context.load_verify_locations(cafile=tls.client_ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except (OSError, ValueError) as exc:
            where = "client_ca_file" if tls.client_ca_file else "client_ca"
            errs.add(f"tls_server_config.{where}", f"cannot load the client CA "
                     f"({tls.client_ca_file or 'inline'}): {_ssl_problem(exc)}")
        context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    return context


def _load_cert_chain(context: ssl.SSLContext, tls: TlsSettings) -> None:
    """load_cert_chain reads files only: inline PEM goes through a private temporary directory."""
    if tls.cert is None and tls.key is None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        return
    with tempfile.TemporaryDirectory(prefix="connectivity-exporter-tls-") as directory:
        paths = []
        for name, inline, file in (("cert.pem", tls.cert, tls.cert_file), ("key.pem", tls.key, tls.key_file)):
            if inline is None:
                paths.append(file)
                continue
            path = os.path.join(directory, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(inline)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def _allowed_san(request: web.Request, allowed: tuple[str, ...]) -> bool:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    peer = ssl_object.getpeercert() if ssl_object is not None else None
    if not peer:
        return False
    names = {value for _, value in peer.get("subjectAltName", ())}
    return any(name in names for name in allowed)


# --- basic auth -----------------------------------------------------------------------------

class BasicAuth:
    """Checks ``Authorization: Basic`` against bcrypt hashes.

    bcrypt is slow on purpose (~70 ms at cost 10); a Prometheus scrape every 15 s must not pay that
    each time, nor stall the event loop. A verified password is remembered per user as an HMAC under a
    key that lives only in this process, and compared in constant time; misses run bcrypt on a small
    thread pool. Unknown users are checked against a real hash too, so timing does not reveal names.
    """

    def __init__(self, users: Mapping[str, bytes], workers: int = 2):
        self._users = dict(users)
        self._decoy = next(iter(self._users.values()))
        self._key = os.urandom(32)
        self._verified: dict[str, bytes] = {}
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="bcrypt")
        self.bcrypt_runs = 0

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _token(self, user: bytes, password: bytes) -> bytes:
        return hmac.new(self._key, user + b"\0" + password, hashlib.sha256).digest()

    async def verify(self, header: str | None) -> str | None:
        """The authenticated user name, or None."""
        credentials = _basic_credentials(header)
        if credentials is None:
            return None
        user, password = credentials
        token = self._token(user.encode(), password)
        remembered = self._verified.get(user)
        if remembered is not None and hmac.compare_digest(remembered, token):
            return user
        hashed = self._users.get(user, self._decoy)
        self.bcrypt_runs += 1
        matches = await asyncio.get_running_loop().run_in_executor(self._executor, _checkpw, password, hashed)
        if matches and user in self._users:
            self._verified[user] = token
            return user
        return None


def _checkpw(password: bytes, hashed: bytes) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password, hashed)
    except ValueError:  # longer than bcrypt's 72 bytes, as Go's bcrypt also refuses
        return False


def _basic_credentials(header: str | None) -> tuple[str, bytes] | None:
    if not header:
        return None
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True)
        user, sep, password = decoded.partition(b":")
        return (user.decode("utf-8"), password) if sep else None
    except (binascii.Error, UnicodeDecodeError):
        return None


# --- wiring into the aiohttp application -------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, web_config: WebConfig) -> None:
    """Apply auth, allowed client SANs and response headers to every endpoint of ``app``."""
    if web_config.headers:
        headers = dict(web_config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers)

        app.on_response_prepare.append(add_headers)

    allowed_sans = web_config.tls.client_allowed_sans if web_config.tls else ()
    if allowed_sans:
        @web.middleware
        async def require_allowed_san(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not _allowed_san(request, allowed_sans):
                log.debug("client certificate has no allowed subject alternative name",
                          extra={"remote": request.remote})
                raise web.HTTPForbidden(text="client certificate not allowed\n")
            return await handler(request)

        app.middlewares.append(require_allowed_san)

    if web_config.users:
        auth = BasicAuth(web_config.users)

        @web.middleware
        async def require_basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if await auth.verify(request.headers.get("Authorization")) is None:
                log.debug("HTTP basic authentication failed", extra={"remote": request.remote,
                                                                    "path": request.path})
                raise web.HTTPUnauthorized(text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})
            return await handler(request)

        async def close_auth(app: web.Application) -> None:
            auth.close()

        app.middlewares.append(require_basic_auth)
        app.on_cleanup.append(close_auth)
        app[BASIC_AUTH] = auth


BASIC_AUTH = web.AppKey("basic_auth", BasicAuth)
