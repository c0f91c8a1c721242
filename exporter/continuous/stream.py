"""A scrape's target families written as they are rendered, each family once with every process's lines of it.

The serving process does not hold the reply: the scrape-time targets' lines of a family, then the serving
process's continuous targets' (``render_pieces``), then each worker's (read off its pipe piece by piece as the
client takes them, ``exporter.workers.stream``) go out one piece after another, under one header per family.
The text format wants a family's lines together, so every source renders the families in the same order (the
serving process sends its order to the workers) and the merge takes from each source only while the source's
next piece is of the family being written. A piece of a family already written or of one the serving process
does not know is dropped (a worker on a newer plan than this scrape's): the reply stays well-formed.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable, Sequence
from typing import Protocol

from exporter.continuous.shard import Pacer, Piece

log = logging.getLogger("exporter.continuous")

Key = tuple[bool, str]  # (a latest-result family?, the family's name)
# One family of the reply: its key, its header, and the scrape-time targets' lines of it (None: there are none).
Slot = tuple[Key, str, Callable[[], Iterable[bytes]] | None]


class Source(Protocol):
    """One process's continuous pieces in the reply's family order; ``None`` once they end."""

    async def next(self) -> Piece | None: ...


class LocalSource:
    """The serving process's own continuous targets (``render_pieces``) as a ``Source``."""

    def __init__(self, pieces: AsyncGenerator[Piece, None]):
        self._pieces = pieces

    async def next(self) -> Piece | None:
        try:
            return await anext(self._pieces)
        except StopAsyncIteration:
            return None

    async def aclose(self) -> None:
        await self._pieces.aclose()


async def merged(order: Sequence[Slot], sources: Sequence[Source]) -> AsyncGenerator[bytes, None]:
    """The reply's target families in ``order``: each family's header (only when it has lines), its scrape-time
    lines, then each source's lines of it. Every source is read to its end, so a worker sends its summary."""
    position = {key: index for index, (key, _, _) in enumerate(order)}
    heads: list[Piece | None] = [None] * len(sources)
    ended = [False] * len(sources)
    pacer = Pacer()
    for index, (_, header, own) in enumerate(order):
        begun = False
        for data in own() if own is not None else ():
            if not begun:
                begun = True
                yield header.encode()
            yield data
            await pacer.pause()  # the continuous targets' ticks fire meanwhile
        for number, source in enumerate(sources):
            while not ended[number]:
                head = heads[number]
                if head is None:
                    head = await source.next()
                    if head is None:
                        ended[number] = True
                        break
                at = position.get((head[0], head[1]), -1)
                if at > index:  # the source's next family: kept for its turn
                    heads[number] = head
                    break
                heads[number] = None
                if at < index:
                    log.warning("continuous piece of family %s out of the reply's order: dropped", head[1])
                    continue
                if not begun:
                    begun = True
                    yield header.encode()
                yield head[2]
                await pacer.pause()
    for number, source in enumerate(sources):  # nothing is left but their ends (and their summaries)
        while not ended[number]:
            if await source.next() is None:
                ended[number] = True


class Reply:
    """A scrape's body as it is written: iterate it once, and ``aclose`` it in every case (an early end, an
    error, a client gone), which gives up on whatever the workers have not sent yet."""

    def __init__(self, chunks: AsyncGenerator[bytes, None], stop: Callable[[], None]):
        self._chunks = chunks
        self._stop = stop

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            self._stop()
