"""TLS for the SMTP prober: client contexts from ``tls_config``, and what a finished handshake tells.

How "verified" is decided: by OpenSSL during the real handshake, with a verifying context
(``CERT_REQUIRED``, host name checked against ``server_name`` or the target's host, trust
anchors from ``ca_file`` or the system store). That is the verdict a verifying mail server
would reach, unlike re-checking the chain afterwards with another library's stricter rules.
The cost: a handshake that fails verification is over, so when the policy tolerates an
unverified certificate (``starttls: opportunistic``) the prober reconnects and continues with
a non-verifying context. With ``insecure_skip_verify`` no verification is attempted at all.

Certificate expiry comes from the chain the server sent (``probe_ssl_earliest_cert_expiry``)
and from the chain OpenSSL verified, trust anchor included
(``probe_ssl_last_chain_expiry_timestamp_seconds``, only when verified). Python 3.11 has
these chains only on the private ``_ssl`` object (public as ``get_unverified_chain`` /
``get_verified_chain`` in 3.13): ``stdlib_adapter.peer_chain`` reads them; when neither is there, the
leaf alone is used if verified.
"""

from __future__ import annotations

import functools
import ssl
from dataclasses import dataclass

from exporter.probers.tls.settings import TlsConfig
from exporter.probers.tls.stdlib_adapter import CertInfo, peer_chain

_VERSIONS = {"TLSv1": "TLS 1.0", "TLSv1.1": "TLS 1.1", "TLSv1.2": "TLS 1.2", "TLSv1.3": "TLS 1.3"}
TLS_VERSIONS = tuple(_VERSIONS.values())


@dataclass(slots=True)
class TlsInfo:
    handshake_seconds: float | None = None
    version: str | None = None  # blackbox_exporter's spelling: "TLS 1.3"
    cipher: str | None = None
    verified: bool | None = None  # None: not checked (insecure_skip_verify)
    verify_error: str | None = None
    earliest_expiry: float | None = None  # Unix time, earliest notAfter in the chain the server sent
    verified_chain_expiry: float | None = None  # earliest notAfter in the verified chain
    subject: str | None = None  # the leaf's subject, for the transcript


@functools.lru_cache(maxsize=64)
def client_context(tls: TlsConfig, verify: bool) -> ssl.SSLContext:
    """A client context, built once per (settings, verify): loading the system trust store is slow."""
    if not verify:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    if tls.ca_file is not None:
        return ssl.create_default_context(cadata=tls.ca_file.text)
    return ssl.create_default_context()


def server_name(tls: TlsConfig, host: str) -> str:
    return tls.server_name or host


def version_label(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    raw = ssl_object.version()
    return _VERSIONS.get(raw, "unknown") if raw else None


def _earliest_expiry(chain: list[CertInfo]) -> float | None:
    times = []
    for info in chain:
        try:
            times.append(float(ssl.cert_time_to_seconds(info["notAfter"])))
        except (KeyError, ValueError):
            continue
    return min(times) if times else None


def _subject(info: CertInfo) -> str | None:
    names = [value for rdn in info.get("subject", ()) for key, value in rdn if key == "commonName"]
    if names:
        return f"CN={names[0]}"
    sans = [value for kind, value in info.get("subjectAltName", ()) if kind in ("DNS", "IP Address")]
    return f"SAN {sans[0]}" if sans else None


def describe(info: TlsInfo, ssl_object: ssl.SSLObject | ssl.SSLSocket, verified: bool | None) -> None:
    """Fill ``info`` from a completed handshake."""
    info.version = version_label(ssl_object)
    cipher = ssl_object.cipher()
    info.cipher = cipher[0] if cipher else None
    info.verified = verified
    sent = peer_chain(ssl_object, verified=False)
    info.earliest_expiry = _earliest_expiry(sent)
    if verified:
        info.verified_chain_expiry = _earliest_expiry(peer_chain(ssl_object, verified=True))
        if info.earliest_expiry is None:
            info.earliest_expiry = info.verified_chain_expiry
    if sent:
        info.subject = _subject(sent[0])


def verify_failure(exc: ssl.SSLCertVerificationError) -> str:
    """OpenSSL's reason, e.g. "certificate has expired" or "Hostname mismatch, ..."."""
    return exc.verify_message or exc.reason or "certificate verification failed"
