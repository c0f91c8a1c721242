"""TLS for the tcp prober (``tls: true`` and a dialogue's ``starttls``), and the TLS metric families.

The handshake itself runs in asyncio (``open_connection(ssl=...)`` / ``StreamWriter.start_tls``),
verified by OpenSSL with the context from ``tls_config`` (``exporter.probers.dialogue_config``), as
blackbox_exporter verifies with Go's crypto/tls: chain and host name (``server_name``, else the
target's host) unless ``insecure_skip_verify``. What a finished handshake tells is read with the
TLS handshake helpers (``handshake.describe``), plus the leaf's identity for
``probe_ssl_last_chain_info`` in blackbox_exporter's spelling (Go's ``pkix.Name.String()``).

The TLS families are shared by every prober whose details carry ``tls`` (a ``TlsInfo``), so an
exposition with smtp and tcp modules has each family once.
"""

from __future__ import annotations

import hashlib
import ssl
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from exporter.core.exposition import Family, Samples, escape_label_value, labelled, single
from exporter.probers.connect.result import ProbeResult, has_details
from exporter.probers.tls import errors as tls_errors
from exporter.probers.tls import handshake
from exporter.probers.tls.handshake import TLS_VERSIONS, TlsInfo
from exporter.probers.tls.stdlib_adapter import CertInfo, peer_chain

# Bound on each label value of probe_ssl_last_chain_info (subjects come from the server).
MAX_NAME_LENGTH = 512


@dataclass(frozen=True, slots=True)
class LeafIdentity:
    """The labels of ``probe_ssl_last_chain_info``, with blackbox_exporter's names and spelling."""

    fingerprint_sha256: str
    subject: str
    issuer: str
    subjectalternative: str
    serialnumber: str


def handshake_failure(exc: BaseException) -> str:
    """What a failed handshake means, in the words every TLS-speaking prober uses (``tls_errors``)."""
    if isinstance(exc, TimeoutError):
        return "the TLS handshake did not finish before the deadline"
    return tls_errors.describe_handshake_failure(exc)


def describe_session(
    ssl_object: ssl.SSLObject | ssl.SSLSocket, verified: bool | None
) -> tuple[TlsInfo, LeafIdentity | None]:
    info = TlsInfo()
    handshake.describe(info, ssl_object, verified)
    return info, leaf_identity(ssl_object)


def leaf_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> LeafIdentity | None:
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    chain = peer_chain(ssl_object, verified=False)
    leaf: CertInfo = chain[0] if chain else (ssl_object.getpeercert() or {})
    return LeafIdentity(
        fingerprint_sha256=hashlib.sha256(der).hexdigest(),
        subject=_bounded(go_name(leaf.get("subject", ()))),
        issuer=_bounded(go_name(leaf.get("issuer", ()))),
        subjectalternative=_bounded(",".join(v for kind, v in leaf.get("subjectAltName", ()) if kind == "DNS")),
        serialnumber=_serial(leaf.get("serialNumber", "")),
    )


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_NAME_LENGTH else text[: MAX_NAME_LENGTH - 3] + "..."


def _serial(text: str) -> str:
    """Go prints the serial as the lower-case hex of its minimal big-endian bytes."""
    try:
        number = int(text, 16)
    except ValueError:
        return ""
    return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big").hex()


# Go's pkix.Name.String(): these attributes in this order (the reverse of ToRDNSequence), then the rest.
_GO_ORDER = (
    ("serialNumber", "SERIALNUMBER"),
    ("commonName", "CN"),
    ("organizationalUnitName", "OU"),
    ("organizationName", "O"),
    ("postalCode", "POSTALCODE"),
    ("streetAddress", "STREET"),
    ("localityName", "L"),
    ("stateOrProvinceName", "ST"),
    ("countryName", "C"),
)
_GO_SHORT = dict(_GO_ORDER)


