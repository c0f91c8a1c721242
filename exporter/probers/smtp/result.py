"""What the SMTP prober records: its outcome states and the dialogue's details (``ProbeResult.details``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from exporter.probers.connect.result import DetailsBase, Fact, JsonObject
from exporter.probers.smtp.replies import Reply
from exporter.probers.tls.families import expiry_words
from exporter.probers.tls.handshake import TlsInfo

# Fact labels (the status page shows them as columns).
BANNER, REPLIES, CERTIFICATE = "Banner after", "SMTP replies", "Certificate expires"


class SmtpState(StrEnum):
    OK = "ok"
    CONNECT_FAILED = "connect_failed"  # no TCP connection (probe_tcp_state says why)
    BANNER_TIMEOUT = "banner_timeout"  # no complete greeting before the deadline
    BANNER_REJECTED = "banner_rejected"  # a 4xx/5xx greeting: busy (421), blocked (554)
    BANNER_MISMATCH = "banner_mismatch"  # the greeting did not match expect_banner
    EHLO_REJECTED = "ehlo_rejected"  # EHLO and the HELO fallback were refused
    STARTTLS_UNAVAILABLE = "starttls_unavailable"  # required, but not offered or refused
    TLS_ERROR = "tls_error"  # handshake failed, or a required certificate did not verify
    AUTH_FAILED = "auth_failed"
    SENDER_REJECTED = "sender_rejected"  # MAIL FROM refused
    RECIPIENT_REJECTED = "recipient_rejected"  # RCPT TO refused
    DATA_REJECTED = "data_rejected"  # DATA or the message refused
    PROTOCOL_ERROR = "protocol_error"  # garbage, unexpected close, overlong reply
    TIMEOUT = "timeout"  # a command after the greeting (or the TLS handshake) got no
    # reply before the deadline; the detail names it
    # Added later: kept at the end so the dashboard's numeric codes of the states above stay put.
    CLIENT_REJECTED = "client_rejected"  # this client (IP, name, reputation) refused after the greeting,
    # e.g. Postfix's delayed "Client host rejected" at RCPT
    STARTTLS_FAILED = "starttls_failed"  # STARTTLS advertised, then refused (454): broken server TLS
    ERROR = "error"  # the exporter itself failed (a bug; logged)
    OPEN_RELAY = "open_relay"  # RCPT TO a foreign domain accepted (relay_check_rcpt_to; smtp_relay.py)


# Stages with a reply code (the label values of probe_smtp_reply_code), in dialogue order.
REPLY_STAGES = (
    "banner",
    "ehlo",
    "helo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "rset",
    "data",
    "relay_mail",
    "relay_rcpt",
    "relay_rset",
    "quit",
)
# Stages with a duration: the reply stages plus the TLS handshake.
TIMED_STAGES = (
    "banner",
    "ehlo",
    "helo",
    "starttls",
    "tls",
    "auth",
    "mail",
    "rcpt",
    "rset",
    "data",
    "relay_mail",
    "relay_rcpt",
    "relay_rset",
    "quit",
)

# The extensions reported as probe_smtp_capability; anything else the server says stays out of labels.
CAPABILITIES = (
    "STARTTLS",
    "SIZE",
    "PIPELINING",
    "8BITMIME",
    "SMTPUTF8",
    "CHUNKING",
    "BINARYMIME",
    "DSN",
    "ENHANCEDSTATUSCODES",
    "AUTH",
    "REQUIRETLS",
    "DELIVERBY",
    "ETRN",
    "VRFY",
    "MT-PRIORITY",
    "LIMITS",
)
AUTH_MECHANISMS = (
    "PLAIN",
    "LOGIN",
    "CRAM-MD5",
    "DIGEST-MD5",
    "SCRAM-SHA-1",
    "SCRAM-SHA-256",
    "XOAUTH2",
    "OAUTHBEARER",
    "GSSAPI",
    "NTLM",
)


@dataclass(slots=True)
class SmtpDetails(DetailsBase):
    """What the SMTP dialogue recorded (``ProbeResult.details`` of an smtp probe of one host)."""

    banner_seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)  # the last reply of each stage
    capabilities: frozenset[str] | None = None  # None until an EHLO succeeded
    auth_mechanisms: frozenset[str] = frozenset()
    size_limit: int | None = None
    encrypted: bool = False
    tls: TlsInfo | None = None
    # (what was answered, e.g. "rcpt 550 5.1.1", plain-language meaning) for each distinct reply.
    reply_explanations: list[tuple[str, str]] = field(default_factory=list)
    # For a rejection: what the server refused (smtp_explain.Party: client, sender, recipient, relay, ...).
    refused: str | None = None
    greylisted: bool = False  # a 4xx whose own words say greylisting
    starttls_refused: bool = False  # STARTTLS was advertised and then refused (opportunistic: went on)
    # The command (as shown in the transcript) that got no reply before the deadline, for ``timeout``.
    stalled_at: str | None = None

    # The read-only view the status page and `check` show (stage -> "550 5.1.1", certificate expiry).
    @property
    def reply_codes(self) -> dict[str, str]:
        return {stage: reply.code_text for stage, reply in self.replies.items()}

    @property
    def cert_expiry(self) -> float | None:
        return self.tls.earliest_expiry if self.tls is not None else None

    def facts(self, state: str, now: float) -> list[Fact]:
        out = []
        if self.banner_seconds is not None:
            out.append(Fact(BANNER, f"{self.banner_seconds * 1000:.2f} ms"))
        if self.replies:
            out.append(Fact(REPLIES, ", ".join(f"{stage} {code}" for stage, code in self.reply_codes.items())))
        if self.cert_expiry is not None:
            out.append(Fact(CERTIFICATE, expiry_words(self.cert_expiry, now)))
        return out

    def explanations(self) -> list[tuple[str, str]]:
        return list(self.reply_explanations)

    def greeting_seconds(self) -> float | None:
        return self.banner_seconds

    def contract(self) -> JsonObject:
        """JSON-native view (lists, strings, numbers, null): the stable schema documented in docs/smtp.md."""
        tls = self.tls
        return {
            "banner_seconds": self.banner_seconds,
            "stage_seconds": dict(self.stage_seconds),
            "replies": {
                stage: {"code": reply.code, "enhanced": reply.enhanced, "lines": list(reply.lines)}
                for stage, reply in self.replies.items()
            },
            "capabilities": sorted(self.capabilities) if self.capabilities is not None else None,
            "auth_mechanisms": sorted(self.auth_mechanisms),
            "size_limit": self.size_limit,
            "encrypted": self.encrypted,
            "tls": None
            if tls is None
            else {
                "handshake_seconds": tls.handshake_seconds,
                "version": tls.version,
                "cipher": tls.cipher,
                "verified": tls.verified,
                "verify_error": tls.verify_error,
                "earliest_expiry": tls.earliest_expiry,
                "verified_chain_expiry": tls.verified_chain_expiry,
                "subject": tls.subject,
            },
            "explanations": [{"reply": heading, "meaning": meaning} for heading, meaning in self.reply_explanations],
            "refused": self.refused,
            "greylisted": self.greylisted,
            "starttls_refused": self.starttls_refused,
            "stalled_at": self.stalled_at,
        }


_NUMBER_OR_NULL = {"type": ["number", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}
# The JSON Schema (draft 2020-12) of ``SmtpDetails.contract()``: `check --json`'s "details" for the smtp prober.
# A contract: fields may be added, none removed or retyped.
SMTP_DETAILS_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "connectivity_exporter smtp probe details",
    "type": "object",
    "required": [
        "banner_seconds",
        "stage_seconds",
        "replies",
        "capabilities",
        "auth_mechanisms",
        "size_limit",
        "encrypted",
        "tls",
        "explanations",
        "refused",
        "greylisted",
        "starttls_refused",
        "stalled_at",
    ],
    "properties": {
        "banner_seconds": _NUMBER_OR_NULL,
        "stage_seconds": {
            "type": "object",
            "propertyNames": {"enum": list(TIMED_STAGES)},
            "additionalProperties": {"type": "number", "minimum": 0},
        },
        "replies": {
            "type": "object",
            "propertyNames": {"enum": list(REPLY_STAGES)},
            "additionalProperties": {
                "type": "object",
                "required": ["code", "enhanced", "lines"],
                "properties": {
                    "code": {"type": "integer", "minimum": 200, "maximum": 599},
                    "enhanced": {"type": ["string", "null"], "pattern": r"^[245]\.\d{1,3}\.\d{1,3}$"},
                    "lines": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                },
            },
        },
        "capabilities": {"type": ["array", "null"], "items": {"type": "string"}, "uniqueItems": True},
        "auth_mechanisms": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        "size_limit": {"type": ["integer", "null"], "minimum": 0},
        "encrypted": {"type": "boolean"},
        "tls": {
            "oneOf": [
                {"type": "null"},
                {
                    "type": "object",
                    "required": [
                        "handshake_seconds",
                        "version",
                        "cipher",
                        "verified",
                        "verify_error",
                        "earliest_expiry",
                        "verified_chain_expiry",
                        "subject",
                    ],
                    "properties": {
                        "handshake_seconds": _NUMBER_OR_NULL,
                        "version": _STRING_OR_NULL,
                        "cipher": _STRING_OR_NULL,
                        "verified": {"type": ["boolean", "null"]},
                        "verify_error": _STRING_OR_NULL,
                        "earliest_expiry": _NUMBER_OR_NULL,
                        "verified_chain_expiry": _NUMBER_OR_NULL,
                        "subject": _STRING_OR_NULL,
                    },
                },
            ]
        },
        "explanations": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["reply", "meaning"],
                "properties": {"reply": {"type": "string"}, "meaning": {"type": "string"}},
            },
        },
        "refused": {
            "enum": [
                None,
                "client",
                "sender",
                "recipient",
                "relay",
                "policy",
                "message",
                "auth",
                "tls",
                "service",
                "command",
            ]
        },
        "greylisted": {"type": "boolean"},
        "starttls_refused": {"type": "boolean"},
        "stalled_at": _STRING_OR_NULL,
    },
}
