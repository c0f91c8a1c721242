"""The SMTP prober's part of ``tcp.mtu_check`` (docs/mtu.md): what it sends and how it replays.

Towards the server: one ``NOOP`` whose parameter pads the line past one full-size segment. RFC 5321
section 4.1.1.9 lets NOOP carry a string that servers SHOULD ignore; a line longer than the 512
octets of section 4.5.3.1.4 may be answered ``500 Line too long`` (section 4.5.3.1.10), also harmless:
either reply leaves the session as it was. From the server: its certificate flight after STARTTLS
(or with implicit TLS); when it stalls, the same greeting, EHLO, STARTTLS and handshake are repeated
on a connection that advertises a small MSS, certificate not verified (only its arrival matters).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl

from exporter.core.deadline import Deadline
from exporter.probers.smtp.replies import ConnectionClosed, MalformedReply, ReplyReader, ReplyTimeout, open_stream
from exporter.probers.smtp.settings import SmtpSettings
from exporter.probers.tls.handshake import client_context, server_name
from exporter.probers.tls.stdlib_adapter import abort_transport

NOOP_HEAD = b"NOOP "


def noop_line(size: int) -> bytes:
    """A NOOP command line of ``size`` bytes with its CRLF."""
    return NOOP_HEAD + b"x" * max(1, size - len(NOOP_HEAD) - 2)


def blackhole_words(sent: int | None) -> str:
    size = f" ({sent} bytes of data)" if sent else ""
    return (
        "large packets toward the server are dropped — a path-MTU black hole: a full-size NOOP segment"
        f"{size} was never acknowledged and no ICMP came back, while a new connection still opens; "
        "a message larger than that stalls the same way (354 then silence)"
    )


def stall_words(after: str) -> str:
    return (
        f"{after} then silence: large packets from the server are dropped — a path-MTU black hole "
        "(the same exchange succeeded on a connection advertising a small MSS and stalled again with the full MSS)"
    )


async def replay(settings: SmtpSettings, host: str, sock: socket.socket, deadline: Deadline) -> bool:
    """Greeting, EHLO, STARTTLS and the TLS handshake (or the implicit-TLS handshake) on ``sock``; True
    when the handshake completed. Ends with QUIT; never raises for a network or protocol failure."""
    context = client_context(settings.tls_config, False)
    hostname = server_name(settings.tls_config, host)
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout_at(deadline):
            if settings.tls:
                _reader, writer = await open_stream(sock, ssl=context, server_hostname=hostname)
                return True
            reader, writer = await open_stream(sock)
            replies = ReplyReader(reader)
            if (await replies.read(deadline)).code != 220:
                return False
            writer.write(f"EHLO {settings.ehlo_name}\r\n".encode("ascii", "replace"))
            if (await replies.read(deadline)).code != 250:
                return False
            writer.write(b"STARTTLS\r\n")
            if (await replies.read(deadline)).code != 220:
                return False
            await writer.start_tls(context, server_hostname=hostname)
            writer.write(b"QUIT\r\n")
            return True
    except (TimeoutError, OSError, ssl.SSLError, EOFError, ReplyTimeout, ConnectionClosed, MalformedReply):
        return False
    finally:
        if writer is not None:
            with contextlib.suppress(AttributeError, OSError):
                abort_transport(writer.transport)