def go_name(rdns: Iterable[Iterable[tuple[str, str]]]) -> str:
    """A distinguished name as Go's ``pkix.Name.String()`` writes it, from ``getpeercert()``'s tuples.

    Attributes Go knows by a short name come in Go's fixed order; others keep OpenSSL's long name
    (Go writes their OID and hex DER instead, which Python's ssl module does not expose).
    """
    values: dict[str, list[str]] = {}
    others: list[str] = []
    for rdn in rdns:
        for key, value in rdn:
            if key in _GO_SHORT:
                values.setdefault(key, []).append(value)
            else:
                others.append(f"{key}={_escape(value)}")
    parts = ["+".join(f"{short}={_escape(v)}" for v in values[key]) for key, short in _GO_ORDER if key in values]
    return ",".join(parts + others[::-1])


def _escape(value: str) -> str:
    escaped = "".join("\\" + c if c in ',+"\\<>;' else c for c in value)
    if escaped.startswith((" ", "#")):
        escaped = "\\" + escaped
    if escaped.endswith(" ") and not escaped.endswith("\\ "):
        escaped = escaped[:-1] + "\\ "
    return escaped


# --- metric families shared by the probers that record TLS ------------------------------------


def detail_value(get: Callable[[ProbeResult], float | None]) -> Samples[ProbeResult]:
    """One unlabelled sample read from a result's details; a result without details (a plain connect,
    most targets of a large scrape) costs one identity test."""
    return single(get, only_if=has_details)


def detail_lines(read: Callable[[ProbeResult], Iterable[tuple[str, float]]]) -> Samples[ProbeResult]:
    """Labelled samples read from a result's details (a result without details: one identity test)."""
    return labelled(read, only_if=has_details)


def _tls(result: ProbeResult) -> TlsInfo | None:
    tls = getattr(result.details, "tls", None)
    return tls if isinstance(tls, TlsInfo) else None


def _tls_version(result: ProbeResult) -> Iterable[tuple[str, float]]:
    tls = _tls(result)
    if tls is None or tls.version is None:
        return ()
    # Only the version seen (an info metric): the other versions' series would always be 0.
    return [(f'version="{version}"', 1) for version in TLS_VERSIONS if version == tls.version]


def _chain_info(result: ProbeResult) -> Iterable[tuple[str, float]]:
    leaf = getattr(result.details, "leaf", None)
    if not isinstance(leaf, LeafIdentity):
        return ()
    labels = ",".join(f'{name}="{escape_label_value(getattr(leaf, name))}"' for name in LeafIdentity.__slots__)
    return [(labels, 1)]


def _bool(value: bool | None) -> int | None:
    return None if value is None else int(value)


TLS_FAMILIES = (
    Family(
        "probe_tls_handshake_duration_seconds",
        "gauge",
        "Time of the TLS handshake.",
        detail_value(lambda r: t.handshake_seconds if (t := _tls(r)) else None),
    ),
    Family(
        "probe_tls_version_info",
        "gauge",
        "The TLS version negotiated: the series with value 1.",
        detail_lines(_tls_version),
    ),
    Family(
        "probe_tls_certificate_verified",
        "gauge",
        "Whether the server's certificate chain verified for the server name (1) or not (0); "
        "absent when not checked (insecure_skip_verify) or no TLS.",
        detail_value(lambda r: _bool(t.verified) if (t := _tls(r)) else None),
    ),
    Family(
        "probe_ssl_earliest_cert_expiry",
        "gauge",
        "Earliest expiry of the certificates the server sent, in Unix time.",
        detail_value(lambda r: t.earliest_expiry if (t := _tls(r)) else None),
    ),
    Family(
        "probe_ssl_last_chain_expiry_timestamp_seconds",
        "gauge",
        "Earliest expiry in the verified certificate chain, in Unix time (only when the chain verified).",
        detail_value(lambda r: t.verified_chain_expiry if (t := _tls(r)) else None),
    ),
    Family(
        "probe_ssl_last_chain_info",
        "gauge",
        "The server's leaf certificate: SHA-256 fingerprint, subject, issuer, DNS names, serial; always 1.",
        detail_lines(_chain_info),
    ),
)
TLS_FAMILY_NAMES = frozenset(family.name for family in TLS_FAMILIES)


def expiry_words(expiry: float, now: float) -> str:
    """A certificate's expiry as a person reads it: the date and how far away (or ago) it is."""
    days = (expiry - now) / 86400
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(expiry))
    return f"{when} (in {days:.1f} days)" if days >= 0 else f"{when} (EXPIRED {-days:.1f} days ago)"
