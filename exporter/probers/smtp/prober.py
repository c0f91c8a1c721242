"""The ``smtp`` prober as a plugin: its config section, states and families (a mail server, or with
``smtp.mx`` a mail domain: every MX host of it). What people read comes from its details types
(``SmtpDetails``, ``MailDomainDetails``)."""

from __future__ import annotations

from exporter.probers.base import Prober
from exporter.probers.connect.metrics import CONNECT_FAMILIES
from exporter.probers.connect.settings import TCP_SECTION
from exporter.probers.module import Module
from exporter.probers.smtp.domain import with_mail_domains
from exporter.probers.smtp.metrics import SMTP_FAMILIES
from exporter.probers.smtp.result import BANNER, CERTIFICATE, REPLIES, SmtpState
from exporter.probers.smtp.session import probe_smtp
from exporter.probers.smtp.settings import SMTP_SECTION, default_port, ehlo_fallback_problem, local_fqdn, smtp_settings
from exporter.probers.tls.families import TLS_FAMILIES


def warnings(module: Module) -> list[str]:
    if smtp_settings(module).ehlo is not None:
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
    default_port=lambda module: default_port(smtp_settings(module)),
    warnings=warnings,
    columns=(BANNER, REPLIES, CERTIFICATE),
    reads_greeting=True,
)
# With smtp.mx the target is a mail domain (exporter.probers.smtp.domain).
PROBER = with_mail_domains(_SERVER)
