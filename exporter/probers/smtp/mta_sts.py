"""MTA-STS (RFC 8461): the TXT record, the policy text, MX patterns and the domain's state.

Pure functions: the lookups and the HTTPS fetch are elsewhere (``policy_dns``, ``policy_fetch``),
the STARTTLS certificate check is ``mx_certificate``. What a sender that applies MTA-STS does:

- ``_mta-sts.<domain>`` TXT: records not beginning with ``v=STSv1;`` are discarded; if not exactly
  one remains, or it is invalid, the domain has no policy (§3.1).
- The policy (§3.2): ``version: STSv1``, ``mode: enforce | testing | none``, ``max_age`` (0 to
  31557600), ``mx`` patterns (at least one unless mode is none); lines end in LF or CRLF; unknown
  keys are ignored.
- An MX host is valid for the policy (§4) when its name matches a pattern (a ``*.`` wildcard
  matches exactly one leftmost label) and it offers STARTTLS with a certificate that verifies for
  the MX name with the sender's trust store. ``enforce``: senders do not deliver to a host that
  fails; ``testing``: they deliver anyway and report the failure (TLS-RPT, RFC 8460).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from exporter.probers.smtp.mx_certificate import MxTls, TlsOutcome

MAX_AGE_LIMIT = 31557600  # RFC 8461 §3.2
MAX_PATTERNS = 20  # kept for series and JSON; a policy with more is still judged on all of them
_ID = re.compile(r"[A-Za-z0-9]{1,32}\Z")
_LABEL = re.compile(r"(?!-)[a-z0-9-]{1,63}(?<!-)\Z")
_KEY = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")


class MtaStsState(StrEnum):
    ABSENT = "absent"  # no (valid) _mta-sts TXT record: senders do not apply MTA-STS
    NONE = "none"  # a policy in mode none: senders treat the domain as without policy
    TESTING_OK = "testing_ok"
    TESTING_FAILING = "testing_failing"  # senders deliver anyway and report (TLS-RPT)
    ENFORCE_OK = "enforce_ok"
    ENFORCE_FAILING = "enforce_failing"  # enforcing senders refuse the failing MX hosts
    POLICY_UNAVAILABLE = "policy_unavailable"  # the TXT record says there is a policy; fetching it failed
    POLICY_INVALID = "policy_invalid"  # fetched, but not a valid policy


class MxPolicyState(StrEnum):
    OK = "ok"
    NOT_LISTED = "not_listed"  # the MX name matches no mx pattern of the policy
    CERTIFICATE_INVALID = "certificate_invalid"  # STARTTLS works, the certificate does not verify
    NO_STARTTLS = "no_starttls"  # the host does not offer STARTTLS
    TLS_FAILED = "tls_failed"  # STARTTLS offered, the handshake failed
    UNCHECKED = "unchecked"  # not reached (connect failed, no time): no verdict on its TLS


FAILING = frozenset(
    {MxPolicyState.NOT_LISTED, MxPolicyState.CERTIFICATE_INVALID, MxPolicyState.NO_STARTTLS, MxPolicyState.TLS_FAILED}
)


@dataclass(frozen=True, slots=True)
class Policy:
    mode: str
    max_age: int
    mx: tuple[str, ...]


@dataclass(slots=True)
class MxPolicyCheck:
    host: str
    preference: int
    state: MxPolicyState
    reason: str  # one sentence for a person

    @property
    def failing(self) -> bool:
        return self.state in FAILING


@dataclass(slots=True)
class MtaStsResult:
    state: MtaStsState = MtaStsState.ABSENT
    id: str | None = None
    policy: Policy | None = None
    reason: str = ""  # why the state, in words (the TXT record, the fetch, the policy)
    mx: list[MxPolicyCheck] = field(default_factory=list)

    @property
    def failing_mx(self) -> list[str]:
        return [check.host for check in self.mx if check.failing]

    def contract(self) -> dict[str, object]:
        """The ``mta_sts`` object of ``check --json`` (contract keys first)."""
        policy = self.policy
        return {
            "state": str(self.state),
            "mode": policy.mode if policy else None,
            "id": self.id,
            "max_age": policy.max_age if policy else None,
            "mx_patterns": list(policy.mx[:MAX_PATTERNS]) if policy else [],
            "failing_mx": self.failing_mx,
            "reason": self.reason,
            "mx": [{"host": c.host, "state": str(c.state), "reason": c.reason} for c in self.mx],
        }


# --- the TXT record (§3.1) -----------------------------------------------------------------


def parse_txt(records: list[str]) -> tuple[str | None, str]:
    """The policy id, or None and why senders see no policy."""
    candidates = [record for record in records if record.startswith("v=STSv1;")]
    if not candidates:
        if any(record.startswith("v=STSv1") for record in records):
            return None, "the _mta-sts TXT record lacks the ';' after v=STSv1, so it is not an MTA-STS record"
        return None, "no _mta-sts TXT record beginning with v=STSv1;"
    if len(candidates) > 1:
        return None, (
            f"{len(candidates)} _mta-sts TXT records begin with v=STSv1; — RFC 8461 §3.1 says senders then "
            "assume the domain has no policy: publish exactly one"
        )
    fields = [part.strip(" \t") for part in candidates[0].split(";")[1:]]
    ids = [value for key, _, value in (part.partition("=") for part in fields if part) if key == "id"]
    if not ids:
        return None, "the _mta-sts TXT record has no id= field, so it is invalid and senders ignore it"
    if not _ID.match(ids[0]):
        return None, (
            f"the _mta-sts TXT record's id {ids[0][:40]!r} is not 1 to 32 letters and digits (RFC 8461 §3.1), "
            "so senders ignore the record"
        )
    return ids[0], ""


# --- the policy (§3.2) -----------------------------------------------------------------------


def parse_policy(text: str) -> Policy | str:
    """The policy, or why it is invalid (one sentence)."""
    values: dict[str, str] = {}
    patterns: list[str] = []
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line.strip(" \t"):
            continue
        key, colon, value = line.partition(":")
        if not colon or not _KEY.match(key):
            return f"line {number} of the policy is not 'key: value'"
        value = value.strip(" \t")
        if key == "mx":
            patterns.append(value.lower())
        else:
            values.setdefault(key, value)  # the first occurrence counts
    if values.get("version") != "STSv1":
        return "the policy has no 'version: STSv1' line"
    mode = values.get("mode")
    if mode not in ("enforce", "testing", "none"):
        return f"the policy's mode is {mode!r}, not enforce, testing or none" if mode else "the policy has no mode"
    max_age = values.get("max_age", "")
    if not (max_age.isascii() and max_age.isdigit() and len(max_age) <= 10):
        return "the policy has no max_age (a whole number of seconds)" if not max_age else "max_age is not a number"
    if int(max_age) > MAX_AGE_LIMIT:
        return f"max_age {max_age} is above the maximum of {MAX_AGE_LIMIT} seconds (RFC 8461 §3.2)"
    for pattern in patterns:
        if not _valid_pattern(pattern):
            return f"mx pattern {pattern[:80]!r} is not a host name or '*.' followed by one"
    if mode != "none" and not patterns:
        return f"the policy is in mode {mode} but lists no mx pattern"
    return Policy(mode, int(max_age), tuple(patterns))


def _valid_pattern(pattern: str) -> bool:
    name = pattern[2:] if pattern.startswith("*.") else pattern
    labels = name.rstrip(".").split(".")
    return len(name) <= 253 and len(labels) >= 1 and all(_LABEL.match(label) for label in labels)


def matches(pattern: str, host: str) -> bool:
    """§4.1: exact (case-insensitive) or ``*.rest``, where ``*`` stands for exactly one leftmost label."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):
        first, dot, rest = host.partition(".")
        return bool(first) and bool(dot) and rest == pattern[2:]
    return pattern == host


