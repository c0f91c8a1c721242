"""The exporter's own HTTPS: the server SSL context from a web config, and the client-SAN check."""

from __future__ import annotations

import os
import ssl
import tempfile
from dataclasses import dataclass, field

from aiohttp import web

from exporter.core.schema import Errors


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


CLIENT_AUTH_TYPES = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
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
    ciphers = [cipher for name in tls.cipher_suites if (cipher := CIPHER_SUITES[name])]
    if ciphers:
        try:
            context.set_ciphers(":".join(ciphers))
        except ssl.SSLError:
            errs.add("tls_server_config.cipher_suites", "none of these cipher suites is available in this OpenSSL")
    try:
        _load_cert_chain(context, tls)
    except (OSError, ValueError) as exc:
        where = "cert_file" if tls.cert_file else "cert"
        errs.add(
            f"tls_server_config.{where}",
            f"cannot load the certificate and key "
            f"({tls.cert_file or 'inline'}, {tls.key_file or 'inline'}): {_ssl_problem(exc)}",
        )
    if tls.client_auth_type != "NoClientCert":
        try:
            if tls.client_ca_file:
                context.load_verify_locations(cafile=tls.client_ca_file)
            else:
                context.load_verify_locations(cadata=tls.client_ca)
        except (OSError, ValueError) as exc:
            where = "client_ca_file" if tls.client_ca_file else "client_ca"
            errs.add(
                f"tls_server_config.{where}",
                f"cannot load the client CA ({tls.client_ca_file or 'inline'}): {_ssl_problem(exc)}",
            )
        context.verify_mode = CLIENT_AUTH_TYPES[tls.client_auth_type]
    return context


def _load_cert_chain(context: ssl.SSLContext, tls: TlsSettings) -> None:
    """load_cert_chain reads files only: inline PEM goes through a private temporary directory."""
    if tls.cert is None and tls.key is None and tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
        return
    with tempfile.TemporaryDirectory(prefix="connectivity-exporter-tls-") as directory:
        paths: list[str] = []
        for name, inline, file in (("cert.pem", tls.cert, tls.cert_file), ("key.pem", tls.key, tls.key_file)):
            if inline is None:
                if file is None:  # the web config's loader requires one of the two
                    raise ValueError(f"neither inline PEM nor a file for {name}")
                paths.append(file)
                continue
            path = os.path.join(directory, name)
            with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as handle:
                handle.write(inline)
            paths.append(path)
        context.load_cert_chain(paths[0], paths[1])


def allowed_san(request: web.Request, allowed: tuple[str, ...]) -> bool:
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    peer = ssl_object.getpeercert() if ssl_object is not None else None
    if not peer:
        return False
    names = {value for _, value in peer.get("subjectAltName", ())}
    return any(name in names for name in allowed)
