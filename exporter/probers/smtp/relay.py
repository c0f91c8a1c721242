"""The open-relay check: after the envelope, ask the server to take mail for a foreign domain.

A mail server that accepts ``RCPT TO`` an address in a domain it neither hosts nor is allowed to
relay for, from an unauthenticated stranger, is an *open relay* (RFC 2505, the anti-spam
recommendations for MTAs, asks that unauthorised relaying be refused): spammers use it and block
lists list it within hours.
Here acceptance is the failure. The check runs in its own transaction (MAIL FROM, RCPT TO, RSET)
after the configured envelope, so a test message (DATA) never goes to the foreign address.

Outcomes of ``RCPT TO:<relay_check_rcpt_to>``:
- 250/251: accepted -> state ``open_relay``.
- 5xx: refused, as it should be (550 5.7.1 "relaying denied" is the usual answer; a 556 says the
  foreign domain takes no mail at all, which also proves nothing was relayed).
- 4xx: refused for now (greylisting, a busy server): not an open relay at this moment, but not
  proof either; the probe passes and the transcript says the check was inconclusive.

Called by the smtp prober's dialogue (``exporter/probers/smtp/session.py``) after the envelope; the
dialogue owns the connection, this module only decides, through the session's public ``command``.
"""

from __future__ import annotations

from typing import Protocol

from exporter.probers.connect.result import ProbeResult
from exporter.probers.smtp.replies import Reply
from exporter.probers.smtp.result import SmtpState
from exporter.probers.smtp.settings import SmtpSettings

OPEN_RELAY_EXPLANATION = (
    "the server accepted a recipient in a domain it must not relay to, from a client that did not "
    "authenticate: it is an open relay — anyone can send mail through it, and it will be abused and "
    "blocklisted"
)


class RelaySession(Protocol):
    """What the check needs of the smtp prober's open session."""

    settings: SmtpSettings
    result: ProbeResult

    async def command(self, stage: str, line: str) -> Reply: ...

    def quote(self, reply: Reply) -> str: ...


def _code(reply: Reply) -> str:
    return reply.code_text


async def check_relay(session: RelaySession) -> tuple[SmtpState, str] | None:
    """Run the relay check on the smtp prober's open session; a (state, detail) to stop with, or None."""
    settings = session.settings
    foreign = settings.relay_check_rcpt_to
    if not foreign:
        return None
    result = session.result
    reply = await session.command("relay_mail", f"MAIL FROM:<{settings.mail_from}>")
    if reply.code != 250:
        return (
            SmtpState.SENDER_REJECTED,
            f"the open-relay check could not start: MAIL FROM:<{settings.mail_from}> was answered "
            f"{_code(reply)} {session.quote(reply)}",
        )
    reply = await session.command("relay_rcpt", f"RCPT TO:<{foreign}>")
    await session.command("relay_rset", "RSET")  # end the transaction: nothing is ever sent
    if reply.code in (250, 251):
        return (
            SmtpState.OPEN_RELAY,
            f"open relay: RCPT TO:<{foreign}> was answered {_code(reply)}: {OPEN_RELAY_EXPLANATION}. "
            f"The server said {session.quote(reply)}",
        )
    if 400 <= reply.code < 500:
        result.note(
            f"Open-relay check inconclusive: RCPT TO:<{foreign}> was refused for now ({_code(reply)}); "
            "not relaying at this moment, but a temporary refusal proves nothing"
        )
        return None
    if 500 <= reply.code < 600:
        result.note(f"Open-relay check passed: RCPT TO:<{foreign}> was refused ({_code(reply)}), as it should be")
        return None
    return (
        SmtpState.PROTOCOL_ERROR,
        f"the open-relay check got an unexpected reply {_code(reply)} to RCPT TO:<{foreign}>",
    )
