"""The runner's concurrency limit, usable from callbacks as well as coroutines.

``asyncio.Semaphore`` can only be awaited; the plain-connect probes run on callbacks (no coroutine per
probe, issue 25), so they take a slot with ``try_take`` or queue a callback. One FIFO serves both kinds.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable


class Slots:
    __slots__ = ("_free", "_waiters", "_handing_out")

    def __init__(self, count: int):
        self._free = count
        self._handing_out = False
        # Each waiter is called with the slot already taken for it; it returns False when its probe
        # was cancelled meanwhile (the slot then goes to the next).
        self._waiters: deque[Callable[[], bool]] = deque()

    def try_take(self) -> bool:
        if self._free > 0 and not self._waiters:
            self._free -= 1
            return True
        return False

    def queue(self, granted: Callable[[], bool]) -> None:
        """``granted()`` is called (FIFO) when a slot is free, holding it."""
        self._waiters.append(granted)

    async def take(self) -> None:
        if self.try_take():
            return
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[None] = loop.create_future()

        def granted() -> bool:
            if turn.done():  # the waiting coroutine was cancelled
                return False
            turn.set_result(None)
            return True

        self._waiters.append(granted)
        try:
            await turn
        except BaseException:
            if turn.done() and not turn.cancelled():
                self.give()  # granted just as we were cancelled: pass it on
            raise

    def give(self) -> None:
        self._free += 1
        if self._handing_out:
            # A waiter finished at once (e.g. its deadline had passed) and gave its slot back: the loop
            # below hands it on. Recursing instead would go one frame deeper per queued probe.
            return
        self._handing_out = True
        try:
            waiters = self._waiters
            while self._free > 0 and waiters:
                self._free -= 1
                if not waiters.popleft()():
                    self._free += 1  # cancelled while waiting: the slot stays free
        finally:
            self._handing_out = False
