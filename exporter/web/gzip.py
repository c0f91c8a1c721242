"""gzip for /metrics when the client asks for it, written chunk by chunk.

Prometheus sends ``Accept-Encoding: gzip`` on every scrape, and blackbox_exporter and
client_python answer it. A 10,000-target reply is ~12 MB of text; compressed it is a few
hundred kB. The reply comes as encoded chunks (up to 1,000 targets of one family), rendered as
it is written; each is compressed and written as it comes, so memory grows by the compressor's
window, not by a copy of the reply. Large chunks are compressed in a thread (zlib releases the GIL) so
concurrent ``/probe`` requests are not held up behind a big scrape.
"""

from __future__ import annotations

import asyncio
import zlib
from typing import Protocol

from aiohttp import web

# Level 1: bench/config_and_gzip.py on a 10,000-target reply (docs/performance.md): 12.2 MB -> 690 kB in 23 ms;
# level 6 (zlib's default) gives 554 kB for 72 ms, level 9 546 kB for 210 ms: higher levels cost several times the
# CPU for a few percent fewer bytes.
GZIP_LEVEL = 1
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer, not a raw zlib stream
_THREAD_ABOVE_BYTES = 256 * 1024


def accepts_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header (RFC 9110 section 12.5.3) allows gzip: listed as
    ``gzip``, ``x-gzip`` or ``*`` with a q-value that is not zero."""
    for item in accept_encoding.split(","):
        coding, *params = (part.strip() for part in item.split(";"))
        if coding.lower() not in ("gzip", "x-gzip", "*"):
            continue
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality > 0:
            return True
    return False


class Compressor(Protocol):
    """What zlib.compressobj returns (the stdlib does not export its class)."""

    def compress(self, data: bytes, /) -> bytes: ...

    def flush(self, mode: int = zlib.Z_FINISH, /) -> bytes: ...


def gzip_compressor(level: int = GZIP_LEVEL) -> Compressor:
    return zlib.compressobj(level, zlib.DEFLATED, _GZIP_WBITS)


class Body:
    """The body of a streamed reply, written chunk by chunk as it is rendered: as it is, or gzip-compressed.
    Each write waits for the socket to take what is queued (aiohttp's drain), so a slow client holds back the
    rendering rather than filling memory."""

    def __init__(self, response: web.StreamResponse, gzip: bool):
        self._response = response
        self._compressor = gzip_compressor() if gzip else None
        if gzip:
            response.headers["Content-Encoding"] = "gzip"

    async def write(self, chunk: bytes) -> None:
        if self._compressor is None:
            await self._response.write(chunk)
            return
        if len(chunk) > _THREAD_ABOVE_BYTES:
            data = await asyncio.get_running_loop().run_in_executor(None, self._compressor.compress, chunk)
        else:
            data = self._compressor.compress(chunk)
        if data:
            await self._response.write(data)

    async def finish(self) -> None:
        if self._compressor is not None:
            await self._response.write(self._compressor.flush())
        await self._response.write_eof()
