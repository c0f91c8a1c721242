"""The SMTP reply reader and parsers, fed by real loopback sockets."""

from __future__ import annotations

import asyncio
import socket

import pytest

from exporter.probers.smtp.replies import (
    MAX_LINE_BYTES,
    ConnectionClosed,
    MalformedReply,
    ReplyCode,
    ReplyReader,
    ReplyTimeout,
    ReplyTooLong,
    enhanced_code,
    open_stream,
    parse_line,
)
from tests.helpers import smtp_servers

servers = smtp_servers.servers  # the fixture


async def read_from(servers, payload: bytes, timeout: float = 1.0, close: bool = True):
    """Serve ``payload`` on a loopback port, connect, and read one reply from it."""

    async def handler(reader, writer):
        writer.write(payload)
        await writer.drain()
        if close:
            writer.close()
        else:
            await asyncio.sleep(3600)

    port = await servers.start(handler)
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    reader, writer = await open_stream(sock)
    try:
        return await ReplyReader(reader).read(asyncio.get_running_loop().time() + timeout)
    finally:
        writer.transport.abort()


async def test_single_line_reply(servers):
    reply = await read_from(servers, b"220 mx.test ESMTP\r\n")
    assert (reply.code, reply.lines, reply.enhanced) == (220, ("mx.test ESMTP",), None)
    assert reply.code == ReplyCode.SERVICE_READY


async def test_multi_line_reply_keeps_every_line_and_accepts_bare_lf(servers):
    reply = await read_from(servers, b"250-mx.test\r\n250-SIZE 100\n250 STARTTLS\r\n250 next reply\r\n")
    assert reply.code == 250
    assert reply.lines == ("mx.test", "SIZE 100", "STARTTLS")
    assert reply.raw_lines[-1] == b"250 STARTTLS"


async def test_enhanced_status_code_is_extracted(servers):
    reply = await read_from(servers, b"554 5.7.1 Service unavailable; client host blocked\r\n")
    assert (reply.code, reply.enhanced, reply.permanent) == (554, "5.7.1", True)


async def test_code_alone_is_a_complete_reply(servers):
    reply = await read_from(servers, b"250\r\n")
    assert (reply.code, reply.lines) == (250, ("",))


async def test_invalid_utf8_is_kept_escaped_not_fatal(servers):
    reply = await read_from(servers, b"220 caf\xe9 \x00\r\n")
    assert reply.lines == ("caf\\xe9 \x00",)


async def test_overlong_line_is_refused_without_reading_it_all(servers):
    with pytest.raises(ReplyTooLong, match=f"longer than {MAX_LINE_BYTES} bytes"):
        await read_from(servers, b"220 " + b"x" * (1024 * 1024), close=False)


async def test_too_many_continuation_lines(servers):
    with pytest.raises(ReplyTooLong, match="more than 100 lines"):
        await read_from(servers, b"250-more\r\n" * 500, close=False)


async def test_code_change_inside_a_reply_is_malformed(servers):
    with pytest.raises(MalformedReply, match="changed from 250 to 550"):
        await read_from(servers, b"250-ok\r\n550 no\r\n")


@pytest.mark.parametrize(
    "payload", [b"HTTP/1.1 400 Bad Request\r\n", b"\xff\xfe\r\n", b"2200 x\r\n", b"120 x\r\n", b"\r\n"]
)
async def test_garbage_is_malformed(servers, payload):
    with pytest.raises(MalformedReply):
        await read_from(servers, payload)


async def test_close_before_line_end(servers):
    with pytest.raises(ConnectionClosed, match="closed the connection after '220 half'"):
        await read_from(servers, b"220 half")


async def test_deadline_bounds_a_silent_server(servers):
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(ReplyTimeout) as caught:
        await read_from(servers, b"220-first\r\n", timeout=0.2, close=False)
    assert isinstance(caught.value, TimeoutError)  # catchable as the built-in too
    assert "got 1 complete lines" in str(caught.value)
    assert loop.time() - started < 5.0  # the 200 ms deadline: the server stays silent for good


def test_parse_line():
    assert parse_line(b"250-SIZE 1") == (250, False, b"SIZE 1")
    assert parse_line(b"250 ok") == (250, True, b"ok")
    with pytest.raises(MalformedReply):
        parse_line(b"25O ok")


@pytest.mark.parametrize(
    "code, text, expected",
    [
        (550, "5.1.1 no such user", "5.1.1"),
        (250, "2.0.0 ok", "2.0.0"),
        (550, "4.1.1 class disagrees with the code", None),
        (550, "5.1.1234 too many digits", None),
        (550, "no enhanced code", None),
        (421, "4.7.0 Try again later", "4.7.0"),
    ],
)
def test_enhanced_code(code, text, expected):
    assert enhanced_code(code, text) == expected
