"""A worker's continuous shard as it arrives on its pipe, read piece by piece by the scrape writing the reply.

The worker renders its continuous targets in the reply's family order and sends each piece as a raw frame
(after a ("family", ...) message when the family changes), then ("shard", id, summary). It sends at most
``window`` bytes ahead of what the serving process has taken: the serving process gives credit back
(("more", id, bytes)) as the pieces go out to the client, so a slow client slows the worker's rendering instead
of filling the serving process's memory, and the pipe stays free for other replies (probe results). A stream
given up (the client went away, the worker stalled) is told ("stop", id); the worker then keeps the outcomes
since the last scrape for the next one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

from exporter.continuous.shard import Piece, Shard
from exporter.core.deadline import Deadline
from exporter.probing.runner import DEADLINE_GRACE

log = logging.getLogger("exporter.workers")

# Bytes a worker renders ahead of the client: the most the serving process holds of one worker's shard (plus
# the piece in hand; a piece is up to 1,000 targets of one family, ~0.1-1.5 MB).
WINDOW_BYTES = 2 << 20
# Once the scrape's budget is spent, a worker that sends nothing for this long is given up on (its remaining
# families are left out of this scrape); within the budget it has until the budget's end.
STALLED_SECONDS = 2.0


class ShardStream:
    """What one worker's continuous targets add to one scrape, as it arrives (a ``continuous.stream.Source``)."""

    def __init__(
        self,
        worker: int,
        request_id: int,
        send: Callable[[tuple[object, ...]], bool],
        deadline: Deadline,
        window: int = WINDOW_BYTES,
    ):
        self.worker = worker
        self.request_id = request_id
        self._send = send
        self._deadline = deadline
        self.window = window
        self._pieces: deque[Piece | None] = deque()  # None: the end
        self._family: tuple[bool, str] = (True, "")
        self._wake: asyncio.Future[None] | None = None
        self._taken = 0  # bytes taken since credit was last given back
        self.done = False  # ended, failed or stopped: nothing more is read
        self.summary: Shard | None = None  # set at its end, when the worker could render
        self.on_done: Callable[[ShardStream], None] | None = None
        self.buffered = 0  # bytes received and not yet taken (a test hook and a bound: about ``window``)

    # Fed by the worker handle's reader, in the pipe's order.
    def family(self, gauge: bool, name: str) -> None:
        self._family = (gauge, name)

    def piece(self, data: bytes) -> None:
        if not self.done:
            self.buffered += len(data)
            self._pieces.append((*self._family, data))
            self._notify()

    def end(self, summary: Shard | None) -> None:
        if not self.done:
            self.summary = summary
            self._pieces.append(None)
            self._finish()

    def fail(self, reason: str) -> None:
        if not self.done:
            log.warning("probe worker %d: continuous shard cut short (%s)", self.worker, reason)
            self._pieces.append(None)
            self._finish()

    def _finish(self) -> None:
        self.done = True
        self._notify()
        if self.on_done is not None:
            self.on_done(self)

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def stop(self) -> None:
        """Give up on the rest (the scrape ended early): the worker stops rendering."""
        if not self.done:
            self._send(("stop", self.request_id))
            self._pieces.clear()
            self.buffered = 0
            self._pieces.append(None)
            self._finish()

    async def next(self) -> Piece | None:
        """The next piece, or None at the end (or when the worker died, or stalled past the scrape's budget)."""
        while not self._pieces:
            self._wake = asyncio.get_running_loop().create_future()
            wait = max(self._deadline.remaining() + DEADLINE_GRACE, STALLED_SECONDS)
            try:
                await asyncio.wait_for(self._wake, wait)
            except TimeoutError:
                log.warning(
                    "probe worker %d sent no continuous piece for %.1fs: left out of this scrape", self.worker, wait
                )
                self.stop()
            finally:
                self._wake = None
        piece = self._pieces.popleft()
        if piece is not None:
            self.buffered -= len(piece[2])
            self._taken += len(piece[2])
            if self._taken >= self.window // 2 and not self.done:
                self._send(("more", self.request_id, self._taken))
                self._taken = 0
        return piece
