"""blackbox_exporter's ``query_response`` dialogue, run on a connected socket.

Semantics (blackbox_exporter prober/query_response.go), step by step, each part optional:
1. ``expect``: read lines (split at LF, a trailing CR dropped, at most 64 KiB, as Go's bufio.Scanner)
   until one matches; the server closing first fails the step with ``probe_failed_due_to_regex 1``;
   the deadline, a reset or an overlong line fail it with the flag left 0 (blackbox_exporter's values).
2. ``expect_bytes``: the next bytes must equal these (mismatch: ``probe_failed_due_to_bytes 1``).
3. ``send``: the line plus LF; with ``expect`` in the same step, ``${1}``/``${name}`` expand its groups.
4. ``starttls``: the TLS handshake (``tls_config``); bytes received before it are discarded, as
   blackbox_exporter's new scanner does (anything else would let a server inject plaintext).
Deliberate difference: ``expect_bytes`` waits for all its bytes (until the deadline) where blackbox_exporter
takes what one read returns, which fails at random when the server's answer arrives in pieces.

On top: which step failed, what arrived instead (bounded, printable), each step's duration.
Sent lines appear in the transcript as their first word only: a dialogue may carry credentials.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum

from exporter.core import transcript
from exporter.core.deadline import Deadline
from exporter.probers.connect.result import DetailsBase, Fact, JsonObject, ProbeResult
from exporter.probers.tcp.dialogue_config import DialogueStep, TcpTlsConfig, client_context
from exporter.probers.tls.families import LeafIdentity, describe_session, expiry_words, handshake_failure
from exporter.probers.tls.handshake import TlsInfo
from exporter.probers.tls.stdlib_adapter import discard_read_ahead

MAX_LINE_BYTES = 64 * 1024  # Go's bufio.MaxScanTokenSize
READ_CHUNK = 16 * 1024
MAX_NOTED_LINES = 60  # received lines kept in the transcript, over the whole dialogue
MAX_SHOWN_CHARS = 200  # per transcript line
MAX_RECEIVED_LINES = 5  # "received instead": the last lines of the failed step
MAX_LABEL_VALUE = 256


class DialogueState(StrEnum):
    OK = "ok"
    CONNECT_FAILED = "connect_failed"  # no TCP connection (probe_tcp_state says why)
    TLS_ERROR = "tls_error"  # handshake failed or the certificate did not verify (tls: true or starttls)
    EXPECT_MISMATCH = "expect_mismatch"  # the server closed the connection before a line matched `expect`
    BYTES_MISMATCH = "bytes_mismatch"  # the bytes received differ from `expect_bytes`
    LINE_TOO_LONG = "line_too_long"  # a line longer than 64 KiB (blackbox_exporter gives up too)
    CLOSED = "closed"  # closed or reset before `expect_bytes` were complete, or while sending
    TIMEOUT = "timeout"  # the deadline passed in the middle of the dialogue


STATE_EXPLANATIONS = {
    DialogueState.OK: "every dialogue step succeeded",
    DialogueState.CONNECT_FAILED: "the TCP connection failed",
    DialogueState.TLS_ERROR: "TLS could not be established",
    DialogueState.EXPECT_MISMATCH: "the server closed the connection before sending a line that matches",
    DialogueState.BYTES_MISMATCH: "the server sent other bytes than expected",
    DialogueState.LINE_TOO_LONG: "the server sent a line longer than 64 KiB",
    DialogueState.CLOSED: "the server closed or reset the connection in the middle of the dialogue",
    DialogueState.TIMEOUT: "the server stopped answering: the deadline passed in the middle of the dialogue",
}


# Fact labels (the status page shows Dialogue and Certificate as columns).
DIALOGUE, RECEIVED, STEP_TIMES, CERTIFICATE = "Dialogue", "Received instead", "Step times", "Certificate expires"


@dataclass(slots=True)
class DialogueDetails(DetailsBase):
    """What the tcp prober records about a dialogue or TLS (``ProbeResult.details``)."""

    steps: int = 0
    failed_step: int | None = None  # index in query_response
    step_seconds: list[float] = field(default_factory=list)
    failed_due_to_regex: bool = False
    failed_due_to_bytes: bool = False
    expect_labels: list[tuple[tuple[str, str], ...]] = field(default_factory=list)
    tls: TlsInfo | None = None
    leaf: LeafIdentity | None = None
    received: list[str] = field(default_factory=list)  # what came instead, in the failed step
    encrypted: bool = False

    @property
    def cert_expiry(self) -> float | None:
        """For the status page and ``check`` (the name the SMTP details use too)."""
        return self.tls.earliest_expiry if self.tls is not None else None

    def facts(self, state: str, now: float) -> list[Fact]:
        out = []
        if self.failed_step is not None:
            out.append(Fact(DIALOGUE, f"{state} at step {self.failed_step} of {self.steps}"))
            if self.received:
                out.append(Fact(RECEIVED, " | ".join(self.received)))
        elif self.steps:
            out.append(Fact(DIALOGUE, f"{state}, {len(self.step_seconds)} of {self.steps} steps run"))
        if self.step_seconds:
            times = ", ".join(f"#{index} {seconds * 1000:.2f} ms" for index, seconds in enumerate(self.step_seconds))
            out.append(Fact(STEP_TIMES, times))
        if self.cert_expiry is not None:
            out.append(Fact(CERTIFICATE, expiry_words(self.cert_expiry, now)))
        return out

    def contract(self) -> JsonObject:
        document = asdict(self)
        document["expect_labels"] = [dict(labels) for labels in self.expect_labels]
        return document


class _Failed(Exception):
    def __init__(self, state: DialogueState, reason: str):
        super().__init__(reason)
        self.state = state
        self.reason = reason


def printable(data: bytes, limit: int = MAX_SHOWN_CHARS) -> str:
    """Server bytes as one bounded line a person can read: controls and invalid UTF-8 escaped."""
    shown = transcript.printable(data[: limit * 4].decode("utf-8", "backslashreplace"))
    return shown if len(shown) <= limit else shown[: limit - 3] + "..."


def masked(line: bytes) -> str:
    """A sent line for the transcript: its first word; the rest (possibly a password) as a byte count."""
    word, _, rest = line.partition(b" ")
    shown = printable(word, 60)
    return f"{shown} [{len(rest)} more bytes]" if rest else shown


def expand(template: bytes, pattern: re.Pattern[bytes], match: re.Match[bytes]) -> bytes:
    """Go's ``Regexp.Expand``: ``$1``, ``${1}``, ``$name``, ``${name}``, ``$$``; unknown groups give nothing."""
    out = bytearray()
    i, n = 0, len(template)
    while i < n:
        dollar = template.find(b"$", i)
        if dollar < 0:
            out += template[i:]
            break
        out += template[i:dollar]
        i = dollar + 1
        if template[i : i + 1] == b"$":
            out += b"$"
            i += 1
            continue
        braced = template[i : i + 1] == b"{"
        start = i + 1 if braced else i
        end = start
        while end < n and (template[end : end + 1].isalnum() or template[end : end + 1] == b"_"):
            end += 1
        name = template[start:end]
        if not name or (braced and template[end : end + 1] != b"}"):
            out += b"$"  # malformed: the '$' is literal text
            continue
        i = end + 1 if braced else end
        key: int | str
        if name.isdigit() and not (len(name) > 1 and name[:1] == b"0"):
            key = int(name)
        else:
            key = name.decode("ascii", "replace")
        try:
            value = match.group(key)
        except IndexError:  # no such group
            value = None
        if value is not None:
            out += value
    return bytes(out)


