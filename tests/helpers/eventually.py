"""The one way tests wait: poll a condition until it holds, within a generous limit.

Tests never sleep for an event; they ask for the observable outcome again until it is there. The limit is
generous (the machine may be shared by many sessions on two cores) because it only matters when something is
really wrong, and then the failure says what was awaited and the last value seen, so a timeout reads like an
assertion, not like a hang.

    text = eventually(lambda: scrape(base), until=lambda t: value(t, "x") == 1, what="x == 1 on /metrics")
    ready = await eventually(client_state, what="the client connected")   # an async probe: await the result

``probe`` is called once per attempt; its result is tested with ``until`` (default: truthy) and returned as
soon as it passes. Exceptions listed in ``ignoring`` count as "not yet" (e.g. ``OSError`` while a server is
still starting) and are reported as the last value; any other exception ends the wait at once (e.g. a
``probe`` that raises because the process it waits for has exited). A timeout raises ``GaveUp``, an
``AssertionError`` that also carries the last value (a scenario may report it instead of failing at once).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")

TIMEOUT = 60.0  # seconds; generous on purpose: it bounds a failure, it never paces a passing test
INTERVAL = 0.1  # seconds between attempts
_SHOWN = 2000  # characters of the last value in a failure message (scrapes and logs can be long)


class GaveUp(AssertionError):
    """The condition did not hold in time; ``last`` is the last value seen (or the last ignored error's text)."""

    def __init__(self, message: str, last: object) -> None:
        super().__init__(message)
        self.last = last


def _truthy(value: object) -> bool:
    return bool(value)


class _Attempts:
    """The bookkeeping both loops share: the deadline, the last value seen and the failure message."""

    def __init__(self, what: str, timeout: float, ignoring: tuple[type[BaseException], ...]) -> None:
        self.what, self.timeout, self.ignoring = what, timeout, ignoring
        self.deadline = time.monotonic() + timeout
        self.last: object = "nothing yet (no attempt finished)"
        self.attempts = 0

    def saw(self, value: object) -> None:
        self.attempts += 1
        self.last = value

    def saw_error(self, error: BaseException) -> None:
        self.attempts += 1
        self.last = f"{type(error).__name__}: {error}"

    def expired(self) -> bool:
        return time.monotonic() >= self.deadline

    def failure(self) -> GaveUp:
        shown = self.last if isinstance(self.last, str) else repr(self.last)
        if len(shown) > _SHOWN:
            shown = "…" + shown[-_SHOWN:]
        return GaveUp(
            f"gave up waiting for {self.what} after {self.timeout:g} s ({self.attempts} attempts); last seen: {shown}",
            self.last,
        )


@overload
def eventually(  # an awaitable result selects the async form at run time
    probe: Callable[[], Awaitable[T]],
    *,
    what: str,
    until: Callable[[T], object] = _truthy,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Awaitable[T]: ...


@overload
def eventually(
    probe: Callable[[], T],
    *,
    what: str,
    until: Callable[[T], object] = _truthy,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    ignoring: tuple[type[BaseException], ...] = (),
) -> T: ...


def eventually(
    probe: Callable[[], Any],
    *,
    what: str,
    until: Callable[[Any], object] = _truthy,
    timeout: float = TIMEOUT,
    interval: float = INTERVAL,
    ignoring: tuple[type[BaseException], ...] = (),
) -> Any:
    """``probe()`` until ``until(result)`` holds; the passing result. An async ``probe`` gives an awaitable."""
    attempts = _Attempts(what, timeout, ignoring)
    try:
        first = probe()
    except ignoring as error:
        attempts.saw_error(error)
        first = None
    else:
        if inspect.isawaitable(first):
            return _async_loop(probe, first, until, interval, attempts)
        attempts.saw(first)
        if until(first):
            return first
    while not attempts.expired():
        time.sleep(interval)
        try:
            value = probe()
        except ignoring as error:
            attempts.saw_error(error)
            continue
        attempts.saw(value)
        if until(value):
            return value
    raise attempts.failure()


async def _async_loop(
    probe: Callable[[], Awaitable[Any]],
    first: Awaitable[Any],
    until: Callable[[Any], object],
    interval: float,
    attempts: _Attempts,
) -> Any:
    pending: Awaitable[Any] | None = first
    while True:
        try:
            value = await (pending if pending is not None else probe())
        except attempts.ignoring as error:
            attempts.saw_error(error)
        else:
            attempts.saw(value)
            if until(value):
                return value
        pending = None
        if attempts.expired():
            raise attempts.failure()
        await asyncio.sleep(interval)
