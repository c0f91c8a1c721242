"""A real SMTP server for the tests: aiosmtpd with a mailbox, optional STARTTLS or implicit TLS, and AUTH."""

from __future__ import annotations

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

from tests.helpers.smtp_servers import Pki


class Mailbox:
    """An aiosmtpd handler: refuses recipients starting with 'nobody', keeps delivered messages."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("nobody"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        return "250 2.0.0 OK: queued"


def authenticator(server, session, envelope, mechanism, auth_data):
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"probe", b"s3cret-pw")
    return AuthResult(success=ok, handled=False)  # handled=False: aiosmtpd sends the 535 itself


async def start_aiosmtpd(servers, cert=None, implicit=False, mailbox=None, **options) -> int:
    context = Pki.server_context(cert) if cert is not None else None
    mailbox = mailbox or Mailbox()

    def factory():
        return SMTP(
            mailbox,
            hostname="mx.test",
            tls_context=None if implicit else context,
            authenticator=authenticator,
            auth_require_tls=True,
            **options,
        )

    return await servers.serve_protocol(factory, ssl=context if implicit else None)


def tls_config(pki: Pki, **extra) -> str:
    fields = {"ca_file": f"'{pki.ca_file}'", "server_name": "mx.test", **extra}
    return "{" + ", ".join(f"{key}: {value}" for key, value in fields.items()) + "}"
