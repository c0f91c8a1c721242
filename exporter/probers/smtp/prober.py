"""The ``smtp`` prober as a plugin: its config section, states, families and the facts people read
(a mail server, or with ``smtp.mx`` a mail domain: every MX host of it)."""

from __future__ import annotations

from typing import Any

from exporter.probers.base import Fact, Prober
from exporter.probers.connect.metrics import CONNECT_FAMILIES
from exporter.probers.connect.result import ProbeResult
from exporter.probers.connect.settings import TCP_SECTION
from exporter.probers.module import Module
from exporter.probers.smtp.domain import with_mail_domains
from exporter.probers.smtp.metrics import SMTP_FAMILIES
from exporter.probers.smtp.result import SmtpDetails, SmtpState
from exporter.probers.smtp.session import probe_smtp
from exporter.probers.smtp.settings import SMTP_SECTION, default_port, ehlo_fallback_problem, local_fqdn
from exporter.probers.tls.families import TLS_FAMILIES, expiry_words

BANNER, REPLIES, CERTIFICATE = "Banner after", "SMTP replies", "Certificate expires"


def _details(result: ProbeResult) -> SmtpDetails | None:
    details = result.details
    return details if isinstance(details, SmtpDetails) else None


def facts(result: ProbeResult, now: float) -> list[Fact]:
    details = _details(result)
    if details is None:
        return []
    out = []
    if details.banner_seconds is not None:
        out.append(Fact(BANNER, f"{details.banner_seconds * 1000:.2f} ms"))
    if details.replies:
        out.append(Fact(REPLIES, ", ".join(f"{stage} {code}" for stage, code in details.reply_codes.items())))
    if details.cert_expiry is not None:
        out.append(Fact(CERTIFICATE, expiry_words(details.cert_expiry, now)))
    return out


def explanations(result: ProbeResult) -> list[tuple[str, str]]:
    details = _details(result)
    return list(details.explanations) if details is not None else []


def details_json(result: ProbeResult) -> dict[str, Any] | None:
    details = _details(result)
    return details.to_json() if details is not None else None


def warnings(module: Module) -> list[str]:
    if module.settings.ehlo is not None:
        return []
    problem = ehlo_fallback_problem(local_fqdn())
    return [problem] if problem else []


_SERVER = Prober(
    name="smtp",
    probe=probe_smtp,
    states=SmtpState,
    error_state=SmtpState.ERROR,
    cut_state=SmtpState.TIMEOUT,
    # The TLS families are the set shared with the tcp prober: one HELP/TYPE per name in an exposition.
    families=CONNECT_FAMILIES + SMTP_FAMILIES + TLS_FAMILIES,
    tcp_section=TCP_SECTION,
    section=("smtp", SMTP_SECTION),
    default_port=lambda module: default_port(module.settings),
    warnings=warnings,
    facts=facts,
    explanations=explanations,
    details_json=details_json,
    columns=(BANNER, REPLIES, CERTIFICATE),
    greeting_seconds=lambda result: d.banner_seconds if (d := _details(result)) is not None else None,
)
# With smtp.mx the target is a mail domain (exporter.probers.maildomain).
PROBER = with_mail_domains(_SERVER)
