"""Continuous targets spread over the serving process and its probe workers, and their shards collected.

Each continuous target is probed by one process, its owner by rendezvous hashing over the processes that
are up (``exporter.continuous.assign``): process 0 (the serving process) always, a worker once it said it
is ready. Whenever that set changes (a worker ready, a worker gone) or a reload changes the targets, every
process gets its share again; a process keeps the counters of the targets it keeps. A scrape asks every
ready worker for its ``Shard`` as a stream, read piece by piece as the reply is written
(``exporter.workers.stream``); a worker that dies or stalls leaves the rest of its targets out of that one
scrape (their counters are intact: nothing is lost, the next scrape has them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from exporter.continuous.assign import identity, split
from exporter.continuous.shard import Shard, Stats
from exporter.core.deadline import Deadline
from exporter.workers.handle import WorkerHandle
from exporter.workers.stream import ShardStream

if TYPE_CHECKING:
    from exporter.probing.plan import PlannedTarget

log = logging.getLogger("exporter.workers")

Continuous = Sequence[tuple["PlannedTarget", float]]


class Spread:
    """Who owns which continuous target, and the collection of the workers' shards."""

    def __init__(self, workers: Sequence[WorkerHandle], local: Callable[[Continuous], None]):
        self._workers = workers
        self._local = local  # takes the serving process's share (its ContinuousProber.update)
        self._targets: Continuous = ()
        self._identities: list[bytes] = []
        self.owners: dict[int, int] = {}  # process -> targets it owns, for tests and the log
        self.stats = Stats()  # the workers' self-metrics as of the last scrape

    def set_targets(self, targets: Continuous) -> None:
        self._targets = targets
        self._identities = [identity(str(planned.address), planned.module.name) for planned, _ in targets]
        self.reassign()

    def reassign(self) -> None:
        """Give every process up its share (called when the set of processes up or the targets change)."""
        up = [0, *(worker.number for worker in self._workers if worker.ready)]
        shares = split(list(self._targets), self._identities, up)
        self.owners = {process: len(share) for process, share in shares.items()}
        if self._targets:
            log.info(
                "continuous targets per process: %s",
                ", ".join(f"{process}={count}" for process, count in sorted(self.owners.items())),
            )
        self._local(shares[0])
        for worker in self._workers:
            if worker.ready:
                worker.send(
                    (
                        "continuous",
                        [
                            (planned.address, planned.module, planned.labels, interval)
                            for planned, interval in shares[worker.number]
                        ],
                    )
                )

    def open(self, names: list[str], deadline: Deadline) -> list[ShardStream]:
        """Ask the workers that own continuous targets for their shards, as streams (``ShardStream``) rendered in
        the order of the latest-result families ``names``; a stream ends early if its worker dies or stalls."""
        if not self._targets:
            return []
        return [
            stream
            for worker in self._workers
            if self.owners.get(worker.number) and (stream := worker.request_shard(names, deadline)) is not None
        ]

    def finished(self, streams: Sequence[ShardStream]) -> list[Shard]:
        """The summaries of the streams that came to their end (the workers' self-metrics kept from them)."""
        shards = [stream.summary for stream in streams if stream.summary is not None]
        stats = Stats()
        for shard in shards:
            stats.add(shard.stats)
        self.stats = stats
        return shards
