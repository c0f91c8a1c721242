"""The suite's one polling helper: it returns the first passing value, and a timeout names what was awaited
and the last value seen (sync and async probes alike)."""

from __future__ import annotations

import itertools

import pytest

from tests.helpers.eventually import GaveUp, eventually


def test_returns_the_first_value_that_passes():
    counter = itertools.count()
    assert eventually(lambda: next(counter), until=lambda n: n >= 3, what="three", interval=0) == 3


def test_a_timeout_names_what_was_awaited_and_the_last_value():
    values = iter(range(1_000_000))
    with pytest.raises(AssertionError) as caught:
        eventually(lambda: next(values), until=lambda n: n < 0, what="a negative number", timeout=0.2, interval=0.01)
    message = str(caught.value)
    assert message.startswith("gave up waiting for a negative number after 0.2 s (")
    last = int(message.rsplit("last seen: ", 1)[1])
    assert last == next(values) - 1  # the value of the very last attempt, not an earlier one
    assert isinstance(caught.value, GaveUp) and caught.value.last == last


def test_ignored_exceptions_are_not_yet_and_reported_as_the_last_value():
    def refused() -> None:
        raise ConnectionRefusedError(111, "Connection refused")

    with pytest.raises(AssertionError) as caught:
        eventually(refused, what="a listener", timeout=0.1, interval=0.01, ignoring=(OSError,))
    assert str(caught.value).endswith("last seen: ConnectionRefusedError: [Errno 111] Connection refused")


def test_an_exception_not_ignored_ends_the_wait_at_once():
    calls = []

    def exited() -> bool:
        calls.append(1)
        raise RuntimeError("the server exited with 2")

    with pytest.raises(RuntimeError, match="exited with 2"):
        eventually(exited, what="a server", timeout=60, ignoring=(OSError,))
    assert calls == [1]


def test_long_last_values_are_cut_to_their_end():
    with pytest.raises(AssertionError) as caught:
        eventually(lambda: "x" * 5000 + "END", until=lambda _: False, what="nothing", timeout=0.05, interval=0.01)
    assert str(caught.value).endswith("last seen: …" + "x" * 1997 + "END")


async def test_an_async_probe_is_awaited_until_it_passes():
    counter = itertools.count()

    async def probe() -> int:
        return next(counter)

    assert await eventually(probe, until=lambda n: n == 2, what="two", interval=0) == 2


async def test_an_async_timeout_reads_like_the_sync_one():
    async def probe() -> str:
        return "closed"

    with pytest.raises(AssertionError, match=r"gave up waiting for an open door after 0.1 s .*last seen: closed$"):
        await eventually(probe, until=lambda s: s == "open", what="an open door", timeout=0.1, interval=0.01)
