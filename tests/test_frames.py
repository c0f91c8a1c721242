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


class Collected:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data


async def test_raw_frames_carry_bytes_as_they_are_between_pickled_messages():
    sink = Collected()
    frames.write_raw(sink, 7, b'probe_success{target="a"} 1\n')
    frames.write(sink, ("results", 3, None))  # another reply may come between a shard's pieces
    frames.write_raw(sink, 7, b"")
    frames.write(sink, ("shard", 7, None, []))
    reader = reader_with(bytes(sink.data))
    assert await frames.read(reader) == frames.Raw(7, b'probe_success{target="a"} 1\n')
    assert await frames.read(reader) == ("results", 3, None)
    assert await frames.read(reader) == frames.Raw(7, b"")
    assert await frames.read(reader) == ("shard", 7, None, [])
    assert await frames.read(reader) is None


async def test_a_truncated_raw_frame_is_a_frame_error():
    sink = Collected()
    frames.write_raw(sink, 1, b"x" * 100)
    with pytest.raises(frames.FrameError, match="stream ended inside a frame of 104 bytes"):
        await frames.read(reader_with(bytes(sink.data[:50])))


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
