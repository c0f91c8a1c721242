"""The SMTP prober's data where operators read it: the `check` command and the status page."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from exporter.config.loader import parse_config
from tests.helpers.html_tables import Tables

ROOT = Path(__file__).resolve().parent.parent
BLOCKED = b"554 5.7.1 mx.example.test blocked using a reputation list\r\n"


async def blocking_server() -> tuple[asyncio.AbstractServer, int]:
    async def greet(reader, writer):
        writer.write(BLOCKED)
        await writer.drain()
        if await reader.readline():
            writer.write(b"221 2.0.0 bye\r\n")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(greet, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def test_check_explains_a_reputation_block():
    server, port = await blocking_server()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "check",
            f"127.0.0.1:{port}",
            "--module",
            "smtp_banner",
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        server.close()
    text = out.decode()
    assert process.returncode == 1, err.decode()
    assert "FAILURE: banner_rejected (TCP: open)" in text
    assert "SMTP replies: banner 554 5.7.1, quit 221 2.0.0" in text
    assert "Reply codes explained:" in text
    assert "block list" in text
    # Issue 11 item 7: the long explanation appeared three times (transcript, verdict, explanations).
    # Now: the verdict is one short line, the full explanation comes once, under "Reply codes explained".
    for long_part in ("5.7.1: permanent failure (the same attempt will fail again)", "usual causes:"):
        assert text.count(long_part) == 1, text
    assert text.count("no SMTP service for this client") == 2, text  # the verdict's summary and the explanation
    assert "Outcome: banner_rejected\n" in text


async def test_status_page_shows_smtp_reply_codes(make_client):
    server, port = await blocking_server()
    try:
        client = await make_client(
            parse_config(f"""
modules: {{smtp_banner: {{prober: smtp, timeout: 2s, smtp: {{ehlo: probe.test}}}}}}
targets:
  - {{target: "127.0.0.1:{port}", module: smtp_banner}}
""")
        )
        await client.get("/metrics")
        rows = Tables(await (await client.get("/")).text()).rows("targets")
    finally:
        server.close()
    row = rows[0]
    assert [row[k] for k in ("Target", "Module", "State")] == [f"127.0.0.1:{port}", "smtp_banner", "banner_rejected"]
    assert row["SMTP replies"] == "banner 554 5.7.1, quit 221 2.0.0"
