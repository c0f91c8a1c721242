"""Per-MX-host series of a mail domain: the ``mx`` and ``preference`` labels and the samples built on
them, shared by the mail-domain families (``domain``) and the mail TLS policy families (``mail_tls``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from exporter.core.exposition import Samples, escape_label_value, labelled

R = TypeVar("R")
H = TypeVar("H")


def host_labels(host: str, preference: int) -> str:
    return f'mx="{escape_label_value(host)}",preference="{preference}"'


class MxLike(Protocol):
    @property
    def host(self) -> str: ...

    @property
    def preference(self) -> int: ...


M = TypeVar("M", bound=MxLike)


def per_host(hosts: Callable[[R], Iterable[M] | None], value: Callable[[M], float | None]) -> Samples[R]:
    """One sample per host (left out where ``value`` is None)."""

    def read(result: R) -> Iterable[tuple[str, float]]:
        return [
            (host_labels(host.host, host.preference), got)
            for host in hosts(result) or ()
            if (got := value(host)) is not None
        ]

    return labelled(read)


def per_host_one_hot(
    hosts: Callable[[R], Iterable[M] | None], values: Iterable[str], current: Callable[[M], str | None]
) -> Samples[R]:
    """A state set per host: one series per value, exactly one of them 1 per host."""
    states = list(values)

    def read(result: R) -> Iterable[tuple[str, float]]:
        out: list[tuple[str, float]] = []
        for host in hosts(result) or ():
            labels, now = host_labels(host.host, host.preference), current(host)
            out += [(f'{labels},state="{value}"', 1 if value == now else 0) for value in states]
        return out

    return labelled(read)
