"""What the SMTP prober records: its outcome states and the dialogue's details (``ProbeResult.details``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from exporter.probers.smtp_replies import Reply
from exporter.probers.smtp_tls import TlsInfo


class SmtpState(StrEnum):
    OK = "ok"
    CONNECT_FAILED = "connect_failed"            # no TCP connection (probe_tcp_state says why)
    BANNER_TIMEOUT = "banner_timeout"            # no complete greeting before the deadline
    BANNER_REJECTED = "banner_rejected"          # a 4xx/5xx greeting: busy (421), blocked (554)
    BANNER_MISMATCH = "banner_mismatch"          # the greeting did not match expect_banner
    EHLO_REJECTED = "ehlo_rejected"              # EHLO and the HELO fallback were refused
    STARTTLS_UNAVAILABLE = "starttls_unavailable"  # required, but not offered or refused
    TLS_ERROR = "tls_error"                      # handshake failed, or a required certificate did not verify
    AUTH_FAILED = "auth_failed"
    SENDER_REJECTED = "sender_rejected"          # MAIL FROM refused
    RECIPIENT_REJECTED = "recipient_rejected"    # RCPT TO refused
    DATA_REJECTED = "data_rejected"              # DATA or the message refused
    PROTOCOL_ERROR = "protocol_error"            # garbage, unexpected close, overlong reply
    TIMEOUT = "timeout"                          # the dialogue stalled after the greeting
    ERROR = "error"                              # the exporter itself failed (a bug; logged)
    OPEN_RELAY = "open_relay"                    # RCPT TO a foreign domain accepted (relay_check_rcpt_to; smtp_relay.py)


# Stages with a reply code (the label values of probe_smtp_reply_code), in dialogue order.
REPLY_STAGES = ("banner", "ehlo", "helo", "starttls", "auth", "mail", "rcpt", "rset", "data", "quit")
# Stages with a duration: the reply stages plus the TLS handshake.
TIMED_STAGES = ("banner", "ehlo", "helo", "starttls", "tls", "auth", "mail", "rcpt", "rset", "data", "quit")

# The extensions reported as probe_smtp_capability; anything else the server says stays out of labels.
CAPABILITIES = ("STARTTLS", "SIZE", "PIPELINING", "8BITMIME", "SMTPUTF8", "CHUNKING", "BINARYMIME", "DSN",
                "ENHANCEDSTATUSCODES", "AUTH", "REQUIRETLS", "DELIVERBY", "ETRN", "VRFY", "MT-PRIORITY",
                "LIMITS")
AUTH_MECHANISMS = ("PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2",
                   "OAUTHBEARER", "GSSAPI", "NTLM")


@dataclass(slots=True)
class SmtpDetails:
    banner_seconds: float | None = None
    stage_seconds: dict[str, float] = field(default_factory=dict)
    replies: dict[str, Reply] = field(default_factory=dict)          # the last reply of each stage
    capabilities: frozenset[str] | None = None                      # None until an EHLO succeeded
    auth_mechanisms: frozenset[str] = frozenset()
    size_limit: int | None = None
    encrypted: bool = False
    tls: TlsInfo | None = None
    # (what was answered, e.g. "rcpt 550 5.1.1", plain-language meaning) for each distinct reply.
    explanations: list[tuple[str, str]] = field(default_factory=list)

    # The read-only view the status page and `check` show (stage -> "550 5.1.1", certificate expiry).
    @property
    def reply_codes(self) -> dict[str, str]:
        return {stage: f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
                for stage, reply in self.replies.items()}

    @property
    def cert_expiry(self) -> float | None:
        return self.tls.earliest_expiry if self.tls is not None else None

    def to_json(self) -> dict:
        """JSON-native types only: lists, strings, numbers, booleans, null."""
        tls = self.tls
        return {
            "banner_seconds": self.banner_seconds,
            "stage_seconds": dict(self.stage_seconds),
            "replies": {stage: {"code": reply.code, "enhanced": reply.enhanced, "lines": list(reply.lines)}
                        for stage, reply in self.replies.items()},
            "capabilities": sorted(self.capabilities) if self.capabilities is not None else None,
            "auth_mechanisms": sorted(self.auth_mechanisms),
            "size_limit": self.size_limit,
            "encrypted": self.encrypted,
            "tls": None if tls is None else {
                "handshake_seconds": tls.handshake_seconds, "version": tls.version, "cipher": tls.cipher,
                "verified": tls.verified, "verify_error": tls.verify_error,
                "earliest_expiry": tls.earliest_expiry, "verified_chain_expiry": tls.verified_chain_expiry,
                "subject": tls.subject},
            "explanations": [{"reply": heading, "meaning": meaning} for heading, meaning in self.explanations],
        }
