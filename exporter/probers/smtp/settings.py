"""The ``smtp:`` section of an smtp module, and its rules across fields."""

from __future__ import annotations

import functools
import re
import socket
from dataclasses import dataclass
from typing import Any

from exporter.core import schema
from exporter.core.schema import Errors, Field, Secret, Section
from exporter.probers.module import Module
from exporter.probers.tls.settings import TLS_CONFIG_SECTION, TlsConfig

SMTP_PORT = 25
SMTPS_PORT = 465
DEFAULT_TEST_SUBJECT = "connectivity_exporter test message"
DEFAULT_TEST_BODY = "This message was sent by connectivity_exporter to test mail delivery.\n"


@functools.cache
def local_fqdn() -> str:
    """This host's FQDN, the default EHLO name; looked up once, when first needed."""
    return socket.getfqdn() or "localhost"


def ehlo_fallback_problem(name: str) -> str | None:
    """Why ``name`` (the host's own name, used when ``ehlo`` is not set) will be refused by many servers."""
    if name.lower() == "localhost" or name.lower().endswith(".localdomain") or "." not in name:
        return (
            f"smtp.ehlo is not set and this host has no fully qualified domain name, so the probe says "
            f"EHLO {name}; many mail servers reject that (RFC 5321 §4.1.1.1 asks for the client's FQDN or "
            "an address literal): set smtp.ehlo to this host's public DNS name"
        )
    return None


@dataclass(frozen=True, slots=True)
class SmtpAuth:
    username: str
    password: Secret
    mechanism: str = "auto"  # auto | plain | login


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    ehlo: str | None = None  # None: this host's FQDN, looked up when the probe runs
    expect_banner: re.Pattern[str] | None = None
    starttls: str = "opportunistic"  # no | opportunistic | required (ignored with tls: true)
    tls: bool = False  # implicit TLS from the first byte (port 465)
    tls_config: TlsConfig = TlsConfig()
    mail_from: str | None = None
    rcpt_to: str | None = None
    send_test_message: bool = False
    subject: str = DEFAULT_TEST_SUBJECT
    body: str = DEFAULT_TEST_BODY
    auth: SmtpAuth | None = None
    # Mail domains (exporter/probers/maildomain.py).
    mx: bool = False  # the target is a mail domain: probe its MX hosts (RFC 5321 5.1)
    mx_max_hosts: int = 5  # at most this many MX hosts probed, the module's timeout shared among them
    relay_check_rcpt_to: str | None = None  # RCPT TO this foreign address must be refused (open-relay check)
    # Mail TLS policies of a mail domain (exporter/probers/smtp/mail_tls.py).
    mta_sts: bool = False  # MTA-STS (RFC 8461) and TLS-RPT (RFC 8460)
    dane: bool = False  # DANE TLSA records of every MX host (RFC 7672)

    def __post_init__(self) -> None:
        if (self.mta_sts or self.dane) and not self.mx:
            raise ValueError("mta_sts and dane need mx: true (they judge the MX hosts of a mail domain)")
        if self.relay_check_rcpt_to and not self.mail_from:
            raise ValueError("relay_check_rcpt_to needs mail_from (the relay check starts with MAIL FROM)")
        if self.rcpt_to and not self.mail_from:
            raise ValueError("rcpt_to needs mail_from (the envelope starts with MAIL FROM)")
        if self.send_test_message and not (self.mail_from and self.rcpt_to):
            raise ValueError("send_test_message needs mail_from and rcpt_to")
        if "\n" in self.subject or "\r" in self.subject:
            raise ValueError("subject must be a single line")
        if self.auth is not None and not (self.tls or self.starttls == "required"):
            raise ValueError("auth needs an encrypted session: set starttls: required or tls: true")

    @property
    def encrypted(self) -> bool:
        return self.tls or self.starttls != "no"

    @property
    def ehlo_name(self) -> str:
        return self.ehlo if self.ehlo is not None else local_fqdn()


_SMTP_WORD = re.compile(r"[!-;=?-~]{1,254}\Z")  # printable ASCII minus '<' and '>'


def _starttls(value: Any, path: str, errs: Errors) -> Any:
    # YAML 1.1 reads an unquoted `no` as false; accept it as the word it was meant to be.
    return schema.choice("no", "opportunistic", "required")("no" if value is False else value, path, errs)


AUTH_SECTION = Section(
    {
        "username": Field(schema.string),
        "password_file": Field(schema.password_file),
        "mechanism": Field(schema.choice("auto", "plain", "login"), "auto"),
    },
    lambda username, password_file, mechanism: SmtpAuth(username, password_file, mechanism),
)

SMTP_SECTION = Section(
    {
        "ehlo": Field(schema.token("a host name", "probe.example.com", _SMTP_WORD), None),
        "expect_banner": Field(schema.regex, None),
        "starttls": Field(_starttls, "opportunistic"),
        "tls": Field(schema.boolean, False),
        "tls_config": Field(schema.subsection(TLS_CONFIG_SECTION), TlsConfig()),
        "mail_from": Field(schema.token("a mail address", "probe@example.com", _SMTP_WORD), None),
        "rcpt_to": Field(schema.token("a mail address", "postmaster@example.com", _SMTP_WORD), None),
        "send_test_message": Field(schema.boolean, False),
        "subject": Field(schema.string, DEFAULT_TEST_SUBJECT),
        "body": Field(schema.string, DEFAULT_TEST_BODY),
        "auth": Field(schema.subsection(AUTH_SECTION), None),
        # Mail domains (exporter/probers/maildomain.py).
        "mx": Field(schema.boolean, False),
        "mx_max_hosts": Field(schema.integer(1, 20), 5),
        "relay_check_rcpt_to": Field(
            schema.token(
                "a mail address in a domain the server must not relay to", "relay-test@example.net", _SMTP_WORD
            ),
            None,
        ),
        "mta_sts": Field(schema.boolean, False),
        "dane": Field(schema.boolean, False),
    },
    SmtpSettings,
)


def default_port(settings: SmtpSettings) -> int:
    return SMTPS_PORT if settings.tls else SMTP_PORT


def smtp_settings(module: Module) -> SmtpSettings:
    """The module's ``smtp:`` section: the config loader sets it for every module of the smtp prober."""
    settings = module.settings
    assert isinstance(settings, SmtpSettings), f"module {module.name}: not an smtp module"
    return settings
