"""The split of one scrape over the serving process and its workers, with fake workers and a fake
runner (no processes): every way a worker can fail still yields one result per target, in order."""

from __future__ import annotations

import asyncio

from exporter.config.loader import Module
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.workers.handle import WorkerGone
from exporter.workers.scatter import STALLS_BEFORE_KILL, scatter_gather

MODULE = Module(name="m", prober="tcp", timeout=1.0)
TARGETS = [(parse_host_port(f"127.0.0.{i + 1}:80"), MODULE) for i in range(6)]
SHARES = [[0, 3], [1, 4], [2, 5]]  # target i goes to process i mod 3


def result_for(index: int, by: str) -> ProbeResult:
    return ProbeResult(success=True, state=TcpState.OPEN, tcp_state=TcpState.OPEN, detail=f"{by}:{index}")


class LocalRunner:
    def __init__(self):
        self.asked: list[list[str]] = []

    async def probe_all(self, targets, deadline):
        self.asked.append([str(address) for address, _ in targets])
        return [result_for(int(str(address).split(".")[3].split(":")[0]) - 1, "local") for address, _ in targets]


class FakeWorker:
    """Answers as told: 'ok', 'not_ready', 'silent' (never answers), 'gone', 'wrong_plan'."""

    def __init__(self, number: int, behaviour: str):
        self.number = number
        self.behaviour = behaviour
        self.stalls = 0
        self.killed = False
        self.requests: list[tuple[int, float]] = []

    def request(self, version, budget):
        self.requests.append((version, budget))
        if self.behaviour == "not_ready":
            return None
        reply = asyncio.get_running_loop().create_future()
        if self.behaviour == "ok":
            reply.set_result([result_for(i, f"worker{self.number}") for i in SHARES[self.number]])
        elif self.behaviour == "gone":
            reply.set_exception(WorkerGone("gone"))
        elif self.behaviour == "wrong_plan":
            reply.set_result(None)
        return reply

    def kill(self):
        self.killed = True


async def gather(*behaviours: str, budget: float = 5.0, runner: LocalRunner | None = None):
    runner = runner or LocalRunner()
    workers = [FakeWorker(number, behaviour) for number, behaviour in enumerate(behaviours, start=1)]
    deadline = Deadline.after(budget)
    results = await scatter_gather(TARGETS, SHARES, 7, workers, runner, deadline)
    return results, workers, runner


async def test_every_share_answered_gives_every_result_in_order():
    results, workers, runner = await gather("ok", "ok")
    assert [r.detail for r in results] == ["local:0", "worker1:1", "worker2:2", "local:3", "worker1:4", "worker2:5"]
    assert runner.asked == [["127.0.0.1:80", "127.0.0.4:80"]]
    assert all(w.requests[0][0] == 7 for w in workers)  # the plan version the workers hold


async def test_a_worker_not_ready_has_its_share_probed_here_in_the_same_pass():
    results, _, runner = await gather("not_ready", "ok")
    assert [r.detail for r in results] == ["local:0", "local:1", "worker2:2", "local:3", "local:4", "worker2:5"]
    assert len(runner.asked) == 1  # one local pass with both shares


async def test_a_gone_worker_or_one_without_the_plan_is_covered_here():
    for behaviour in ("gone", "wrong_plan"):
        results, workers, runner = await gather(behaviour, "ok")
        assert [r.detail for r in results][1::3] == ["local:1", "local:4"], behaviour
        assert workers[0].stalls == 0 and not workers[0].killed


async def test_a_silent_worker_costs_only_its_share_and_is_killed_after_repeated_stalls():
    workers = [FakeWorker(1, "silent"), FakeWorker(2, "ok")]
    for scrape in range(STALLS_BEFORE_KILL):
        deadline = Deadline.after(0.05)
        results = await scatter_gather(TARGETS, SHARES, 7, workers, LocalRunner(), deadline)
        cut = [r for r in results if r.cut_at_deadline]
        assert len(cut) == 2 and all(r.state == TcpState.TIMEOUT for r in cut)
        assert [results[i].detail for i in (2, 5)] == ["worker2:2", "worker2:5"]
        assert workers[0].stalls == scrape + 1
        assert workers[0].killed == (scrape + 1 >= STALLS_BEFORE_KILL)


async def test_an_answer_resets_the_stall_count():
    worker = FakeWorker(1, "silent")
    await scatter_gather(TARGETS, SHARES, 7, [worker, FakeWorker(2, "ok")], LocalRunner(), Deadline.after(0.05))
    assert worker.stalls == 1
    worker.behaviour = "ok"
    await scatter_gather(TARGETS, SHARES, 7, [worker, FakeWorker(2, "ok")], LocalRunner(), Deadline.after(5))
    assert worker.stalls == 0
