"""The one time type every layer passes down: a moment on the running event loop's clock.

A scrape's time budget becomes a ``Deadline`` once, where the request is handled; every layer below
(runner, worker pool, probers, the connect step) gets that moment, never a budget to add up again.
It is a ``float`` (loop time) so that the probers' timers (``loop.call_at``, ``asyncio.timeout_at``) and
comparisons take it as it is, at no cost on the per-probe path.
"""

from __future__ import annotations

import asyncio


class Deadline(float):
    __slots__ = ()

    @classmethod
    def after(cls, seconds: float) -> Deadline:
        """``seconds`` from now."""
        return cls(asyncio.get_running_loop().time() + seconds)

    def remaining(self) -> float:
        """Seconds left, never negative."""
        return max(0.0, self - asyncio.get_running_loop().time())

    def passed(self) -> bool:
        return asyncio.get_running_loop().time() >= self

    def earlier(self, seconds: float) -> Deadline:
        """This deadline moved ``seconds`` earlier (time kept back, e.g. to send the reply)."""
        return Deadline(self - seconds)

    def share(self, parts: int) -> Deadline:
        """A fair share of the time left when ``parts`` tries remain (this one included): each try gets
        what is left divided by the tries still to come, so a fast try leaves more for the next."""
        now = asyncio.get_running_loop().time()
        return Deadline(now + max(0.0, self - now) / max(1, parts))

    def within(self, seconds: float) -> Deadline:
        """The sooner of this deadline and ``seconds`` from now (e.g. a module's own timeout)."""
        return Deadline(min(self, asyncio.get_running_loop().time() + seconds))
