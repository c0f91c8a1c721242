"""A probe worker: a child process that probes its share of the configured targets.

One event loop runs on one core. With ``--runtime.probe-processes=N`` the serving process starts
N-1 of these (``python -m exporter.workers.child``) and splits every scrape of the configured
targets between itself and them, so a large scrape uses N cores. A worker holds no HTTP server,
no metrics registry and no config file: the serving process sends it its targets.

Messages on stdin (see ``exporter.frames``), replies on stdout, logs on stderr:
  ("plan", version, max_concurrency, [(HostPort, Module), ...])   the targets of this worker
  ("probe", request_id, version, budget_seconds)   ->  ("results", request_id, [ProbeResult, ...])
  ("continuous", [(HostPort, Module, labels, interval), ...])   the continuous targets this worker owns
  ("collect", request_id, [family name, ...], window)   ->  ("family", request_id, gauge?, name) whenever the family
                              changes, raw frames of request_id, then ("shard", request_id, Shard): what they add
                              to a scrape (only read), in the given family order; the text goes as raw frames, at
                              most ``window`` bytes ahead of the credit given back:
  ("more", request_id, bytes)   credit: the serving process took that many bytes
  ("stop", request_id)   the serving process gave up on this shard (exporter.workers.stream)
It sends ("ready", pid) once it can take requests, and exits when stdin closes: it ignores SIGINT and
SIGTERM so that a signal sent to the whole process group lets the serving process finish its
in-flight scrapes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import io
import logging
import os
import signal
import sys
from typing import Any

from exporter.continuous.prober import ContinuousProber
from exporter.continuous.shard import render_pieces, summary
from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.exposition import Family
from exporter.core.logs import LEVELS, setup_logging
from exporter.core.runtime import new_event_loop, raise_fd_limit
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult
from exporter.probers.module import Module
from exporter.probers.table import PROBERS, families_in_order
from exporter.probing.plan import PlannedTarget
from exporter.probing.runner import ProbeRunner
from exporter.workers import frames

log = logging.getLogger("exporter.worker")

DNS_WORKERS = 64
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
PIPE_BYTES = 1 << 20
# Plans kept: the current one and the one before, for a scrape that started just before a reload.
PLANS_KEPT = 2
# A shard whose credit does not come back for this long is given up (the serving process is wedged; when it
# gives up itself it says "stop", and when it dies our stdin ends).
CREDIT_WAIT_SECONDS = 120.0


class Credit:
    """How many bytes of one shard may still be sent before the serving process takes some."""

    def __init__(self, window: int):
        self.left = window
        self.stopped = False
        self._changed = asyncio.Event()

    def grant(self, size: int) -> None:
        self.left += size
        self._changed.set()

    def stop(self) -> None:
        self.stopped = True
        self._changed.set()

    async def spend(self, size: int) -> bool:
        """Count ``size`` bytes sent; wait while none are left. False: stop sending."""
        self.left -= size
        while self.left <= 0 and not self.stopped:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), CREDIT_WAIT_SECONDS)
            except TimeoutError:
                return False
        return not self.stopped


def reply_margin(targets: int) -> float:
    """Seconds a worker stops early so its reply reaches the serving process by the deadline:
    pickling and unpickling cost ~8 µs per result (measured), plus the pipe."""
    return 0.01 + 8e-6 * targets


class WorkerServer:
    """The child side: holds its shares of the plans and answers probe requests from the serving process."""

    def __init__(self, writer: asyncio.StreamWriter):
        self._writer = writer
        self._resolver = Resolver(max_workers=DNS_WORKERS)
        self._runner: ProbeRunner | None = None
        self._plans: dict[int, list[tuple[HostPort, Module]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        # The continuous targets this worker owns (exporter.continuous.assign), probed here in the background.
        self._continuous = ContinuousProber()
        self._continuous_started = False
        self._families: list[Family[ProbeResult]] = []
        self._credits: dict[int, Credit] = {}  # of the shards being sent

    def handle(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "plan":
            _, version, max_concurrency, targets = message
            if self._runner is None or self._runner.max_concurrency != max_concurrency:
                raise_fd_limit(max_concurrency)
                self._runner = ProbeRunner(self._resolver, max_concurrency)
            self._plans[version] = targets
            for old in sorted(self._plans)[:-PLANS_KEPT]:
                del self._plans[old]
        elif kind == "continuous":
            self._take_continuous(message[1])
        elif kind == "collect":
            _, request_id, names, window = message
            credit = self._credits[request_id] = Credit(window)
            task = asyncio.ensure_future(self._collect(request_id, names, credit))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "more":
            if (granted := self._credits.get(message[1])) is not None:
                granted.grant(message[2])
        elif kind == "stop":
            if (stopped := self._credits.get(message[1])) is not None:
                stopped.stop()
        elif kind == "probe":
            _, request_id, version, budget = message
            task = asyncio.ensure_future(self._probe(request_id, version, budget))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            log.error("probe worker: unknown message %r ignored", str(kind)[:40])

    async def _probe(self, request_id: int, version: int, budget: float) -> None:
        targets = self._plans.get(version)
        if targets is None or self._runner is None:
            # The serving process probes this share itself on a None reply.
            frames.write(self._writer, ("results", request_id, None))
            return
        deadline = Deadline.after(budget).earlier(reply_margin(len(targets)))
        try:
            reply = frames.encode(("results", request_id, await self._runner.probe_all(targets, deadline)))
        except Exception:  # a bug, or a result that cannot be pickled: the serving process probes instead
            log.exception("probe worker: request %d failed", request_id)
            reply = frames.encode(("results", request_id, None))
        self._writer.write(reply)  # one write: nothing else goes between its header and its payload

    def _take_continuous(self, targets: list[tuple[HostPort, Module, str, float]]) -> None:
        # Families are functions, not sent: each target's come from its prober, as build_plan gives them.
        planned = [
            (PlannedTarget(address, module, labels, PROBERS[module.prober].family_set), interval)
            for address, module, labels, interval in targets
        ]
        self._continuous.update(planned)
        self._families = families_in_order(PROBERS[name] for name in dict.fromkeys(m.prober for _, m, _, _ in targets))
        if not self._continuous_started:
            self._continuous_started = True
            self._continuous.start(lambda: self._runner)

    async def _collect(self, request_id: int, names: list[str], credit: Credit) -> None:
        # Each piece is sent as soon as it is written (a raw frame: no pickle, no joined reply), and the next one
        # written once the pipe has taken it and the serving process has credit left, so neither process holds
        # the shard (~1 KB per target). The families in the serving process's order: it writes each family once.
        by_name = {family.name: family for family in self._families}
        families = [by_name[name] for name in names if name in by_name]
        current: tuple[bool, str] | None = None
        reply: tuple[object, ...] | None = None
        try:
            async with contextlib.aclosing(render_pieces(self._continuous, families)) as pieces:
                async for gauge, name, piece in pieces:
                    if current != (gauge, name):
                        current = (gauge, name)
                        frames.write(self._writer, ("family", request_id, gauge, name))
                    frames.write_raw(self._writer, request_id, piece)
                    await self._writer.drain()
                    if not await credit.spend(len(piece)):
                        break  # given up: no summary, so the outcomes since the last scrape stay for the next one
                else:
                    reply = ("shard", request_id, summary(self._continuous))
        except Exception:  # a bug: this scrape goes without the rest of this worker's continuous targets
            log.exception("probe worker: collect %d failed", request_id)
            reply = ("shard", request_id, None)
        finally:
            self._credits.pop(request_id, None)
        if reply is not None:
            frames.write(self._writer, reply)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self._continuous.stop()
        self._resolver.close()


async def serve(stdin: io.FileIO, stdout: io.FileIO) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), stdin)
    transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, stdout)
    writer = asyncio.StreamWriter(transport, protocol, None, loop)
    worker = WorkerServer(writer)
    writer.write(frames.encode(("ready", os.getpid())))
    try:
        while True:
            try:
                message = await frames.read(reader)
            except frames.FrameError as exc:
                log.error("probe worker: %s; exiting", exc)
                return
            if message is None:
                return  # the serving process closed our stdin: it is shutting down or gone
            worker.handle(message)
            await writer.drain()
    finally:
        await worker.close()
        writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m exporter.workers.child", description="Probe worker of connectivity_exporter (started by it)."
    )
    parser.add_argument(
        "--runtime.event-loop", dest="event_loop", choices=["auto", "asyncio", "uvloop"], default="auto"
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info")
    parser.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt")
    args = parser.parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # Our replies own fd 1; anything else printing to stdout would corrupt them, so it goes to stderr.
    stdout = os.fdopen(os.dup(1), "wb", buffering=0)
    with contextlib.suppress(OSError):  # Linux: a larger pipe (as far as /proc/sys/fs/pipe-max-size allows), so
        # a continuous shard reaches the serving process in fewer turns of its event loop (64 KB each by default)
        fcntl.fcntl(stdout.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
    os.dup2(2, 1)
    stdin = os.fdopen(0, "rb", buffering=0)
    loop = new_event_loop(args.event_loop)
    try:
        loop.run_until_complete(serve(stdin, stdout))
    finally:
        loop.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