# --- per MX host (§4) ------------------------------------------------------------------------

# OpenSSL X509_V_ERR codes (ssl.SSLCertVerificationError.verify_code) with wording a mail admin acts on.
_VERIFY_WORDS = {
    9: "is not valid yet",
    10: "has expired",
    18: "is self-signed",
    19: "chains to a CA that is not in the trust store",
    20: "is not issued by a CA in the trust store (or the server does not send its intermediate certificates)",
    21: "cannot be verified: the server does not send its intermediate certificates",
}
HOSTNAME_MISMATCH = 62


def certificate_words(host: str, tls: MxTls) -> str:
    """Why the certificate does not verify for ``host``, in one phrase."""
    names = ", ".join(tls.names[:4]) or "no DNS name"
    if tls.verify_code == HOSTNAME_MISMATCH:
        return f"the certificate is for {names}, not {host}"
    words = _VERIFY_WORDS.get(tls.verify_code or -1)
    if words:
        return f"the certificate (for {names}) {words}"
    return f"the certificate (for {names}) does not verify: {tls.verify_message or 'unknown reason'}"


def check_mx(policy: Policy, host: str, preference: int, tls: MxTls | None) -> MxPolicyCheck:
    if not any(matches(pattern, host) for pattern in policy.mx):
        shown = ", ".join(policy.mx[:6]) + (", ..." if len(policy.mx) > 6 else "")
        return MxPolicyCheck(
            host, preference, MxPolicyState.NOT_LISTED, f"{host} is not listed in the policy (mx: {shown})"
        )
    if tls is None or tls.outcome is TlsOutcome.UNREACHED:
        why = tls.reason if tls is not None else "no time was left to check it"
        return MxPolicyCheck(host, preference, MxPolicyState.UNCHECKED, f"{host}'s TLS could not be checked: {why}")
    if tls.outcome is TlsOutcome.NO_STARTTLS:
        return MxPolicyCheck(
            host, preference, MxPolicyState.NO_STARTTLS, f"{host} does not offer STARTTLS ({tls.reason})"
        )
    if tls.outcome is TlsOutcome.HANDSHAKE_FAILED:
        return MxPolicyCheck(
            host, preference, MxPolicyState.TLS_FAILED, f"the TLS handshake with {host} failed ({tls.reason})"
        )
    if tls.outcome is TlsOutcome.NOT_VERIFIED:
        return MxPolicyCheck(host, preference, MxPolicyState.CERTIFICATE_INVALID, certificate_words(host, tls))
    return MxPolicyCheck(host, preference, MxPolicyState.OK, f"{host} is listed and its certificate verifies")


