"""Which process probes a continuous target: rendezvous hashing over the processes that are up.

With ``--runtime.probe-processes=N`` every continuous target belongs to one process (0 is the serving
process). The owner is the process with the highest hash of (target identity, process number) among the
processes that can probe, so:

- a target's owner depends only on its identity (target and module) and the set of processes up: a reload
  that keeps the target keeps its owner, and so its counters;
- when a worker dies only *its* targets move, spread evenly over the others (no other target moves); when it
  is back they return to it. Each move starts the target's counters again at 0 in its new process, a drop
  that Prometheus reads as a counter reset (``rate()`` and ``increase()`` handle it), never a silent loss.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from typing import TypeVar

T = TypeVar("T")


def _weight(identity: bytes, process: int) -> int:
    # BLAKE2b, not Python's hash(): the same in every process and every run.
    return int.from_bytes(hashlib.blake2b(identity + process.to_bytes(2, "big"), digest_size=8).digest(), "big")


def identity(target: str, module: str) -> bytes:
    """The target's identity as the schedule's phase uses it: its configured string and its module."""
    return f"{module}\0{target}".encode()


def owner(target_identity: bytes, processes: Collection[int]) -> int:
    """The process (from ``processes``, not empty) that probes the target."""
    return max(processes, key=lambda process: _weight(target_identity, process))


def split(items: Sequence[T], identities: Sequence[bytes], processes: Collection[int]) -> dict[int, list[T]]:
    """``items`` by owning process (every process of ``processes`` present, perhaps with none)."""
    shares: dict[int, list[T]] = {process: [] for process in processes}
    for item, key in zip(items, identities, strict=True):
        shares[owner(key, processes)].append(item)
    return shares
