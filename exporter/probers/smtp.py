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
import ssl
import time

from exporter.address import HostPort
from exporter.model import Module
from exporter.probers.smtp_config import SmtpSettings, ehlo_fallback_problem
from exporter.probers.connect import connect_target
from exporter.probers.resolve import Resolver
from exporter.probers.result import ProbeResult
from exporter.probers.smtp_explain import explain
from exporter.probers.smtp_replies import (ConnectionClosed, MalformedReply, Reply, ReplyCode, ReplyReader, ReplyTimeout,
                                           decode, open_stream)
from exporter.probers.smtp_relay import check_relay  # maildomain hook (issue 16)
from exporter.probers.smtp_result import SmtpDetails, SmtpState
from exporter.probers.smtp_tls import TlsInfo, client_context, describe, server_name, verify_failure

MAX_TRANSCRIPT_LINES = 200
MAX_TRANSCRIPT_LINE = 512
MASK = "********"
# The graceful close (a TLS close_notify) may take this long before the connection is dropped.
CLOSE_GRACE = 0.25
# A server that does not answer QUIT must not hold a finished probe until its deadline.
QUIT_WAIT = 1.0
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SIZE = re.compile(r"\d{1,15}\Z")


class _Stop(Exception):
    """Ends the dialogue with a state; ``detail`` is the one line shown to a person."""

    def __init__(self, state: SmtpState, detail: str):
        super().__init__(detail)
        self.state = state
        self.detail = detail


class _Unverified(Exception):
    """The certificate did not verify and the policy says: carry on without verification."""


