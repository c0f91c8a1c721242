"""The ``smtp`` prober: the ``telnet mx 25`` mail test, done carefully, timed, and explained.

Dialogue: connect (as the tcp prober does) -> [implicit TLS] -> greeting (220) -> EHLO (HELO
if EHLO gets a 5xx) -> [STARTTLS -> handshake -> EHLO again] -> [AUTH] -> [MAIL FROM ->
RCPT TO -> RSET, or DATA with a test message when explicitly configured] -> QUIT.
Each stage is timed and its last reply kept; the first stage that fails decides the state
(``SmtpState``) and the dialogue ends there with a QUIT. Nothing here raises for a network or
protocol failure: every outcome becomes a classified ``ProbeResult``.

Certificate verification is OpenSSL's, during the handshake; see ``smtp_tls`` for how an
opportunistic session continues after a certificate that does not verify.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import email.message
import email.policy
import email.utils
import re
import socket
import ssl
import time

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.transcript import printable, record
from exporter.probers.connect.dial import connect_target
from exporter.probers.connect.mtu import Finding, MtuCheck
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probers.smtp import mtu as smtp_mtu
from exporter.probers.smtp.explain import Explanation, Party, explain
from exporter.probers.smtp.relay import check_relay
from exporter.probers.smtp.replies import (
    ConnectionClosed,
    MalformedReply,
    Reply,
    ReplyCode,
    ReplyReader,
    ReplyTimeout,
    decode,
    open_stream,
)
from exporter.probers.smtp.result import SmtpDetails, SmtpState
from exporter.probers.smtp.settings import SmtpSettings, ehlo_fallback_problem, smtp_settings
from exporter.probers.tls.errors import describe_handshake_failure, describe_verify_failure
from exporter.probers.tls.handshake import TlsInfo, client_context, describe, server_name
from exporter.probers.tls.stdlib_adapter import abort_transport

MASK = "********"
# A reply to a line that carried credentials may echo them: its text is withheld (by position, not by
# searching it for the secret, which would reveal the secret through what got blanked).
WITHHELD = "(text withheld: this reply answers a line that carried credentials)"
# The graceful close (a TLS close_notify) may take this long before the connection is dropped.
CLOSE_GRACE = 0.25
# A server that does not answer QUIT must not hold a finished probe until its deadline.
QUIT_WAIT = 1.0
# Said after a dialogue without RCPT TO: Postfix's default smtpd_delay_reject answers a client block only there.
ENVELOPE_HINT = (
    "No envelope was tested (no rcpt_to): a server that refuses every message from this address may "
    "still greet and answer EHLO (Postfix, by default, says so only at RCPT TO). To catch that, use a "
    "module with mail_from and rcpt_to (e.g. postmaster@ the domain; RSET follows, nothing is sent)"
)
_SIZE = re.compile(r"\d{1,15}\Z")


class _Stop(Exception):
    """Ends the dialogue with a state; ``detail`` is the one line shown to a person."""

    def __init__(self, state: SmtpState, detail: str):
        super().__init__(detail)
        self.state = state
        self.detail = detail


class _Unverified(Exception):
    """The certificate did not verify and the policy says: carry on without verification."""


async def probe_smtp(target: HostPort, module: Module, deadline: Deadline, resolver: Resolver) -> ProbeResult:
    settings = smtp_settings(module)
    result = ProbeResult(state=SmtpState.CONNECT_FAILED)
    tls_config = settings.tls_config
    verify = settings.encrypted and not tls_config.insecure_skip_verify
    try:
        await _Session(result, target, settings, deadline, verify).run(module, resolver)
    except _Unverified as unverified:
        result.note(
            f"Certificate not verified ({unverified}); starttls is opportunistic, so the probe "
            "reconnects and continues without verification"
        )
        session = _Session(result, target, settings, deadline, verify=False)
        await session.run(module, resolver, verify_error=str(unverified))
    result.success = result.state == SmtpState.OK
    return result


class _Session:
    """One connection's dialogue; writes its findings into ``result`` and ``result.details``."""

    def __init__(self, result: ProbeResult, target: HostPort, settings: SmtpSettings, deadline: Deadline, verify: bool):
        self.result = result
        self.details = SmtpDetails()
        result.details = self.details
        self.target = target
        self.settings = settings
        self.deadline = Deadline(deadline)  # callers outside the runner (tests, check) may pass loop time
        self.verify = verify
        self.replies: ReplyReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.greeted = False
        self.explained: set[tuple[str, int, str | None]] = set()
        self.waiting_for = "the greeting"  # what the server owes a reply to, for a timeout's verdict
        self.starttls_refusal = ""  # the verdict when STARTTLS was refused and the dialogue went on
        self.mtu: MtuCheck | None = None  # tcp.mtu_check (smtp_mtu.py)

    # --- the dialogue -------------------------------------------------------------------

    async def run(self, module: Module, resolver: Resolver, verify_error: str | None = None) -> None:
        result = self.result
        sock = await connect_target(result, self.target, module.tcp, self.deadline, resolver)
        if sock is None:
            result.state = SmtpState.CONNECT_FAILED
            return
        if module.tcp.mtu_check and result.address is not None:
            self.mtu = MtuCheck(sock, result.address, self.target.port, self.deadline)
        clean = False  # whether the stream is still in step, so QUIT can wait for its reply
        try:
            await self._dialogue(sock, verify_error)
            if self.details.starttls_refused:
                result.state, result.detail = SmtpState.STARTTLS_FAILED, self.starttls_refusal
            else:
                result.state, result.detail = SmtpState.OK, self._success()
            clean = True
        except _Stop as stop:
            result.state, result.detail = stop.state, stop.detail
            clean = stop.state not in (SmtpState.PROTOCOL_ERROR, SmtpState.TIMEOUT, SmtpState.TLS_ERROR)
        except ReplyTimeout as exc:
            if self.greeted:
                self.details.stalled_at = self.waiting_for
                result.state = SmtpState.TIMEOUT
                result.detail = f"the server did not answer {self.waiting_for} before the deadline: {exc}"
            else:
                result.state = SmtpState.BANNER_TIMEOUT
                result.detail = f"the server stalled waiting for the greeting: {exc}"
        except (ConnectionClosed, MalformedReply) as exc:
            result.state, result.detail = SmtpState.PROTOCOL_ERROR, printable(str(exc))
        finally:
            if self.mtu is not None:
                self.mtu.before_close()
            if self.writer is None:
                sock.close()
            await self._quit_and_close(clean)
        if self.mtu is not None:
            await self._mtu_verdict()
        if result.state is not SmtpState.OK:
            # The verdict itself is printed once, by whoever shows the result; the transcript only marks the end.
            result.note(f"Outcome: {result.state}")

    async def _dialogue(self, sock: socket.socket, verify_error: str | None) -> None:
        settings = self.settings
        if settings.tls:
            await self._handshake(sock=sock)
        else:
            reader, self.writer = await open_stream(sock)
            self.replies = ReplyReader(reader)
        started = time.perf_counter()
        greeting = await self._reply("banner")
        self.details.banner_seconds = self.details.stage_seconds["banner"] = time.perf_counter() - started
        self.greeted = True
        self._check_greeting(greeting)

        await self._hello()
        if not settings.tls and settings.starttls != "no":
            await self._starttls(verify_error)
        if self.mtu is not None:
            await self._mtu_to_target(self.mtu)
        if settings.auth is not None:
            await self._authenticate()
        if settings.mail_from:
            await self._envelope(settings.mail_from)
        # The open-relay check (smtp.relay_check_rcpt_to) runs in its own transaction: see smtp_relay.py.
        if (relay_stop := await check_relay(self)) is not None:
            raise _Stop(*relay_stop)
        if not settings.rcpt_to:
            self.result.note(ENVELOPE_HINT)

    def _check_greeting(self, greeting: Reply) -> None:
        if greeting.code >= 400:  # 421 busy, 554 blocked: the server will not talk to us
            raise _Stop(SmtpState.BANNER_REJECTED, self._rejection("banner", "the greeting", greeting))
        if greeting.code != ReplyCode.SERVICE_READY:
            raise _Stop(SmtpState.PROTOCOL_ERROR, f"the greeting has code {greeting.code}, expected 220")
        pattern = self.settings.expect_banner
        if pattern is not None:
            text = "\n".join(decode(raw) for raw in greeting.raw_lines)
            if pattern.search(text) is None:
                raise _Stop(
                    SmtpState.BANNER_MISMATCH,
                    f"the greeting does not match expect_banner {pattern.pattern!r}: {self.quote(greeting)}",
                )

    async def _hello(self) -> None:
        name = self.settings.ehlo_name
        if self.settings.ehlo is None and (problem := ehlo_fallback_problem(name)):
            self.result.note(f"Warning: {problem}")
        reply = await self.command("ehlo", f"EHLO {name}")
        if reply.code == ReplyCode.OK:
            self._capabilities(reply)
            return
        command = "EHLO"
        if reply.permanent:  # an old server without ESMTP: try the original greeting
            command = "HELO"
            reply = await self.command("helo", f"HELO {name}")
            if reply.code == ReplyCode.OK:
                self.result.note("EHLO refused, HELO accepted: the server offers no extensions")
                self.details.capabilities = frozenset()
                return
        raise self._refusal(SmtpState.EHLO_REJECTED, command.lower(), f"{command} {name}", reply)

    def _capabilities(self, reply: Reply) -> None:
        """Extension keywords from every line after the first (RFC 5321 4.1.1.1), the last one included."""
        keywords: set[str] = set()
        mechanisms: set[str] = set()
        size = None
        for line in reply.lines[1:]:
            words = line.upper().split()
            if not words:
                continue
            keyword = words[0]
            if keyword.startswith("AUTH="):  # an old spelling some servers still send
                words = ["AUTH", keyword[5:], *words[1:]]
                keyword = "AUTH"
            keywords.add(keyword)
            if keyword == "AUTH":
                mechanisms.update(words[1:])
            elif keyword == "SIZE" and len(words) > 1 and _SIZE.match(words[1]):
                size = int(words[1])
        previous = self.details.capabilities or frozenset()
        # STARTTLS is not offered again once the session is encrypted; keep what the first EHLO said.
        carried = previous & {"STARTTLS"}
        self.details.capabilities = frozenset(keywords) | carried
        self.details.auth_mechanisms = frozenset(mechanisms)
        self.details.size_limit = size

    async def _starttls(self, verify_error: str | None) -> None:
        required = self.settings.starttls == "required"
        if "STARTTLS" not in (self.details.capabilities or ()):
            if required:
                raise _Stop(SmtpState.STARTTLS_UNAVAILABLE, "the server does not offer STARTTLS (starttls: required)")
            self.result.note("STARTTLS is not offered: continuing unencrypted (starttls: opportunistic)")
            return
        reply = await self.command("starttls", "STARTTLS")
        if reply.code != ReplyCode.SERVICE_READY:
            # Advertised, then refused: the server's TLS is broken (often an unreadable certificate or key).
            refusal = (
                f"{self._rejection('starttls', 'STARTTLS', reply)}. The server advertised STARTTLS and then "
                "refused it: its TLS setup is broken, and senders that need TLS cannot deliver"
            )
            if required:
                raise _Stop(SmtpState.STARTTLS_FAILED, refusal)
            self.details.starttls_refused = True
            self.starttls_refusal = refusal + " (starttls: opportunistic, so the dialogue went on unencrypted)"
            self.result.note(
                "STARTTLS was advertised but refused: continuing UNENCRYPTED, as RFC 3207 allows "
                "(starttls: opportunistic); the probe will report starttls_failed"
            )
            return
        assert self.replies is not None
        if self.replies.buffered():
            # Bytes sent before the handshake must not be read as if they came over TLS (RFC 3207 section 5).
            raise _Stop(
                SmtpState.PROTOCOL_ERROR,
                "the server sent more data right after its 220 reply to STARTTLS, before the TLS handshake",
            )
        await self._handshake(verify_error=verify_error)
        await self._hello()

    async def _handshake(self, sock: socket.socket | None = None, verify_error: str | None = None) -> None:
        """Implicit TLS on ``sock``, or STARTTLS on the open stream; fills ``details.tls``."""
        tls_config = self.settings.tls_config
        context = client_context(tls_config, self.verify)
        hostname = server_name(tls_config, self.target.host)
        info = self.details.tls = TlsInfo()
        self.result.note(
            f"TLS handshake with server name {hostname} "
            f"({'verifying the certificate' if self.verify else 'certificate not verified'})"
        )
        started = time.perf_counter()
        # With mtu_check the certificate flight gets half the time left: the rest is for a small-MSS retry.
        until = self.deadline if self.mtu is None else self.mtu.stall_deadline()
        if self.mtu is not None:
            self.mtu.expect_from_target()
        try:
            async with asyncio.timeout_at(until):
                if sock is not None:
                    reader, self.writer = await open_stream(sock, ssl=context, server_hostname=hostname)
                    self.replies = ReplyReader(reader)
                else:
                    assert self.writer is not None
                    await self.writer.start_tls(context, server_hostname=hostname)
        except ssl.SSLCertVerificationError as exc:
            info.handshake_seconds = time.perf_counter() - started
            info.verified, info.verify_error = False, describe_verify_failure(exc)
            if not self.settings.tls and self.settings.starttls == "opportunistic":
                raise _Unverified(info.verify_error) from None
            raise _Stop(
                SmtpState.TLS_ERROR, f"the server's certificate did not verify for {hostname}: {info.verify_error}"
            ) from None
        except TimeoutError:
            info.handshake_seconds = time.perf_counter() - started
            self.waiting_for = "the TLS handshake" + ("" if sock is not None else " after STARTTLS")
            raise ReplyTimeout("the TLS handshake did not finish") from None
        except (ssl.SSLError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            info.handshake_seconds = time.perf_counter() - started
            raise _Stop(SmtpState.TLS_ERROR, f"the TLS handshake failed: {describe_handshake_failure(exc)}") from None
        info.handshake_seconds = self.details.stage_seconds["tls"] = time.perf_counter() - started
        if self.mtu is not None:
            self.mtu.from_target_arrived()
        assert self.writer is not None
        describe(info, self.writer.get_extra_info("ssl_object"), True if self.verify else None)
        if verify_error is not None:
            info.verified, info.verify_error = False, verify_error
        self.details.encrypted = True
        verdict = (
            "certificate verified"
            if info.verified
            else f"certificate NOT verified: {info.verify_error}"
            if info.verify_error
            else "certificate not checked (insecure_skip_verify)"
        )
        expiry = time.strftime(", expires %Y-%m-%d", time.gmtime(info.earliest_expiry)) if info.earliest_expiry else ""
        self.result.note(
            f"TLS established in {info.handshake_seconds * 1000:.1f} ms: {info.version}, "
            f"{info.cipher}, {printable(info.subject or 'no subject')}{expiry}; {verdict}"
        )

    async def _authenticate(self) -> None:
        auth = self.settings.auth
        assert auth is not None
        offered = self.details.auth_mechanisms
        mechanism = auth.mechanism.upper()
        if mechanism == "AUTO":
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), "")
        if mechanism not in offered:
            shown = ", ".join(sorted(offered)[:10]) or "none"
            raise _Stop(
                SmtpState.AUTH_FAILED,
                f"the server does not offer AUTH {mechanism or 'PLAIN or LOGIN'} (offered: {printable(shown[:200])})",
            )
        user, password = auth.username, auth.password.value
        # Every line that carries the password is shown as MASK, and the server's reply to it keeps its
        # codes but not its text (it might echo the credentials): masking by what was sent.
        if mechanism == "PLAIN":
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            reply = await self.command("auth", f"AUTH PLAIN {token}", shown=f"AUTH PLAIN {MASK}", secret=True)
            if reply.code == ReplyCode.AUTH_CONTINUE:  # a server that wants the credentials on their own line
                reply = await self.command("auth", token, shown=MASK, secret=True)
        else:
            user_token = base64.b64encode(user.encode()).decode()
            password_token = base64.b64encode(password.encode()).decode()
            reply = await self.command("auth", "AUTH LOGIN")
            if reply.code == ReplyCode.AUTH_CONTINUE:
                reply = await self.command("auth", user_token, shown=f"{user_token} (user name)")
            if reply.code == ReplyCode.AUTH_CONTINUE:
                reply = await self.command("auth", password_token, shown=MASK, secret=True)
        if reply.code != ReplyCode.AUTH_SUCCEEDED:
            raise self._refusal(SmtpState.AUTH_FAILED, "auth", f"AUTH {mechanism} as {user}", reply)

    async def _envelope(self, sender: str) -> None:
        """MAIL FROM, then RCPT TO (each refusal classified by what was refused), then RSET or DATA."""
        settings = self.settings
        await self._mail_from(sender)
        if settings.rcpt_to:
            await self._rcpt_to(settings.rcpt_to)
        if settings.send_test_message:
            await self._send_message()
        else:
            await self.command("rset", "RSET")  # end the transaction: no message is sent

    async def _mail_from(self, sender: str) -> None:
        command = f"MAIL FROM:<{sender}>"
        reply = await self.command("mail", command)
        if reply.code != ReplyCode.OK:
            raise self._refusal(SmtpState.SENDER_REJECTED, "mail", command, reply)

    async def _rcpt_to(self, recipient: str) -> Reply:
        command = f"RCPT TO:<{recipient}>"
        reply = await self.command("rcpt", command)
        if reply.code not in (ReplyCode.OK, ReplyCode.USER_NOT_LOCAL_WILL_FORWARD):
            raise self._refusal(SmtpState.RECIPIENT_REJECTED, "rcpt", command, reply)
        return reply

    async def _send_message(self) -> None:
        reply = await self.command("data", "DATA")
        if reply.code != ReplyCode.START_MAIL_INPUT:
            raise self._refusal(SmtpState.DATA_REJECTED, "data", "DATA", reply)
        started = time.perf_counter()
        self.waiting_for = "the end of the test message"
        await self._send(self._message(), f"<test message, subject {self.settings.subject!r}>")
        reply = await self._reply("data", explain_as="message")
        self.details.stage_seconds["data"] += time.perf_counter() - started
        if reply.code != ReplyCode.OK:
            raise self._refusal(SmtpState.DATA_REJECTED, "message", "the test message", reply)

    def _message(self) -> bytes:
        settings = self.settings
        message = email.message.EmailMessage(policy=email.policy.SMTP)
        message["From"] = settings.mail_from
        message["To"] = settings.rcpt_to
        message["Subject"] = settings.subject
        message["Date"] = email.utils.formatdate()
        message["Message-ID"] = email.utils.make_msgid(domain=settings.ehlo_name)
        message["X-Mailer"] = "connectivity_exporter"
        message.set_content(settings.body)
        lines = message.as_bytes().split(b"\r\n")
        if lines and lines[-1] == b"":
            lines.pop()
        # Dot-stuffing: a body line starting with '.' gets a second one (RFC 5321 4.5.2).
        return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines) + b"."

    # --- tcp.mtu_check ----------------------------------------------------------------------

    async def _mtu_to_target(self, check: MtuCheck) -> None:
        """A NOOP padded past one full-size segment (smtp_mtu.py says why it is harmless), then its reply."""

        async def send(size: int) -> None:
            line = smtp_mtu.noop_line(size)
            await self._send(line, f"NOOP <{len(line) - 5} padding bytes: path-MTU test>")

        self.waiting_for = "a full-size NOOP (path-MTU test)"
        finding = await check.to_target(send)
        if finding is Finding.BLACKHOLE:
            self.details.stalled_at = self.waiting_for
            words = smtp_mtu.blackhole_words(check.report.largest_sent)
            self.details.reply_explanations.append(("NOOP then silence", words))
            raise _Stop(SmtpState.TIMEOUT, words)
        assert self.replies is not None
        reply = await self.replies.read(self.deadline)  # 250, or 500 for a line over 512 octets: both harmless
        for raw in reply.raw_lines:
            self._log(f"S: {decode(raw)}")

    async def _mtu_verdict(self) -> None:
        """After the session: a stalled TLS handshake is retried with a small MSS; the report is kept."""
        check, result = self.mtu, self.result
        assert check is not None
        stalled = result.state in (SmtpState.TIMEOUT, SmtpState.BANNER_TIMEOUT)
        if stalled and self.waiting_for.startswith("the TLS handshake"):
            settings, host = self.settings, self.target.host

            async def exchange(sock: socket.socket, deadline: Deadline) -> bool:
                return await smtp_mtu.replay(settings, host, sock, deadline)

            after = "STARTTLS" if not settings.tls else "the TLS ClientHello"
            if await check.from_target_stalled(exchange):
                words = smtp_mtu.stall_words(after)
                self.details.reply_explanations.append((f"{after} then silence", words))
                result.detail = f"{result.detail}; {words}"
        result.mtu = check.finish()
        result.note(f"Path MTU check: {result.mtu.state}: {result.mtu.detail}")

    # --- sending and receiving ------------------------------------------------------------

    async def command(
        self, stage: str, line: str, shown: str | None = None, deadline: Deadline | None = None, secret: bool = False
    ) -> Reply:
        """Send one command line (shown in the transcript as ``shown``) and read its reply. With ``secret``
        the line carried credentials, so the reply's text is withheld."""
        started = time.perf_counter()
        shown = shown if shown is not None else line
        self.waiting_for = shown
        await self._send(line.encode("ascii"), shown)
        reply = await self._reply(stage, deadline, withhold=secret)
        self.details.stage_seconds[stage] = time.perf_counter() - started
        return reply

    async def _send(self, data: bytes, shown: str) -> None:
        assert self.writer is not None
        self._log(f"C: {shown}")
        try:
            async with asyncio.timeout_at(self.deadline):
                self.writer.write(data + b"\r\n")
                await self.writer.drain()
        except TimeoutError:
            raise ReplyTimeout("could not send before the deadline") from None
        except OSError as exc:
            raise ConnectionClosed(f"the connection was lost while sending ({type(exc).__name__})") from None

    async def _reply(
        self, stage: str, deadline: Deadline | None = None, withhold: bool = False, explain_as: str | None = None
    ) -> Reply:
        assert self.replies is not None
        reply = await self.replies.read(self.deadline if deadline is None else deadline)
        if withhold:
            reply = _withheld(reply)
        for raw in reply.raw_lines:
            self._log(f"S: {decode(raw)}")
        self.details.replies[stage] = reply
        explained_stage = explain_as or stage
        key = (explained_stage, reply.code, reply.enhanced)
        if key not in self.explained:
            self.explained.add(key)
            heading = f"{explained_stage} {reply.code_text}"
            self.details.reply_explanations.append((heading, self._explain(explained_stage, reply).line()))
        return reply

    async def _quit_and_close(self, wait_for_reply: bool) -> None:
        """Always end with QUIT (waiting for its reply only while the dialogue is in step), then close."""
        writer = self.writer
        if writer is None:
            return
        now = asyncio.get_running_loop().time
        try:
            if not writer.is_closing():
                if wait_for_reply and not self.deadline.passed():
                    try:
                        await self.command("quit", "QUIT", deadline=self.deadline.within(QUIT_WAIT))
                    except (ReplyTimeout, ConnectionClosed, MalformedReply) as exc:
                        self.result.note(f"No clean reply to QUIT: {printable(str(exc))}")
                else:
                    self._log("C: QUIT")
                    writer.write(b"QUIT\r\n")
            writer.close()
            grace = min(CLOSE_GRACE, self.deadline - now())
            if grace > 0:
                async with asyncio.timeout(grace):
                    await writer.wait_closed()
        except (TimeoutError, OSError):
            pass
        finally:
            abort_transport(writer.transport)

    # --- text for people --------------------------------------------------------------------

    def _log(self, line: str) -> None:
        record(self.result.transcript, line)

    def quote(self, reply: Reply) -> str:
        text = printable(decode(reply.raw_lines[-1]))
        return repr(text[:200] + ("..." if len(text) > 200 else ""))

    @staticmethod
    def _explain(stage: str, reply: Reply) -> Explanation:
        return explain(stage, reply.code, reply.enhanced, printable(reply.text))

    def _rejection(self, stage: str, what: str, reply: Reply) -> str:
        """One line for the verdict: the code, its short meaning for this stage, the server's words.
        The full explanation (enhanced code included) is in ``details.explanations``, shown once."""
        explanation = self._explain(stage, reply)
        self.details.refused = str(explanation.refused) if explanation.refused is not None else None
        self.details.greylisted = self.details.greylisted or explanation.greylisting
        code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
        return f"{what} was answered {code}: {explanation.summary}. The server said {self.quote(reply)}"

    def _refusal(self, state: SmtpState, stage: str, what: str, reply: Reply) -> _Stop:
        """The stop for a refused command: ``state`` names the stage, unless the reply says that this client
        itself is refused (Postfix's smtpd_delay_reject answers a client block at RCPT)."""
        detail = self._rejection(stage, what, reply)
        if self.details.refused == Party.CLIENT and stage in ("mail", "rcpt", "data", "message"):
            state = SmtpState.CLIENT_REJECTED
        return _Stop(state, detail)

    def _success(self) -> str:
        done = ["greeting", "EHLO" if "ehlo" in self.details.replies else "HELO"]
        if self.details.encrypted:
            done.append("TLS")
        if self.settings.auth is not None:
            done.append("AUTH")
        if self.settings.mail_from:
            done.append("MAIL FROM")
        if self.settings.rcpt_to:
            done.append("RCPT TO")
        if self.settings.send_test_message:
            done.append("DATA")
        return f"the mail server answered as expected: {', '.join(done)}"


def _withheld(reply: Reply) -> Reply:
    """``reply`` with its text replaced (codes kept): it answers a line that carried credentials."""
    prefix = f"{reply.code} {reply.enhanced} " if reply.enhanced else f"{reply.code} "
    return dataclasses.replace(reply, lines=(WITHHELD,), raw_lines=((prefix + WITHHELD).encode(),))
