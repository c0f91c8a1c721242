"""tcp.close_with_reset (issue 25): the prober ends its connection with a reset instead of a FIN, only when asked.

A real listener records what it sees after the handshake: EOF (a FIN, the default) or ECONNRESET (the opt-in),
for a plain connect (the callback path), for one made through /probe?debug (same path) and after a dialogue.
"""

from __future__ import annotations

import asyncio

import pytest

from exporter.config.loader import parse_config

CONFIG = """
modules:
  plain: {prober: tcp, timeout: 5s}
  reset: {prober: tcp, timeout: 5s, tcp: {close_with_reset: true}}
  dialogue_reset: {prober: tcp, timeout: 5s, tcp: {close_with_reset: true, query_response: [{expect: "^hello"}]}}
targets: []
"""


async def observed_close(make_client, module: str) -> tuple[str, str]:
    """(what the server saw when the prober closed: "fin" or "reset", the /probe body)."""
    seen: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\r\n")
        try:
            await writer.drain()
            data = await reader.read(100)
            outcome = "fin" if data == b"" else f"data {data!r}"
        except ConnectionResetError:
            outcome = "reset"
        if not seen.done():
            seen.set_result(outcome)
        writer.close()

    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        client = await make_client(parse_config(CONFIG, "test.yml"))
        response = await asyncio.wait_for(
            client.get("/probe", params={"target": f"127.0.0.1:{port}", "module": module, "debug": "true"}), 60
        )
        body = await response.text()
        assert response.status == 200
        return await asyncio.wait_for(seen, 30), body
    finally:
        server.close()


async def test_default_close_is_a_fin(make_client):
    seen, body = await observed_close(make_client, "plain")
    assert seen == "fin"
    assert "Connection closed by the prober" in body


@pytest.mark.parametrize("module", ["reset", "dialogue_reset"])
async def test_close_with_reset_sends_a_reset(make_client, module):
    seen, body = await observed_close(make_client, module)
    assert seen == "reset"
    assert "Connection reset by the prober (close_with_reset)" in body
    assert "Verdict: SUCCESS" in body


def test_close_with_reset_is_a_boolean():
    with pytest.raises(Exception, match="close_with_reset"):
        parse_config(CONFIG.replace("close_with_reset: true}}\n", "close_with_reset: maybe}}\n", 1), "test.yml")
