"""Messages between the serving process and its probe workers: length-prefixed pickles, and raw byte frames.

Both ends are this program (the workers are our own children, reached only through private
pipes), so pickle is safe here, and it carries ``ProbeResult`` objects whole, SMTP details included.
Rendered metrics text (a worker's continuous shard, ~1 KB per target and family set) goes as *raw* frames:
the bytes themselves behind a header, never pickled or copied into one reply (``write_raw``); each carries
the id of the request it answers, so other replies may come between them.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any, NamedTuple, Protocol

_HEADER = struct.Struct("!I")
_REQUEST = struct.Struct("!I")
# The header's top bit marks a raw frame: a request id, then bytes as they are.
_RAW = 1 << 31
# A reply for 100,000 targets is ~20 MB; anything near this bound is a broken stream, not data.
MAX_FRAME_BYTES = 1 << 30


class FrameError(Exception):
    """The stream does not hold a well-formed frame (a worker died mid-write, or a bug)."""


class Raw(NamedTuple):
    """A raw frame as read: the request it belongs to and its bytes."""

    request_id: int
    data: bytes


class Sink(Protocol):
    """Where frames are written (an ``asyncio.StreamWriter``)."""

    def write(self, data: bytes) -> None: ...


def _payload(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"message of {len(payload):,} bytes exceeds the {MAX_FRAME_BYTES:,}-byte frame limit")
    return payload


def encode(message: Any) -> bytes:
    payload = _payload(message)
    return _HEADER.pack(len(payload)) + payload


def write(sink: Sink, message: Any) -> None:
    """``encode`` written as header and payload, without joining them (a copy of the whole message)."""
    payload = _payload(message)
    sink.write(_HEADER.pack(len(payload)))
    sink.write(payload)


def write_raw(sink: Sink, request_id: int, data: bytes) -> None:
    """``data`` as one raw frame of request ``request_id`` (read back as ``Raw``)."""
    size = _REQUEST.size + len(data)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"raw frame of {size:,} bytes exceeds the {MAX_FRAME_BYTES:,}-byte frame limit")
    sink.write(_HEADER.pack(_RAW | size) + _REQUEST.pack(request_id))
    sink.write(data)


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message (a ``Raw`` for a raw frame), or None at a clean end of stream; FrameError for a
    truncated or oversized one."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(header)
    raw = bool(size & _RAW)
    size &= ~_RAW
    if size > MAX_FRAME_BYTES or (raw and size < _REQUEST.size):
        raise FrameError(f"frame of {size:,} bytes announced, the limit is {MAX_FRAME_BYTES:,}")
    try:
        if raw:
            # The id read apart, so the data is copied once (from the stream's buffer), not once more to cut it off.
            (request_id,) = _REQUEST.unpack(await reader.readexactly(_REQUEST.size))
            return Raw(request_id, await reader.readexactly(size - _REQUEST.size))
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError(f"stream ended inside a frame of {size:,} bytes") from None
    try:
        return pickle.loads(payload)
    except Exception as exc:  # a corrupt frame must not take the reader down with a traceback
        raise FrameError(f"undecodable frame: {type(exc).__name__}") from None
