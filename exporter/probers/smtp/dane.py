"""DANE for SMTP (RFC 7672, RFC 6698/7671): do an MX host's TLSA records match its certificate?

TLSA records ``_<port>._tcp.<mx>`` come from ``policy_dns.lookup_tlsa`` (DO bit, the resolver's AD
bit trusted). Per MX host:

- ``valid``: a validated TLSA record matches the presented chain: DANE-EE(3) the leaf (its name
  and dates are not checked, RFC 7672 §3.1.1), or DANE-TA(2) a certificate of the chain, which
  must then verify from the leaf up to it for the MX name (checked by OpenSSL in a handshake
  with that certificate as the only trust anchor).
- ``mismatch``: validated usable records, none matches: DANE senders do not deliver to the host.
- ``unsigned``: TLSA records exist but were not validated (AD clear): senders ignore them.
- ``absent``: no TLSA records (``secure`` tells whether the denial was validated).
- ``bogus``: validation failed (SERVFAIL, answered with CD): senders defer mail to the host.
- ``unusable``: validated records, none with usage 2/3, selector 0/1 and matching type 0/1/2
  (RFC 7672 §3.1.3): senders use TLS but do not authenticate.
- ``dns_error``: the lookup failed for now; ``unchecked``: records to match, but no certificate.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from enum import StrEnum

from exporter.probers.smtp.policy_dns import Lookup, Tlsa, TlsaAnswer


class DaneState(StrEnum):
    VALID = "valid"
    MISMATCH = "mismatch"
    UNSIGNED = "unsigned"
    ABSENT = "absent"
    BOGUS = "bogus"
    UNUSABLE = "unusable"
    DNS_ERROR = "dns_error"
    UNCHECKED = "unchecked"


# The domain summary is the state of its worst MX host, in this order.
SEVERITY = (
    DaneState.BOGUS,
    DaneState.MISMATCH,
    DaneState.DNS_ERROR,
    DaneState.UNCHECKED,
    DaneState.UNUSABLE,
    DaneState.UNSIGNED,
    DaneState.VALID,
    DaneState.ABSENT,
)
FAILING = frozenset({DaneState.BOGUS, DaneState.MISMATCH})


@dataclass(slots=True)
class DaneCheck:
    host: str
    preference: int
    state: DaneState
    reason: str
    records: int = 0


def usable(record: Tlsa) -> bool:
    return record.usage in (2, 3) and record.selector in (0, 1) and record.mtype in (0, 1, 2)


# --- DER: the SubjectPublicKeyInfo of a certificate (selector 1) ------------------------------


def _tlv(der: bytes, offset: int) -> tuple[int, int, int]:
    """(tag, start of contents, end of contents) of the DER element at ``offset``."""
    tag = der[offset]
    length = der[offset + 1]
    start = offset + 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[start : start + count], "big")
        start += count
    end = start + length
    if end > len(der):
        raise ValueError("truncated DER")
    return tag, start, end


def spki(certificate: bytes) -> bytes:
    """The DER SubjectPublicKeyInfo: the 7th element of tbsCertificate (6th without a version)."""
    _, cert_start, _ = _tlv(certificate, 0)
    _, tbs_start, tbs_end = _tlv(certificate, cert_start)
    offset, index = tbs_start, 0
    tag, _, end = _tlv(certificate, offset)
    if tag == 0xA0:  # [0] EXPLICIT version
        offset = end
    while offset < tbs_end:
        tag, _, end = _tlv(certificate, offset)
        if index == 5:  # serial, signature, issuer, validity, subject, subjectPublicKeyInfo
            if tag != 0x30:
                raise ValueError("no SubjectPublicKeyInfo")
            return certificate[offset:end]
        offset, index = end, index + 1
    raise ValueError("no SubjectPublicKeyInfo")


def association(record: Tlsa, certificate: bytes) -> bool:
    """Whether the record's certificate association data matches ``certificate`` (DER)."""
    try:
        selected = certificate if record.selector == 0 else spki(certificate)
    except (ValueError, IndexError):
        return False
    if record.mtype == 0:
        return selected == record.data
    digest = hashlib.sha256 if record.mtype == 1 else hashlib.sha512
    return digest(selected).digest() == record.data


def match_ee(records: list[Tlsa], chain: list[bytes]) -> bool:
    return bool(chain) and any(record.usage == 3 and association(record, chain[0]) for record in records)


def ta_candidates(records: list[Tlsa], chain: list[bytes]) -> list[bytes]:
    """Certificates above the leaf that a DANE-TA record names (checked further by a handshake)."""
    return [cert for cert in chain[1:] if any(r.usage == 2 and association(r, cert) for r in records)]


def from_answer(host: str, preference: int, answer: TlsaAnswer) -> DaneCheck | None:
    """The state decided by DNS alone, or None when the certificate must be matched."""
    name = f"the TLSA records of {host}"
    if answer.outcome is Lookup.BOGUS:
        return DaneCheck(
            host,
            preference,
            DaneState.BOGUS,
            f"DNSSEC validation of {name} fails (bogus): DANE senders defer mail to {host}; fix the zone's signatures",
        )
    if answer.outcome is Lookup.ERROR:
        return DaneCheck(host, preference, DaneState.DNS_ERROR, f"{name} could not be looked up: {answer.reason}")
    if answer.outcome is Lookup.NONE:
        how = (
            "a validated denial"
            if answer.secure
            else "not validated: the zone is unsigned or the resolver does not validate"
        )
        return DaneCheck(host, preference, DaneState.ABSENT, f"{host} has no TLSA records ({how}): DANE does not apply")
    if not answer.secure:
        return DaneCheck(
            host,
            preference,
            DaneState.UNSIGNED,
            f"{host} has {len(answer.records)} TLSA record(s), but they are not DNSSEC-validated (AD clear): DANE "
            "senders ignore them; sign the zone (or run a validating resolver on this host)",
            len(answer.records),
        )
    if not any(usable(record) for record in answer.records):
        return DaneCheck(
            host,
            preference,
            DaneState.UNUSABLE,
            f"none of {host}'s TLSA records has usage 2 or 3, selector 0 or 1 and matching type 0, 1 or 2 "
            "(RFC 7672 §3.1.3): DANE senders use TLS without authenticating",
            len(answer.records),
        )
    return None


def summary(checks: list[DaneCheck]) -> DaneState | None:
    states = {check.state for check in checks}
    return next((state for state in SEVERITY if state in states), None)
