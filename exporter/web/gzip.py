"""gzip for /metrics when the client asks for it, written chunk by chunk.

Prometheus sends ``Accept-Encoding: gzip`` on every scrape, and blackbox_exporter and
client_python answer it. A 10,000-target reply is ~12 MB of text; compressed it is a few
hundred kB. The reply is already a list of encoded chunks (one per metric family); each is
compressed and written as it comes, so memory grows by the compressor's window, not by a
second copy of the reply. Large chunks are compressed in a thread (zlib releases the GIL) so
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


async def write_gzip(request: web.BaseRequest, response: web.StreamResponse, chunks: list[bytes]) -> None:
    """Send ``chunks`` gzip-compressed as the body of ``response`` (not yet prepared). Each chunk
    is dropped from the list once compressed."""
    response.headers["Content-Encoding"] = "gzip"
    await response.prepare(request)
    compressor = gzip_compressor()
    loop = asyncio.get_running_loop()
    for index, chunk in enumerate(chunks):
        chunks[index] = b""
        if len(chunk) > _THREAD_ABOVE_BYTES:
            data = await loop.run_in_executor(None, compressor.compress, chunk)
        else:
            data = compressor.compress(chunk)
        if data:
            await response.write(data)
    await response.write(compressor.flush())
    await response.write_eof()
