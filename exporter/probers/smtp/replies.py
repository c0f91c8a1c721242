"""Reading SMTP replies from a server that may be slow, broken or hostile.

A reply is one or more lines ``250-first``, ``250-second``, ``250 last`` (RFC 5321 4.2). Every
read is bounded three ways: bytes per line (the stream's buffer limit, so a line that never ends
cannot grow memory without bound), lines per reply, and the caller's deadline. Failures are raised
as a small hierarchy that also subclasses the matching built-in, so callers can catch either
``ReplyTimeout`` or plain ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import re
import socket
from dataclasses import dataclass
from enum import IntEnum
from ssl import SSLContext

from exporter.core.deadline import Deadline
from exporter.probers.tls.stdlib_adapter import read_ahead

# RFC 5321 allows 512 octets per reply line; real servers exceed it a little, so be lenient but bounded.
MAX_LINE_BYTES = 2048
MAX_REPLY_LINES = 100


class ReplyCode(IntEnum):
    """The reply codes the prober acts on or names (RFC 5321 4.2.3, RFC 4954, RFC 3207)."""

    SERVICE_READY = 220
    CLOSING = 221
    AUTH_SUCCEEDED = 235
    OK = 250
    USER_NOT_LOCAL_WILL_FORWARD = 251
    CANNOT_VERIFY_USER = 252
    AUTH_CONTINUE = 334
    START_MAIL_INPUT = 354
    SERVICE_UNAVAILABLE = 421
    MAILBOX_BUSY = 450
    LOCAL_ERROR = 451
    INSUFFICIENT_STORAGE = 452
    TLS_NOT_AVAILABLE = 454
    SYNTAX_ERROR = 500
    PARAMETER_SYNTAX_ERROR = 501
    NOT_IMPLEMENTED = 502
    BAD_SEQUENCE = 503
    PARAMETER_NOT_IMPLEMENTED = 504
    AUTH_REQUIRED = 530
    AUTH_FAILED = 535
    MAILBOX_UNAVAILABLE = 550
    USER_NOT_LOCAL = 551
    STORAGE_EXCEEDED = 552
    MAILBOX_NAME_NOT_ALLOWED = 553
    TRANSACTION_FAILED = 554


class SmtpError(Exception):
    """The dialogue cannot go on; ``str()`` is one line for a person."""


class ReplyTimeout(SmtpError, TimeoutError):
    """No complete reply before the deadline."""


class ConnectionClosed(SmtpError, ConnectionError):
    """The server closed the connection (or reset it) in the middle of the dialogue."""


class MalformedReply(SmtpError, ValueError):
    """The bytes received are not an SMTP reply."""


class ReplyTooLong(MalformedReply):
    """A reply line or the number of lines exceeded the bounds."""


_ENHANCED = re.compile(r"([245])\.(\d{1,3})\.(\d{1,3})(?=\s|\Z)")
_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]?)(.*)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    lines: tuple[str, ...]  # the text after the code on each line, decoded leniently
    raw_lines: tuple[bytes, ...]  # each line as received, without its line ending
    enhanced: str | None = None  # RFC 3463 status such as "5.7.1", when the first line starts with one

    @property
    def code_text(self) -> str:
        """The code with the enhanced status code when there is one: "550 5.1.1" (how people quote it)."""
        return f"{self.code} {self.enhanced}" if self.enhanced else str(self.code)

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 400

    @property
    def permanent(self) -> bool:
        return self.code >= 500

    @property
    def text(self) -> str:
        return " ".join(line for line in self.lines)


def decode(raw: bytes) -> str:
    """Server text as str: invalid UTF-8 becomes ``\\xNN`` rather than an error."""
    return raw.decode("utf-8", "backslashreplace")


def enhanced_code(code: int, text: str) -> str | None:
    """The RFC 3463 ``class.subject.detail`` at the start of ``text``, if its class agrees with ``code``."""
    match = _ENHANCED.match(text)
    if match is None or match.group(1) != str(code)[0]:
        return None
    return ".".join(match.groups())


def parse_line(raw: bytes) -> tuple[int, bool, bytes]:
    """``(code, is_last, text)`` of one reply line (without its line ending); MalformedReply otherwise."""
    match = _LINE.fullmatch(raw)
    if match is None:
        raise MalformedReply(f"not an SMTP reply line: {decode(raw[:80])!r}")
    code, separator, text = match.groups()
    if not separator and text:
        raise MalformedReply(f"no space or '-' after the reply code: {decode(raw[:80])!r}")
    return int(code), separator != b"-", text


async def open_stream(
    sock: socket.socket, *, ssl: SSLContext | None = None, server_hostname: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Streams on a connected socket whose buffer limit bounds the length of one reply line; with
    ``ssl``, after the TLS handshake (implicit TLS)."""
    if ssl is None:  # asyncio refuses server_hostname without ssl
        return await asyncio.open_connection(sock=sock, limit=MAX_LINE_BYTES)
    return await asyncio.open_connection(sock=sock, limit=MAX_LINE_BYTES, ssl=ssl, server_hostname=server_hostname)


class ReplyReader:
    """Reads whole replies from an ``asyncio.StreamReader`` made by ``open_stream``."""

    def __init__(
        self, reader: asyncio.StreamReader, max_line_bytes: int = MAX_LINE_BYTES, max_lines: int = MAX_REPLY_LINES
    ):
        self.reader = reader
        self.max_line_bytes = max_line_bytes
        self.max_lines = max_lines

    def buffered(self) -> int:
        """Bytes received but not read yet (after STARTTLS's 220 there must be none: RFC 3207 section 5)."""
        return read_ahead(self.reader)

    async def read(self, deadline: Deadline) -> Reply:
        """The next complete reply, before ``deadline`` (loop time)."""
        lines: list[bytes] = []
        try:
            async with asyncio.timeout_at(deadline):
                while True:
                    raw = await self._line(len(lines))
                    code, last, _ = parse_line(raw)
                    if lines and code != int(lines[0][:3]):
                        raise MalformedReply(
                            f"reply code changed from {decode(lines[0][:3])} to {code} inside one multi-line reply"
                        )
                    lines.append(raw)
                    if last:
                        break
                    if len(lines) >= self.max_lines:
                        raise ReplyTooLong(f"more than {self.max_lines} lines in one reply")
        except TimeoutError:
            got = f" (got {len(lines)} complete lines)" if lines else ""
            raise ReplyTimeout(f"no complete reply before the deadline{got}") from None
        code = int(lines[0][:3])
        texts = tuple(decode(parse_line(raw)[2]) for raw in lines)
        return Reply(code, texts, tuple(lines), enhanced_code(code, texts[0]))

    async def _line(self, index: int) -> bytes:
        try:
            raw = await self.reader.readuntil(b"\n")
        except asyncio.LimitOverrunError:
            raise ReplyTooLong(
                f"reply line {index + 1} is longer than {self.max_line_bytes} bytes (or has no line ending)"
            ) from None
        except asyncio.IncompleteReadError as exc:
            partial = f" after {decode(exc.partial[:80])!r}" if exc.partial else ""
            raise ConnectionClosed(f"the server closed the connection{partial}") from None
        except OSError as exc:  # a reset, or a broken TLS record (ssl.SSLError)
            raise ConnectionClosed(f"the connection was lost ({type(exc).__name__})") from None
        return raw.rstrip(b"\r\n")
