"""The STARTTLS certificate of one MX host, as a sending MTA applying MTA-STS or DANE sees it.

A short SMTP session of its own (greeting, EHLO, STARTTLS, handshake, QUIT), independent of the
module's ``tls_config``: MTA-STS asks whether the certificate verifies for the MX name with the
system trust store (RFC 8461 §4.2), so that is the context used, and OpenSSL decides during the
handshake (as a sender's TLS library does). A certificate that does not verify ends that
handshake, so a second session with verification off fetches the chain the host presents: its
names go into the words ("the certificate is for x, not y") and its DER into the DANE check.

The presented chain comes from ``tls.stdlib_adapter`` (private API before Python 3.13).
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ssl
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from exporter.probers.tls.stdlib_adapter import presented_chain

MAX_REPLY_LINES = 64
MAX_LINE = 2048
MAX_CHAIN = 10
ADDRESSES_TRIED = 2


class TlsOutcome(StrEnum):
    VERIFIED = "verified"
    NOT_VERIFIED = "not_verified"  # handshake completes only without verification
    NO_STARTTLS = "no_starttls"
    HANDSHAKE_FAILED = "handshake_failed"
    UNREACHED = "unreached"  # no SMTP session up to STARTTLS (connect, greeting, time)


@dataclass(slots=True)
class MxTls:
    outcome: TlsOutcome
    address: str | None = None
    reason: str = ""
    verify_code: int | None = None
    verify_message: str | None = None
    names: list[str] = field(default_factory=list)  # DNS names of the presented leaf certificate
    chain: list[bytes] = field(default_factory=list)  # DER, leaf first, as presented


class _Stop(Exception):
    """The session ended before a TLS handshake: outcome and words."""

    def __init__(self, outcome: TlsOutcome, reason: str) -> None:
        super().__init__(reason)
        self.outcome, self.reason = outcome, reason


@functools.cache
def system_context() -> ssl.SSLContext:
    """Verifying, with the system trust store (loaded once per process: it is slow)."""
    return ssl.create_default_context()


@functools.cache
def unverified_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def anchor_context(anchor_der: bytes) -> ssl.SSLContext:
    """Verifying with one trust anchor only, which may be an intermediate (DANE-TA, RFC 7671 §5.2.2)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cadata=anchor_der)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context


async def _reply(reader: asyncio.StreamReader) -> tuple[int, list[str]]:
    lines: list[str] = []
    while len(lines) < MAX_REPLY_LINES:
        raw = await reader.readuntil(b"\n")
        line = raw[:MAX_LINE].decode("ascii", "replace").rstrip("\r\n")
        lines.append(line)
        if len(line) < 3 or not line[:3].isdigit():
            raise _Stop(TlsOutcome.UNREACHED, "the server's reply is not SMTP")
        if line[3:4] != "-":
            return int(line[:3]), lines
    raise _Stop(TlsOutcome.UNREACHED, "the server's reply has too many lines")


def _names(info: dict[str, Any]) -> list[str]:
    names = [value for kind, value in info.get("subjectAltName", ()) if kind == "DNS"]
    if not names:
        names = [value for rdn in info.get("subject", ()) for key, value in rdn if key == "commonName"]
    return [str(name)[:253] for name in names[:8]]


def _presented(ssl_object: Any) -> tuple[list[bytes], list[str]]:
    chain = presented_chain(ssl_object)[:MAX_CHAIN]
    return [der for der, _ in chain], (_names(chain[0][1]) if chain else [])


async def starttls_session(
    address: str, port: int, ehlo: str, host: str, context: ssl.SSLContext, deadline: float
) -> tuple[list[bytes], list[str]]:
    """Greeting, EHLO, STARTTLS and the handshake; the presented chain and its leaf's names.

    Raises ``_Stop`` before the handshake, ``ssl.SSLError`` from it, ``OSError``/``TimeoutError``.
    """
    async with asyncio.timeout_at(deadline):
        reader, writer = await asyncio.open_connection(address, port, limit=MAX_LINE * 2)
        try:
            code, _ = await _reply(reader)
            if code != 220:
                raise _Stop(TlsOutcome.UNREACHED, f"the greeting is {code}, not 220")
            writer.write(f"EHLO {ehlo}\r\n".encode("ascii", "replace"))
            code, lines = await _reply(reader)
            if code != 250:
                raise _Stop(TlsOutcome.NO_STARTTLS, f"EHLO was answered {code}")
            if not any(line[4:].strip().upper().split()[:1] == ["STARTTLS"] for line in lines[1:]):
                raise _Stop(TlsOutcome.NO_STARTTLS, "STARTTLS is not in its EHLO reply")
            writer.write(b"STARTTLS\r\n")
            code, _ = await _reply(reader)
            if code != 220:
                raise _Stop(TlsOutcome.NO_STARTTLS, f"it answered STARTTLS with {code}")
            await writer.start_tls(context, server_hostname=host)
            ssl_object = writer.get_extra_info("ssl_object")
            presented = _presented(ssl_object)
            writer.write(b"QUIT\r\n")
            return presented
        finally:
            writer.close()


def _unreached(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "no answer before the deadline"
    if isinstance(exc, asyncio.IncompleteReadError | ConnectionResetError):
        return "the connection was closed"
    if isinstance(exc, asyncio.LimitOverrunError):
        return "a reply line is too long"
    if isinstance(exc, OSError) and exc.errno is not None:
        return f"connect failed: {errno.errorcode.get(exc.errno, str(exc.errno))}"
    return f"the session failed ({type(exc).__name__})"


async def check_mx_tls(host: str, addresses: list[str], port: int, ehlo: str, deadline: float) -> MxTls:
    """Connects to the host's addresses in order until one answers SMTP; never raises for the network."""
    loop = asyncio.get_running_loop()
    last = MxTls(TlsOutcome.UNREACHED, reason="the host has no address")
    candidates = addresses[:ADDRESSES_TRIED]
    for index, address in enumerate(candidates):
        share = loop.time() + (deadline - loop.time()) / (len(candidates) - index)
        last = await _check_address(host, address, port, ehlo, share)
        if last.outcome is not TlsOutcome.UNREACHED:
            return last
    return last


async def _check_address(host: str, address: str, port: int, ehlo: str, deadline: float) -> MxTls:
    try:
        chain, names = await starttls_session(address, port, ehlo, host, system_context(), deadline)
    except _Stop as stop:
        return MxTls(stop.outcome, address, stop.reason)
    except ssl.SSLCertVerificationError as exc:
        found = MxTls(TlsOutcome.NOT_VERIFIED, address, exc.verify_message or "", exc.verify_code, exc.verify_message)
        try:  # again without verification, for the names and the chain
            found.chain, found.names = await starttls_session(address, port, ehlo, host, unverified_context(), deadline)
        except (_Stop, ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        return found
    except ssl.SSLError as exc:
        return MxTls(TlsOutcome.HANDSHAKE_FAILED, address, exc.reason or type(exc).__name__)
    except (OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        return MxTls(TlsOutcome.UNREACHED, address, _unreached(exc))
    return MxTls(TlsOutcome.VERIFIED, address, "", names=names, chain=chain)


async def verifies_with_anchor(
    host: str, address: str, port: int, ehlo: str, anchor_der: bytes, deadline: float
) -> bool | None:
    """Whether the host's chain verifies for ``host`` up to ``anchor_der`` (None: no answer)."""
    try:
        await starttls_session(address, port, ehlo, host, anchor_context(anchor_der), deadline)
    except ssl.SSLCertVerificationError:
        return False
    except (_Stop, ssl.SSLError, OSError, TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
        return None
    return True