class _Conversation:
    """Reads lines and bytes from the server, keeping what it read for the transcript."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, result: ProbeResult):
        self.reader, self.writer, self.result = reader, writer, result
        self.buffer = bytearray()
        self.eof = False
        self.noted = 0
        self.step_lines: list[bytes] = []

    def note_received(self, line: bytes) -> None:
        self.step_lines.append(line[: MAX_SHOWN_CHARS * 4])
        del self.step_lines[:-MAX_RECEIVED_LINES]
        self.noted += 1
        if self.noted <= MAX_NOTED_LINES:
            self.result.note(f"< {printable(line)}")
        elif self.noted == MAX_NOTED_LINES + 1:
            self.result.note("< ... (further received lines not shown)")

    async def _fill(self) -> None:
        try:
            data = await self.reader.read(READ_CHUNK)
        except (ConnectionError, OSError) as exc:
            raise _Failed(
                DialogueState.CLOSED, f"the connection was reset while reading ({type(exc).__name__})"
            ) from exc
        if data:
            self.buffer += data
        else:
            self.eof = True

    async def read_line(self) -> bytes | None:
        """The next line without its LF (and CR); the unterminated rest at EOF; None at EOF with nothing left."""
        searched = 0
        while True:
            newline = self.buffer.find(b"\n", searched)
            if newline >= 0:
                if newline > MAX_LINE_BYTES:
                    raise _Failed(DialogueState.LINE_TOO_LONG, "a line is longer than 64 KiB")
                line = bytes(self.buffer[:newline])
                del self.buffer[: newline + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buffer) > MAX_LINE_BYTES:
                self.step_lines.append(bytes(self.buffer[:MAX_SHOWN_CHARS]))
                raise _Failed(DialogueState.LINE_TOO_LONG, "a line is longer than 64 KiB")
            if self.eof:
                if not self.buffer:
                    return None
                line = bytes(self.buffer)
                self.buffer.clear()
                return line[:-1] if line.endswith(b"\r") else line
            searched = len(self.buffer)
            await self._fill()

    async def read_exactly(self, count: int) -> bytes:
        while len(self.buffer) < count and not self.eof:
            await self._fill()
        data = bytes(self.buffer[:count])
        del self.buffer[:count]
        return data

    async def send(self, line: bytes) -> None:
        try:
            self.writer.write(line + b"\n")
            await self.writer.drain()
        except (ConnectionError, OSError) as exc:
            raise _Failed(
                DialogueState.CLOSED, f"the connection was reset while sending ({type(exc).__name__})"
            ) from exc
        self.result.note(f"> {masked(line)}")

    def discard_before_tls(self) -> None:
        pending = len(self.buffer)
        self.buffer.clear()
        pending += discard_read_ahead(self.reader)  # read ahead by asyncio: also plaintext
        if pending:
            self.result.note(f"(discarded {pending} bytes received before the TLS handshake)")


async def open_streams(
    sock: socket.socket,
    tls: bool,
    tls_config: TcpTlsConfig,
    host: str,
    deadline: Deadline,
    details: DialogueDetails,
    result: ProbeResult,
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """Streams over the connected socket; with ``tls``, after the handshake (None: it failed, noted)."""
    if not tls:
        return await asyncio.open_connection(sock=sock, limit=MAX_LINE_BYTES * 2)
    started = time.perf_counter()
    verified = not tls_config.insecure_skip_verify
    try:
        async with asyncio.timeout_at(deadline):
            reader, writer = await asyncio.open_connection(
                sock=sock,
                limit=MAX_LINE_BYTES * 2,
                ssl=client_context(tls_config),
                server_hostname=tls_config.server_name or host,
                ssl_handshake_timeout=max(0.001, deadline - asyncio.get_running_loop().time()),
            )
    except (ssl.SSLError, OSError, TimeoutError, EOFError) as exc:
        reason = handshake_failure(exc)
        details.tls = TlsInfo(
            handshake_seconds=time.perf_counter() - started,
            verified=False if isinstance(exc, ssl.SSLCertVerificationError) else None,
            verify_error=reason,
        )
        _fail(result, details, DialogueState.TLS_ERROR, reason, None)
        return None
    _record_tls(writer, details, result, time.perf_counter() - started, verified)
    return reader, writer


def _record_tls(
    writer: asyncio.StreamWriter, details: DialogueDetails, result: ProbeResult, seconds: float, verified: bool
) -> None:
    ssl_object = writer.get_extra_info("ssl_object")
    details.tls, details.leaf = describe_session(ssl_object, verified or None)
    details.tls.handshake_seconds = seconds
    details.encrypted = True
    who = f", {printable(details.leaf.subject.encode())}" if details.leaf and details.leaf.subject else ""
    result.note(
        f"TLS handshake done in {seconds * 1000:.2f} ms: {details.tls.version}"
        f"{', certificate verified' if verified else ', certificate not checked'}{who}"
    )


def _fail(
    result: ProbeResult,
    details: DialogueDetails,
    state: DialogueState,
    reason: str,
    step: int | None,
    described: str = "",
) -> None:
    result.state = state
    details.failed_step = step
    where = f"step {step} ({described}): " if step is not None else ""
    result.note(f"{where}{reason}")
    instead = f"; received instead: {' | '.join(details.received)}" if details.received else ""
    result.detail = f"{STATE_EXPLANATIONS[state]}: {where}{reason}{instead}"


async def run_dialogue(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    steps: tuple[DialogueStep, ...],
    tls_config: TcpTlsConfig,
    host: str,
    deadline: Deadline,
    details: DialogueDetails,
    result: ProbeResult,
) -> bool:
    """Run every step; True when all succeeded. Fills ``details`` and ``result`` (state, detail, transcript)."""
    conversation = _Conversation(reader, writer, result)
    details.steps = len(steps)
    for index, step in enumerate(steps):
        conversation.step_lines = []
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(deadline):
                await _run_step(conversation, step, tls_config, host, deadline, details, result)
        except _Failed as failed:
            details.step_seconds.append(time.perf_counter() - started)
            details.received = [printable(line) for line in conversation.step_lines]
            _fail(result, details, failed.state, failed.reason, index, step.describe())
            return False
        except TimeoutError:
            details.step_seconds.append(time.perf_counter() - started)
            details.received = [printable(line) for line in conversation.step_lines]
            _fail(
                result,
                details,
                DialogueState.TIMEOUT,
                "nothing (more) arrived before the deadline",
                index,
                step.describe(),
            )
            return False
        details.step_seconds.append(time.perf_counter() - started)
    return True


async def _run_step(
    conversation: _Conversation,
    step: DialogueStep,
    tls_config: TcpTlsConfig,
    host: str,
    deadline: Deadline,
    details: DialogueDetails,
    result: ProbeResult,
) -> None:
    send = step.send
    if step.expect is not None:
        while True:
            line = await conversation.read_line()
            if line is None:
                details.failed_due_to_regex = True
                raise _Failed(DialogueState.EXPECT_MISMATCH, "the server closed the connection before a line matched")
            conversation.note_received(line)
            match = step.expect.search(line)
            if match is not None:
                break
        details.failed_due_to_regex = False
        if send is not None:
            send = expand(send, step.expect, match)
        if step.labels:
            details.expect_labels.append(
                tuple(
                    (name, printable(expand(template, step.expect, match), MAX_LABEL_VALUE))
                    for name, template in step.labels
                )
            )
    if step.expect_bytes is not None:
        data = await conversation.read_exactly(len(step.expect_bytes))
        conversation.note_received(data)
        if len(data) < len(step.expect_bytes):
            raise _Failed(
                DialogueState.CLOSED,
                f"the server closed the connection after {len(data)} of {len(step.expect_bytes)} expected bytes",
            )
        if data != step.expect_bytes:
            details.failed_due_to_bytes = True
            raise _Failed(
                DialogueState.BYTES_MISMATCH, f"expected {printable(step.expect_bytes)!r}, got {printable(data)!r}"
            )
        details.failed_due_to_bytes = False
    if send:
        await conversation.send(send)
    if step.starttls:
        conversation.discard_before_tls()
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        verified = not tls_config.insecure_skip_verify
        try:
            await conversation.writer.start_tls(
                client_context(tls_config),
                server_hostname=tls_config.server_name or host,
                ssl_handshake_timeout=max(0.001, deadline - loop.time()),
            )
        except (ssl.SSLError, OSError, EOFError) as exc:
            details.tls = TlsInfo(
                handshake_seconds=time.perf_counter() - started,
                verify_error=None,
                verified=False if isinstance(exc, ssl.SSLCertVerificationError) else None,
            )
            raise _Failed(DialogueState.TLS_ERROR, handshake_failure(exc)) from exc
        _record_tls(conversation.writer, details, result, time.perf_counter() - started, verified)


def close_quietly(writer: asyncio.StreamWriter | None) -> None:
    if writer is not None:
        writer.transport.abort()  # no TLS close_notify dance: the probe is over
