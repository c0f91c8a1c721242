"""SMTP and DNS helpers run INSIDE the mail lab's namespace: ``python tests/scenarios/maildomain_servers.py SPEC``.

SPEC is JSON: a list of ``[kind, address, port]``. Kinds:
- ``accept``: aiosmtpd, every recipient accepted.
- ``greylist``: aiosmtpd, every recipient answered 450 4.2.0 (greylisting).
- ``block554``: a scripted server (tests/smtp_servers.Script) greeting with 554 5.7.1 (a blocklisted client).
- ``silent``: accepts the connection and never greets (a hung server: the probe's time runs out).
- ``dns_servfail``: a UDP server answering SERVFAIL to every query (an upstream for dnsmasq).
- ``dns_silent``: a UDP socket that reads queries and never answers (a resolver timeout).
Prints "ready" once everything listens; runs until terminated.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

from aiosmtpd.smtp import SMTP

from tests.helpers.smtp_servers import Script


class Accept:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


class Greylist:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        return f"450 4.2.0 <{address}>: Recipient address rejected: Greylisted, please try again later"


class ServFail(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if len(data) >= 12:
            # The query's header with QR set and RCODE 2 (SERVFAIL); the question section echoed.
            flags = bytes([data[2] | 0x80, (data[3] & 0xF0) | 0x02])
            self.transport.sendto(data[:2] + flags + data[4:], addr)


def _quietly(handler):
    """A client hanging up early (the readiness check does) is not an error worth a traceback."""

    async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    return run


async def _hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(4096):  # bounded by the client: it hangs up at its deadline
            pass
    except ConnectionError:
        pass
    writer.close()


async def main(spec: list[list]) -> None:
    loop = asyncio.get_running_loop()
    keep = []
    for kind, address, port in spec:
        if kind in ("accept", "greylist"):
            handler = Accept() if kind == "accept" else Greylist()
            keep.append(
                await loop.create_server(
                    lambda handler=handler, address=address: SMTP(handler, hostname=f"aiosmtpd-{address}"),
                    address,
                    port,
                )
            )
        elif kind == "block554":
            script = Script(greeting=b"554 5.7.1 Service unavailable; client host blocked using a DNSBL\r\n")
            keep.append(await asyncio.start_server(_quietly(script), address, port))
        elif kind == "silent":
            keep.append(await asyncio.start_server(_hold, address, port))
        elif kind == "dns_servfail":
            keep.append(await loop.create_datagram_endpoint(ServFail, local_addr=(address, port)))
        elif kind == "dns_silent":
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((address, port))
            keep.append(sock)  # never read: queries are dropped on the floor
        else:
            raise SystemExit(f"unknown server kind {kind!r}")
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