def printable(text: str) -> str:
    """Server text made safe for a one-line transcript or detail: control characters escaped."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


async def probe_smtp(target: HostPort, module: Module, deadline: float, resolver: Resolver) -> ProbeResult:
    settings = module.settings
    assert settings is not None  # the config loader sets it for every smtp module
    result = ProbeResult(state=SmtpState.CONNECT_FAILED)
    tls_config = settings.tls_config
    verify = settings.encrypted and not tls_config.insecure_skip_verify
    try:
        await _Session(result, target, settings, deadline, verify).run(module, resolver)
    except _Unverified as unverified:
        result.note(f"Certificate not verified ({unverified}); starttls is opportunistic, so the probe "
                    "reconnects and continues without verification")
        session = _Session(result, target, settings, deadline, verify=False)
        await session.run(module, resolver, verify_error=str(unverified))
    result.success = result.state == SmtpState.OK
    return result


class _Session:
    """One connection's dialogue; writes its findings into ``result`` and ``result.details``."""

    def __init__(self, result: ProbeResult, target: HostPort, settings: SmtpSettings, deadline: float,
                 verify: bool):
        self.result = result
        self.details = SmtpDetails()
        result.details = self.details
        self.target = target
        self.settings = settings
        self.deadline = deadline
        self.verify = verify
        self.secrets: list[str] = []
        self.replies: ReplyReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.greeted = False
        self.explained: set[tuple[str, int, str | None]] = set()

    # --- the dialogue -------------------------------------------------------------------

    async def run(self, module: Module, resolver: Resolver, verify_error: str | None = None) -> None:
        result = self.result
        sock = await connect_target(result, self.target, module, self.deadline, resolver)
        if sock is None:
            result.state = SmtpState.CONNECT_FAILED
            return
        clean = False  # whether the stream is still in step, so QUIT can wait for its reply
        try:
            await self._dialogue(sock, verify_error)
            result.state, result.detail, clean = SmtpState.OK, self._success(), True
        except _Stop as stop:
            result.state, result.detail = stop.state, self._mask(stop.detail)
            clean = stop.state not in (SmtpState.PROTOCOL_ERROR, SmtpState.TIMEOUT, SmtpState.TLS_ERROR)
        except ReplyTimeout as exc:
            state = SmtpState.TIMEOUT if self.greeted else SmtpState.BANNER_TIMEOUT
            where = "after the greeting" if self.greeted else "waiting for the greeting"
            result.state, result.detail = state, f"the server stalled {where}: {exc}"
        except (ConnectionClosed, MalformedReply) as exc:
            result.state, result.detail = SmtpState.PROTOCOL_ERROR, self._mask(printable(str(exc)))
        finally:
            if self.writer is None:
                sock.close()
            await self._quit_and_close(clean)
        if result.state is not SmtpState.OK:
            result.note(f"Outcome: {result.state}: {result.detail}")

    async def _dialogue(self, sock, verify_error: str | None) -> None:
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
        if settings.auth is not None:
            await self._authenticate()
        if settings.mail_from:
            await self._envelope()
        # maildomain hook (issue 16): the open-relay check, in its own transaction (exporter/probers/smtp_relay.py).
        if (relay_stop := await check_relay(self)) is not None:
            raise _Stop(*relay_stop)

    def _check_greeting(self, greeting: Reply) -> None:
        if greeting.code >= 400:  # 421 busy, 554 blocked: the server will not talk to us
            raise _Stop(SmtpState.BANNER_REJECTED, self._rejection("the greeting", greeting))
        if greeting.code != ReplyCode.SERVICE_READY:
            raise _Stop(SmtpState.PROTOCOL_ERROR, f"the greeting has code {greeting.code}, expected 220")
        pattern = self.settings.expect_banner
        if pattern is not None:
            text = "\n".join(decode(raw) for raw in greeting.raw_lines)
            if pattern.search(text) is None:
                raise _Stop(SmtpState.BANNER_MISMATCH, f"the greeting does not match expect_banner "
                                                       f"{pattern.pattern!r}: {self._quote(greeting)}")

    async def _hello(self) -> None:
        name = self.settings.ehlo_name
        if self.settings.ehlo is None and (problem := ehlo_fallback_problem(name)):
            self.result.note(f"Warning: {problem}")
        reply = await self._command("ehlo", f"EHLO {name}")
        if reply.code == ReplyCode.OK:
            self._capabilities(reply)
            return
        command = "EHLO"
        if reply.permanent:  # an old server without ESMTP: try the original greeting
            command = "HELO"
            reply = await self._command("helo", f"HELO {name}")
            if reply.code == ReplyCode.OK:
                self.result.note("EHLO refused, HELO accepted: the server offers no extensions")
                self.details.capabilities = frozenset()
                return
        raise _Stop(SmtpState.EHLO_REJECTED, self._rejection(f"{command} {name}", reply))

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
                raise _Stop(SmtpState.STARTTLS_UNAVAILABLE, "the server does not offer STARTTLS "
                                                            "(starttls: required)")
            self.result.note("STARTTLS is not offered: continuing unencrypted (starttls: opportunistic)")
            return
        reply = await self._command("starttls", "STARTTLS")
        if reply.code != ReplyCode.SERVICE_READY:
            if required:
                raise _Stop(SmtpState.STARTTLS_UNAVAILABLE, self._rejection("STARTTLS", reply))
            self.result.note("STARTTLS was refused: continuing unencrypted (starttls: opportunistic)")
            return
        assert self.replies is not None
        if self.replies.buffered():
            # Bytes sent before the handshake must not be read as if they came over TLS (RFC 3207 section 5).
            raise _Stop(SmtpState.PROTOCOL_ERROR, "the server sent more data right after its 220 reply to "
                                                  "STARTTLS, before the TLS handshake")
        await self._handshake(verify_error=verify_error)
        await self._hello()

    async def _handshake(self, sock=None, verify_error: str | None = None) -> None:
        """Implicit TLS on ``sock``, or STARTTLS on the open stream; fills ``details.tls``."""
        tls_config = self.settings.tls_config
        context = client_context(tls_config, self.verify)
        hostname = server_name(tls_config, self.target.host)
        info = self.details.tls = TlsInfo()
        self.result.note(f"TLS handshake with server name {hostname} "
                         f"({'verifying the certificate' if self.verify else 'certificate not verified'})")
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(self.deadline):
                if sock is not None:
                    reader, self.writer = await open_stream(sock, ssl=context, server_hostname=hostname)
                    self.replies = ReplyReader(reader)
                else:
                    assert self.writer is not None
                    await self.writer.start_tls(context, server_hostname=hostname)
        except ssl.SSLCertVerificationError as exc:
            info.handshake_seconds = time.perf_counter() - started
            info.verified, info.verify_error = False, verify_failure(exc)
            if not self.settings.tls and self.settings.starttls == "opportunistic":
                raise _Unverified(info.verify_error) from None
            raise _Stop(SmtpState.TLS_ERROR, f"the server's certificate did not verify for {hostname}: "
                                             f"{info.verify_error}") from None
        except TimeoutError:
            info.handshake_seconds = time.perf_counter() - started
            raise ReplyTimeout("the TLS handshake did not finish before the deadline") from None
        except (ssl.SSLError, OSError, EOFError, asyncio.IncompleteReadError) as exc:
            info.handshake_seconds = time.perf_counter() - started
            reason = getattr(exc, "reason", None) or type(exc).__name__
            raise _Stop(SmtpState.TLS_ERROR, f"the TLS handshake failed: {printable(str(reason))}") from None
        info.handshake_seconds = self.details.stage_seconds["tls"] = time.perf_counter() - started
        assert self.writer is not None
        describe(info, self.writer.get_extra_info("ssl_object"), True if self.verify else None)
        if verify_error is not None:
            info.verified, info.verify_error = False, verify_error
        self.details.encrypted = True
        verdict = ("certificate verified" if info.verified else
                   f"certificate NOT verified: {info.verify_error}" if info.verify_error else
                   "certificate not checked (insecure_skip_verify)")
        expiry = (time.strftime(", expires %Y-%m-%d", time.gmtime(info.earliest_expiry))
                  if info.earliest_expiry else "")
        self.result.note(f"TLS established in {info.handshake_seconds * 1000:.1f} ms: {info.version}, "
                         f"{info.cipher}, {printable(info.subject or 'no subject')}{expiry}; {verdict}")

    async def _authenticate(self) -> None:
        auth = self.settings.auth
        assert auth is not None
        offered = self.details.auth_mechanisms
        mechanism = auth.mechanism.upper()
        if mechanism == "AUTO":
            mechanism = next((m for m in ("PLAIN", "LOGIN") if m in offered), "")
        if mechanism not in offered:
            shown = ", ".join(sorted(offered)[:10]) or "none"
            raise _Stop(SmtpState.AUTH_FAILED, f"the server does not offer AUTH {mechanism or 'PLAIN or LOGIN'} "
                                               f"(offered: {printable(shown[:200])})")
        user, password = auth.username, auth.password.value
        if mechanism == "PLAIN":
            token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
            self.secrets += [password, token]
            reply = await self._command("auth", f"AUTH PLAIN {token}", shown=f"AUTH PLAIN {MASK}")
            if reply.code == ReplyCode.AUTH_CONTINUE:  # a server that wants the credentials on their own line
                reply = await self._command("auth", token, shown=MASK)
        else:
            user_token = base64.b64encode(user.encode()).decode()
            password_token = base64.b64encode(password.encode()).decode()
            self.secrets += [password, password_token]
            reply = await self._command("auth", "AUTH LOGIN")
            if reply.code == ReplyCode.AUTH_CONTINUE:
                reply = await self._command("auth", user_token, shown=f"{user_token} (user name)")
            if reply.code == ReplyCode.AUTH_CONTINUE:
                reply = await self._command("auth", password_token, shown=MASK)
        if reply.code != ReplyCode.AUTH_SUCCEEDED:
            raise _Stop(SmtpState.AUTH_FAILED, self._rejection(f"AUTH {mechanism} as {user}", reply))

    async def _envelope(self) -> None:
        settings = self.settings
        reply = await self._command("mail", f"MAIL FROM:<{settings.mail_from}>")
        if reply.code != ReplyCode.OK:
            raise _Stop(SmtpState.SENDER_REJECTED, self._rejection(f"MAIL FROM:<{settings.mail_from}>", reply))
        if settings.rcpt_to:
            reply = await self._command("rcpt", f"RCPT TO:<{settings.rcpt_to}>")
            if reply.code not in (250, 251):
                raise _Stop(SmtpState.RECIPIENT_REJECTED,
                            self._rejection(f"RCPT TO:<{settings.rcpt_to}>", reply))
        if settings.send_test_message:
            await self._send_message()
        else:
            await self._command("rset", "RSET")  # end the transaction: no message is sent

    async def _send_message(self) -> None:
        reply = await self._command("data", "DATA")
        if reply.code != ReplyCode.START_MAIL_INPUT:
            raise _Stop(SmtpState.DATA_REJECTED, self._rejection("DATA", reply))
        started = time.perf_counter()
        await self._send(self._message(), f"<test message, subject {self.settings.subject!r}>")
        reply = await self._reply("data")
        self.details.stage_seconds["data"] += time.perf_counter() - started
        if reply.code != ReplyCode.OK:
            raise _Stop(SmtpState.DATA_REJECTED, self._rejection("the test message", reply))

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

    # --- sending and receiving ------------------------------------------------------------

    async def _command(self, stage: str, line: str, shown: str | None = None, deadline: float | None = None) -> Reply:
        started = time.perf_counter()
        await self._send(line.encode("ascii"), shown if shown is not None else line)
        reply = await self._reply(stage, deadline)
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

    async def _reply(self, stage: str, deadline: float | None = None) -> Reply:
        assert self.replies is not None
        reply = await self.replies.read(self.deadline if deadline is None else deadline)
        for raw in reply.raw_lines:
            self._log(f"S: {decode(raw)}")
        self.details.replies[stage] = self._scrubbed(reply)
        key = (stage, reply.code, reply.enhanced)
        if key not in self.explained:
            self.explained.add(key)
            heading = f"{stage} {reply.code}" + (f" {reply.enhanced}" if reply.enhanced else "")
            self.details.explanations.append((heading, explain(reply.code, reply.enhanced)))
        return reply

    async def _quit_and_close(self, wait_for_reply: bool) -> None:
        """Always end with QUIT (waiting for its reply only while the dialogue is in step), then close."""
        writer = self.writer
        if writer is None:
            return
        now = asyncio.get_running_loop().time
        try:
            if not writer.is_closing():
                if wait_for_reply and now() < self.deadline:
                    try:
                        await self._command("quit", "QUIT", deadline=min(self.deadline, now() + QUIT_WAIT))
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
            writer.transport.abort()

    # --- text for people --------------------------------------------------------------------

    def _log(self, line: str) -> None:
        transcript = self.result.transcript
        if len(transcript) < MAX_TRANSCRIPT_LINES:
            line = self._mask(printable(line))
            if len(line) > MAX_TRANSCRIPT_LINE:
                line = line[:MAX_TRANSCRIPT_LINE] + f"... ({len(line) - MAX_TRANSCRIPT_LINE} more characters)"
            transcript.append(line)
        elif len(transcript) == MAX_TRANSCRIPT_LINES:
            transcript.append(f"... transcript truncated at {MAX_TRANSCRIPT_LINES} lines")

    def _scrubbed(self, reply: Reply) -> Reply:
        """The reply as kept in the result: a server echoing the credentials back must not
        put them where the JSON output, the status page or anything else could show them."""
        if not self.secrets or not any(secret.encode() in raw for secret in self.secrets for raw in reply.raw_lines):
            return reply
        return dataclasses.replace(reply, lines=tuple(self._mask(line) for line in reply.lines),
                                   raw_lines=tuple(self._mask(decode(raw)).encode() for raw in reply.raw_lines))

    def _mask(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return text

    def _quote(self, reply: Reply) -> str:
        text = printable(decode(reply.raw_lines[-1]))
        return repr(text[:200] + ("..." if len(text) > 200 else ""))

    def _rejection(self, what: str, reply: Reply) -> str:
        code = f"{reply.code} {reply.enhanced}" if reply.enhanced else str(reply.code)
        return (f"{what} was answered {code}: {explain(reply.code, reply.enhanced)}. "
                f"The server said {self._quote(reply)}")

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
