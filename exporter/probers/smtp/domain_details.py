"""What probing a mail domain found: the verdict states, each MX host's outcome, and how they read.

The data side of ``exporter.probers.smtp.domain`` (which runs the probe): ``MailDomainDetails`` is
``ProbeResult.details`` for a mail domain, with its facts, explanations, ``check --json`` contract
and the MX table people read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from exporter.probers.connect.result import DetailsBase, Fact, JsonObject, ProbeResult, TcpState
from exporter.probers.smtp import mail_tls
from exporter.probers.smtp.replies import Reply
from exporter.probers.smtp.result import SmtpDetails

NOT_PROBED = "not_probed"


class MailDomainState(StrEnum):
    OK = "ok"  # the most preferred reachable MX accepts
    DEGRADED = "degraded"  # a more preferred MX fails, a backup accepts: mail delayed, not lost
    ALL_MX_FAILED = "all_mx_failed"  # no MX host accepts
    NULL_MX = "null_mx"  # RFC 7505: the domain accepts no mail
    NO_SUCH_DOMAIN = "no_such_domain"  # NXDOMAIN
    DNS_ERROR = "dns_error"  # a temporary DNS failure: SERVFAIL, timeout
    NO_MAIL_HOST = "no_mail_host"  # the domain exists with neither MX nor address records


# RFC 7504's two codes, as they read for a whole domain (the per-reply wording is smtp_explain's).
DOMAIN_REPLY_MEANINGS = {
    521: "521 (RFC 7504): this host says it never accepts mail; if every MX host of the domain says so, "
    "the domain takes no mail at all (like a null MX); if only some do, those hosts are misconfigured "
    "as MX hosts",
    556: "556 (RFC 7504): the recipient's domain does not accept mail — the server checked the domain "
    "(typically found a null MX, RFC 7505) and will never deliver there; the sender must not retry",
}


# The verdicts in a few words (the MX table's heading); the full sentence is the probe's detail.
STATE_WORDS = {
    MailDomainState.OK: "mail to the domain is accepted now",
    MailDomainState.DEGRADED: "a preferred MX host fails, a backup accepts: mail is delayed, not lost",
    MailDomainState.ALL_MX_FAILED: "no MX host accepts mail now",
    MailDomainState.NULL_MX: "a null MX, RFC 7505: the domain accepts no mail",
    MailDomainState.NO_SUCH_DOMAIN: "NXDOMAIN, the domain does not exist: mail to it bounces",
    MailDomainState.DNS_ERROR: "the MX lookup failed for now: senders queue mail and retry",
    MailDomainState.NO_MAIL_HOST: "neither MX nor address records: the domain takes no mail",
}


@dataclass(slots=True)
class MxHost:
    host: str
    preference: int
    addresses: list[str] = field(default_factory=list)
    implicit: bool = False
    state: str = NOT_PROBED  # the smtp prober's SmtpState, or not_probed
    tcp_state: str | None = None
    success: bool = False
    address: str | None = None  # the address the verdict comes from
    detail: str = ""
    greeting: str | None = None
    dns_seconds: float = 0.0
    connect_seconds: float | None = None
    duration_seconds: float = 0.0
    smtp: SmtpDetails | None = None
    dns_temporary: bool = False  # no address because a lookup failed for now
    refused_by: str | None = None  # why senders enforcing MTA-STS refuse this host (smtp.mta_sts)

    @property
    def probed(self) -> bool:
        return self.state != NOT_PROBED

    def reply(self, stage: str) -> Reply | None:
        return self.smtp.replies.get(stage) if self.smtp is not None else None


@dataclass(slots=True)
class MailDomainDetails(DetailsBase):
    """What probing a mail domain found (``ProbeResult.details`` with ``smtp.mx: true``)."""

    domain: str
    state: MailDomainState = MailDomainState.DNS_ERROR
    mx_records: int | None = None  # MX records in the answer; None when the lookup failed
    implicit: bool = False
    mx: list[MxHost] = field(default_factory=list)
    lookup_seconds: float = 0.0
    verdict: str = ""
    tls: mail_tls.MailTls | None = None  # smtp.mta_sts / smtp.dane (exporter.probers.smtp.mail_tls)

    def facts(self, state: str, now: float) -> list[Fact]:
        words = mail_tls.refused_words([host for host in self.mx if host.probed]) or STATE_WORDS[self.state]
        return [Fact("Mail domain", f"{self.state} ({words})")]

    def explanations(self) -> list[tuple[str, str]]:
        """Each host's explained replies, headed by the host (read by `check` and /probe?debug=true)."""
        out: list[tuple[str, str]] = []
        for host in self.mx:
            if host.smtp is None:
                continue
            for heading, meaning in host.smtp.reply_explanations:
                code = heading.split()[1] if len(heading.split()) > 1 else ""
                domain_meaning = DOMAIN_REPLY_MEANINGS.get(int(code)) if code.isdigit() else None
                out.append((f"{host.host}: {heading}", domain_meaning or meaning))
        return out

    def json_sections(self) -> JsonObject:
        return {"mail_domain": self.contract()}

    def report_lines(self) -> list[str]:
        return render_text(self)

    def contract(self) -> JsonObject:
        """The ``mail_domain`` object of ``check --json`` (a contract: keys kept, extended freely)."""
        return {
            "domain": self.domain,
            "state": str(self.state),
            "verdict": self.verdict,
            "mx_records": self.mx_records,
            "implicit_mx": self.implicit,
            "mx": [
                {
                    "host": host.host,
                    "preference": host.preference,
                    "addresses": list(host.addresses),
                    "state": host.state,
                    "tcp_state": host.tcp_state,
                    "success": host.success,
                    "address": host.address,
                    "greeting": host.greeting,
                    "detail": host.detail,
                    "reply_codes": host.smtp.reply_codes if host.smtp is not None else {},
                    "duration_seconds": host.duration_seconds,
                }
                for host in self.mx
            ],
            **(self.tls.contract() if self.tls is not None else {"mta_sts": None, "tls_rpt": None, "dane": None}),
        }


def mail_domain(result: ProbeResult) -> MailDomainDetails | None:
    details = result.details
    return details if isinstance(details, MailDomainDetails) else None


def render_text(details: MailDomainDetails) -> list[str]:
    """The MX table, in the order tried; [] for results that are not a mail domain's or have no MX host.
    (The verdict is the probe's detail and the plugin's "Mail domain" fact.)"""
    if not details.mx:
        return mail_tls.render_text(details.tls)
    lines = [f"MX hosts of {details.domain}, in the order tried:"]
    rows = [("PREF", "MX HOST", "ADDRESSES", "STATE", "GREETING")]
    for host in details.mx:
        addresses = ", ".join(host.addresses) or "-"
        state = host.state
        if host.probed and host.tcp_state not in (None, TcpState.OPEN):
            state += f" ({host.tcp_state})"
        rows.append(
            (
                str(host.preference),
                host.host + (" (implicit)" if host.implicit else ""),
                addresses,
                state,
                host.greeting or "-",
            )
        )
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines += [
        "  " + "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    return lines + mail_tls.render_text(details.tls)
