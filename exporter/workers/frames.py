"""Messages between the serving process and its probe workers: length-prefixed pickles.

Both ends are this program (the workers are our own children, reached only through private
pipes), so pickle is safe here, and it carries ``ProbeResult`` objects whole, SMTP details included.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

_HEADER = struct.Struct("!I")
# A reply for 100,000 targets is ~20 MB; anything near this bound is a broken stream, not data.
MAX_FRAME_BYTES = 1 << 30


class FrameError(Exception):
    """The stream does not hold a well-formed frame (a worker died mid-write, or a bug)."""


def encode(message: Any) -> bytes:
    payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    if len(payload) > MAX_FRAME_BYTES:
        raise FrameError(f"message of {len(payload):,} bytes exceeds the {MAX_FRAME_BYTES:,}-byte frame limit")
    return _HEADER.pack(len(payload)) + payload


async def read(reader: asyncio.StreamReader) -> Any:
    """The next message, or None at a clean end of stream; FrameError for a truncated or oversized one."""
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise FrameError("stream ended inside a frame header") from None
        return None
    (size,) = _HEADER.unpack(header)
    if size > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {size:,} bytes announced, the limit is {MAX_FRAME_BYTES:,}")
    try:
        payload = await reader.readexactly(size)
    except asyncio.IncompleteReadError:
        raise FrameError(f"stream ended inside a frame of {size:,} bytes") from None
    try:
        return pickle.loads(payload)
    except Exception as exc:  # a corrupt frame must not take the reader down with a traceback
        raise FrameError(f"undecodable frame: {type(exc).__name__}") from None
