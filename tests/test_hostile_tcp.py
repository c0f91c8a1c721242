"""Hostile TCP servers cannot hold up or break the tcp prober: it connects, records, closes."""

from __future__ import annotations

import asyncio
import socket
import struct

import pytest

from tests.helpers.configs import tcp_config
from tests.helpers.metrics_text import state_of, value


async def start(handler) -> tuple[asyncio.AbstractServer, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def never_reads(reader, writer):
    await asyncio.sleep(30)


async def resets_after_handshake(reader, writer):
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def floods(reader, writer):
    chunk = b"\x00\xff garbage \r\n" * 4096
    try:
        for _ in range(1000):  # bounded: at most ~60 MB, stops as soon as the peer is gone
            writer.write(chunk)
            await writer.drain()
    except ConnectionError:
        pass


@pytest.mark.parametrize("handler", [never_reads, resets_after_handshake, floods])
async def test_hostile_server_is_open_and_fast(make_client, handler):
    server, port = await start(handler)
    try:
        client = await make_client(tcp_config(timeout="20s"))
        response = await asyncio.wait_for(client.get("/probe", params={"target": f"127.0.0.1:{port}"}), 60)
        text = await response.text()
    finally:
        server.close()
    assert response.status == 200
    assert state_of(text) == "open"
    assert value(text, "probe_duration_seconds") < 5  # the connect's answer, not the 20 s module timeout
