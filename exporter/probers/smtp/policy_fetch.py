"""Fetching an MTA-STS policy over HTTPS (RFC 8461 §3.3), bounded in time and size.

``https://mta-sts.<domain>/.well-known/mta-sts.txt`` with aiohttp: the certificate must verify for
``mta-sts.<domain>`` with the system trust store; only a 200 counts and redirects are not followed
(§3.3); no compression is asked for, so the size cap is on the bytes the server sends; the body is
read in pieces and given up past 64 KiB; everything ends at the probe's deadline, so a slow,
huge or redirecting policy host costs at most the time given. Failures are classified from the
exception type and errno, never from message text; a deadline is explained by the phase it cut
(connecting, waiting for the answer, reading the body), learnt from aiohttp's tracing signals.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass

import aiohttp

MAX_POLICY_BYTES = 64 * 1024
READ_CHUNK = 8192


@dataclass(slots=True)
class Fetched:
    text: str | None  # the policy text, or None when the fetch failed
    reason: str = ""  # why it failed (one phrase)
    invalid: bool = False  # fetched, but not usable as a policy (wrong media type, not UTF-8)
    status: int | None = None
    size: int = 0


def policy_url(domain: str) -> str:
    return f"https://mta-sts.{domain}/.well-known/mta-sts.txt"


class _Phase:
    """How far the fetch got, so a deadline can say where it stopped."""

    __slots__ = ("connected", "answered")

    def __init__(self) -> None:
        self.connected = False  # TCP connected and TLS handshake finished
        self.answered = False  # the status line and headers arrived

    def tracing(self) -> aiohttp.TraceConfig:
        trace = aiohttp.TraceConfig()

        async def connected(*_: object) -> None:
            self.connected = True

        trace.on_connection_create_end.append(connected)
        return trace

    def timed_out(self, host: str) -> str:
        if not self.connected:
            # TCP and TLS are one step in aiohttp's connector: the evidence cannot tell them apart.
            return f"{host} did not finish the connection (TCP connect or TLS handshake) before the deadline"
        if not self.answered:
            return f"{host} accepted the HTTPS connection but sent no HTTP answer before the deadline"
        return f"{host} did not send the whole policy before the deadline"


def _failure(host: str, exc: BaseException, phase: _Phase) -> str:
    if isinstance(exc, TimeoutError):
        return phase.timed_out(host)
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert_error = exc.certificate_error
        message = getattr(cert_error, "verify_message", None) or "it does not verify"
        return f"the certificate of {host} does not verify for that name with the system trust store ({message})"
    if isinstance(exc, aiohttp.ClientConnectorDNSError):
        return f"{host} does not resolve (no address record, or the DNS lookup failed)"
    if isinstance(exc, aiohttp.ClientConnectorSSLError):
        return f"the TLS handshake with {host} failed"
    if isinstance(exc, aiohttp.ClientConnectorError):
        code = exc.os_error.errno if exc.os_error is not None else None
        name = errno.errorcode.get(code, "") if code is not None else ""
        return f"no HTTPS connection to {host}" + (f" ({name})" if name else "")
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return f"{host} closed the connection before the whole policy was sent"
    if isinstance(exc, aiohttp.ClientResponseError):
        return f"{host} did not answer with valid HTTP"
    if isinstance(exc, ssl.SSLError):
        return f"the TLS session with {host} failed"
    if isinstance(exc, OSError):
        return f"the connection to {host} failed ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})"
    return f"fetching the policy from {host} failed ({type(exc).__name__})"


async def fetch_policy(domain: str, deadline: float, context: ssl.SSLContext) -> Fetched:
    host = f"mta-sts.{domain}"
    loop = asyncio.get_running_loop()
    phase = _Phase()
    try:
        async with asyncio.timeout_at(deadline):
            timeout = aiohttp.ClientTimeout(total=max(0.001, deadline - loop.time()))
            connector = aiohttp.TCPConnector(ssl=context, force_close=True, limit=1, family=socket.AF_UNSPEC)
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=timeout, trust_env=False, trace_configs=[phase.tracing()]
                ) as session,
                session.get(
                    policy_url(domain),
                    allow_redirects=False,
                    headers={"Accept-Encoding": "identity", "User-Agent": "connectivity-exporter (MTA-STS check)"},
                ) as response,
            ):
                phase.answered = True
                return await _read(host, response)
    except (aiohttp.ClientError, OSError, TimeoutError, ssl.SSLError) as exc:
        return Fetched(None, _failure(host, exc, phase))


async def _read(host: str, response: aiohttp.ClientResponse) -> Fetched:
    status = response.status
    if 300 <= status < 400:
        location = response.headers.get("Location", "")[:200]
        return Fetched(
            None,
            f"{host} answers with a redirect (HTTP {status}"
            + (f" to {location}" if location else "")
            + "), which senders must not follow (RFC 8461 §3.3)",
            status=status,
        )
    if status != 200:
        return Fetched(None, f"{host} answers HTTP {status}, not 200", status=status)
    body = bytearray()
    while True:
        chunk = await response.content.read(READ_CHUNK)
        if not chunk:
            break
        body += chunk
        if len(body) > MAX_POLICY_BYTES:
            return Fetched(
                None,
                f"the policy from {host} is larger than {MAX_POLICY_BYTES // 1024} KiB (senders cap the size)",
                status=status,
                size=len(body),
            )
    media = response.content_type
    if media != "text/plain":
        return Fetched(
            None,
            f"the policy is served as {media[:60]}, not text/plain (RFC 8461 §3.2: senders check the media type)",
            invalid=True,
            status=status,
            size=len(body),
        )
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Fetched(None, "the policy is not UTF-8 text", invalid=True, status=status, size=len(body))
    return Fetched(text, status=status, size=len(body))
