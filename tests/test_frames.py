"""The frames probe workers answer in: results cross the pipe whole, broken streams are named errors."""

from __future__ import annotations

import asyncio
import struct

import pytest

from exporter.probing.report import debug_report
from exporter.service.exporter import render_single
from exporter.workers import frames
from tests.helpers import smtp_servers
from tests.helpers.aiosmtpd_server import start_aiosmtpd, tls_config
from tests.helpers.smtp_servers import Pki, probe, smtp_config

servers = smtp_servers.servers  # the fixture


def reader_with(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


async def test_messages_round_trip_in_order_then_end_cleanly():
    reader = reader_with(frames.encode(("plan", 1, 512, [])) + frames.encode(("probe", 7, 1, 2.5)))
    assert await frames.read(reader) == ("plan", 1, 512, [])
    assert await frames.read(reader) == ("probe", 7, 1, 2.5)
    assert await frames.read(reader) is None


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x00\x00", "stream ended inside a frame header"),
        (struct.pack("!I", 10) + b"abc", "stream ended inside a frame of 10 bytes"),
        (
            struct.pack("!I", frames.MAX_FRAME_BYTES + 1),
            "frame of 1,073,741,825 bytes announced, the limit is 1,073,741,824",
        ),
        (struct.pack("!I", 3) + b"xyz", "undecodable frame: UnpicklingError"),
    ],
)
async def test_a_broken_stream_is_a_frame_error_naming_what_broke(data, message):
    with pytest.raises(frames.FrameError) as raised:
        await frames.read(reader_with(data))
    assert str(raised.value) == message


async def test_a_real_starttls_probe_result_crosses_unchanged(servers, tmp_path):
    pki = Pki(tmp_path)
    port = await start_aiosmtpd(servers, pki.valid)
    result = await probe(port, f"{{starttls: required, tls_config: {tls_config(pki)}}}")
    assert result.state == "ok" and result.details.tls.verified, result.detail
    crossed = await frames.read(reader_with(frames.encode(("results", 1, [result]))))
    received = crossed[2][0]
    module = smtp_config().modules["m"]
    # Everything the exporter makes of a result is the same on both sides of the pipe.
    assert render_single(received, module) == render_single(result, module)
    assert debug_report(["x"], received, module, "") == debug_report(["x"], result, module, "")
    assert received.details.reply_codes == result.details.reply_codes
    assert received.details.cert_expiry == result.details.cert_expiry
