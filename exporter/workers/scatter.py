"""One scrape split over the serving process and its probe workers, and the answers gathered.

Failures degrade to the single-process behaviour, never to a lost scrape: a worker that is not
ready or has died has its share probed here; one that does not answer by the deadline has its share
reported as cut at the deadline, and after ``STALLS_BEFORE_KILL`` such scrapes in a row it is killed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probing.runner import DEADLINE_GRACE, fill_cut
from exporter.workers.child import reply_margin
from exporter.workers.handle import Answer, WorkerGone

log = logging.getLogger("exporter.workers")

STALLS_BEFORE_KILL = 3
# Below this much time left a dead worker's share is reported as cut rather than started late.
MIN_FALLBACK_SECONDS = 0.05

Targets = Sequence[tuple[HostPort, Module]]


class Worker(Protocol):
    """What the gathering needs of a worker (``WorkerHandle``, or a fake in tests)."""

    number: int
    stalls: int

    def request(self, version: int, budget: float) -> asyncio.Future[Answer] | None: ...

    def kill(self) -> None: ...


class Runner(Protocol):
    async def probe_all(self, targets: Targets, deadline: Deadline) -> list[ProbeResult]: ...


async def scatter_gather(
    targets: Targets,
    shares: Sequence[Sequence[int]],
    version: int,
    workers: Sequence[Worker],
    runner: Runner,
    deadline: Deadline,
) -> list[ProbeResult]:
    """The results of every target, in order: share 0 probed here by ``runner``, share k by worker k.

    ``version`` names the plan the workers were given; an answer of the wrong length means a worker
    did not hold it."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    local = list(shares[0])
    asked: list[tuple[Worker, Sequence[int], asyncio.Future[Answer]]] = []
    for worker in workers:
        share = shares[worker.number]
        reply = worker.request(version, deadline.remaining()) if share else None
        if reply is None:
            local.extend(share)
        else:
            asked.append((worker, share, reply))
    results: list[ProbeResult | None] = [None] * len(targets)
    _fill(results, local, await runner.probe_all([targets[i] for i in local], deadline))
    for worker, share, reply in asked:
        wait = deadline - loop.time() + DEADLINE_GRACE + reply_margin(len(share))
        try:
            answer = await asyncio.wait_for(reply, max(wait, 0.0))
        except TimeoutError:
            worker.stalls += 1
            log.warning(
                "probe worker %d did not answer by the deadline (%d in a row); its %d targets are reported as cut",
                worker.number,
                worker.stalls,
                len(share),
            )
            if worker.stalls >= STALLS_BEFORE_KILL:
                log.error("probe worker %d killed: it stopped answering", worker.number)
                worker.kill()
            continue
        except WorkerGone:
            answer = None
        else:
            worker.stalls = 0
        if answer is None or len(answer) != len(share):
            # Gone, or it did not hold this plan: probe its share here if there is time left.
            if deadline.remaining() > MIN_FALLBACK_SECONDS:
                answer = await runner.probe_all([targets[i] for i in share], deadline)
            else:
                continue
        _fill(results, share, answer)
    return fill_cut(results, targets, loop.time() - started)


def _fill(results: list[ProbeResult | None], indices: Sequence[int], answer: list[ProbeResult]) -> None:
    for index, result in zip(indices, answer, strict=False):
        results[index] = result
