"""Servers for the mail TLS policy tests, run INSIDE the lab's namespace:
``python tests/helpers/mail_tls_servers.py SPEC`` (SPEC: a JSON file).

SPEC keys:
- ``smtp``: list of ``{"address", "port", "cert": PEM path (certificate chain + key) or null}`` —
  aiosmtpd accepting every recipient, offering STARTTLS when it has a certificate.
- ``https``: list of ``{"address", "port", "cert"}`` — policy hosts (aiohttp), all serving ``sites``.
- ``stall``: list of ``{"address", "port"}`` — TCP listeners that accept and never send a byte, so a
  TLS client's handshake never finishes.
- ``sites``: ``{"mta-sts.<domain>": {"kind": ..., "body": ..., "content_type": ...}}`` chosen by the
  Host header. Kinds: ``policy`` (200 with body), ``redirect`` (301), ``slow`` (headers, then one
  byte every half second, for minutes), ``huge`` (a 200 body of 1.3 MB, fast), ``status`` (``status``),
``silent`` (the request is read, no answer is ever sent).
Prints "ready" once everything listens; runs until terminated.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import sys
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP


class Accept:
    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: Any) -> str:
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"


def _context(cert: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert)
    return context


def _app(sites: dict[str, dict[str, Any]]) -> web.Application:
    async def policy(request: web.Request) -> web.StreamResponse:
        site = sites.get(request.host.split(":")[0].lower())
        if site is None:
            return web.Response(status=404, text="no such site")
        kind = site["kind"]
        if kind == "policy":
            return web.Response(body=site["body"].encode(), content_type=site.get("content_type", "text/plain"))
        if kind == "redirect":
            raise web.HTTPMovedPermanently("https://elsewhere.example/.well-known/mta-sts.txt")
        if kind == "status":
            return web.Response(status=site["status"], text="nope")
        if kind == "silent":
            for _ in range(600):  # bounded (5 minutes); the client hangs up long before
                if request.transport is None or request.transport.is_closing():
                    break
                await asyncio.sleep(0.5)
            raise web.HTTPGatewayTimeout()
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        # Bounded: slow writes for at most ~8 minutes; huge writes 16 chunks (1.3 MB, 20x the client's
        # 64 KiB cap) and ends. An endless huge writer kept this process busy after the client had hung
        # up (writes into a lost TLS transport do not fail at once) and starved the next test's handshake.
        for _ in range(1_000 if kind == "slow" else 16):
            if request.transport is None or request.transport.is_closing():
                break  # the client gave up: stop, or this process would starve its other servers
            if kind == "slow":
                await response.write(b"v")
                await asyncio.sleep(0.5)
            else:
                await response.write(b"mx: filler.example\n" * 4096)
        return response

    app = web.Application()
    app.router.add_get("/.well-known/mta-sts.txt", policy)
    return app


async def main(spec: dict[str, Any]) -> None:
    loop = asyncio.get_running_loop()
    keep: list[Any] = []
    for server in spec.get("smtp", []):
        context = _context(server["cert"]) if server.get("cert") else None
        address = server["address"]
        keep.append(
            await loop.create_server(
                lambda context=context, address=address: SMTP(
                    Accept(), hostname=f"aiosmtpd-{address}", tls_context=context, require_starttls=False
                ),
                address,
                server["port"],
            )
        )
    stalled: list[asyncio.StreamWriter] = []  # held open, never written to

    async def stall(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        stalled.append(writer)

    for server in spec.get("stall", []):
        keep.append(await asyncio.start_server(stall, server["address"], server["port"]))
    runner = web.AppRunner(_app(spec.get("sites", {})), access_log=None)
    await runner.setup()
    for server in spec.get("https", []):
        site = web.TCPSite(runner, server["address"], server["port"], ssl_context=_context(server["cert"]))
        await site.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    with open(sys.argv[1]) as spec_file:
        asyncio.run(main(json.load(spec_file)))