def classify(result: MtaStsResult) -> None:
    """The domain's state from its policy and the MX checks already in ``result``."""
    policy = result.policy
    if policy is None:
        return
    if policy.mode == "none":
        result.state = MtaStsState.NONE
        return
    failing = any(check.failing for check in result.mx)
    if policy.mode == "enforce":
        result.state = MtaStsState.ENFORCE_FAILING if failing else MtaStsState.ENFORCE_OK
    else:
        result.state = MtaStsState.TESTING_FAILING if failing else MtaStsState.TESTING_OK


def state_words(domain: str, result: MtaStsResult) -> str:
    """The MTA-STS verdict in one sentence a mail admin can act on."""
    state, failing = result.state, [check for check in result.mx if check.failing]
    reasons = "; ".join(check.reason for check in failing)
    if state is MtaStsState.ABSENT:
        return f"{domain} publishes no MTA-STS policy ({result.reason}): senders do not apply MTA-STS"
    if state is MtaStsState.NONE:
        return f"{domain}'s MTA-STS policy is in mode none: senders treat the domain as having no policy"
    if state is MtaStsState.POLICY_UNAVAILABLE:
        return (
            f"{domain} announces an MTA-STS policy but it cannot be fetched: {result.reason}; senders without "
            "a cached policy deliver as if there were none, senders with a cached one keep applying it"
        )
    if state is MtaStsState.POLICY_INVALID:
        return (
            f"{domain}'s MTA-STS policy is invalid: {result.reason}; senders treat the domain as having no "
            "policy (or keep a cached one)"
        )
    if state is MtaStsState.ENFORCE_FAILING:
        return (
            f"MTA-STS enforce: senders that enforce MTA-STS refuse to deliver to {', '.join(result.failing_mx)} "
            f"and defer the mail if no other MX host passes: {reasons}"
        )
    if state is MtaStsState.TESTING_FAILING:
        return (
            f"MTA-STS testing: {reasons}; senders still deliver and report the failure (TLS-RPT), but the "
            "policy would fail in enforce mode"
        )
    unchecked = [check.host for check in result.mx if check.state is MxPolicyState.UNCHECKED]
    extra = f" (not checked: {', '.join(unchecked)})" if unchecked else ""
    mode = "enforce" if state is MtaStsState.ENFORCE_OK else "testing"
    return f"MTA-STS {mode}: every MX host checked is listed in the policy and its certificate verifies{extra}"
