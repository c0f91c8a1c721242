"""The serving process's handle on one probe worker process: start, stop, send, and the replies owed.

(The child's side is ``exporter.workers.child``.)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exporter.core.deadline import Deadline
from exporter.probers.connect.result import ProbeResult
from exporter.workers import frames
from exporter.workers.stream import ShardStream

log = logging.getLogger("exporter.workers")

# A worker's answer to a probe request: the results of its share, in order; None when it did not
# hold the plan or could not probe (the serving process then probes the share itself).
Answer = list[ProbeResult] | None

STOP_SECONDS = 5.0


@dataclass(frozen=True)
class WorkerOptions:
    """How to start the workers; ``processes`` counts the serving process (1: no workers)."""

    processes: int = 1
    event_loop: str = "auto"
    log_level: str = "info"
    log_format: str = "logfmt"


class WorkerGone(ConnectionError):
    """The worker exited (or its stream broke) before answering."""


class WorkerHandle:
    """One child process and the replies it owes."""

    def __init__(self, number: int, options: WorkerOptions):
        self.number = number
        self._options = options
        self.process: asyncio.subprocess.Process | None = None
        self.ready = False
        self.stalls = 0
        # Replies owed: an Answer for "probe"; and the continuous shards being streamed, for "collect".
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._streams: dict[int, ShardStream] = {}
        self._next_id = 0
        self._reader: asyncio.Task[None] | None = None
        self.exited: asyncio.Future[int | None] | None = None  # its exit code; None: it never started
        self.started_at = 0.0
        # Called when the worker says it is ready (the pool hands it its continuous targets then).
        self.on_ready: Callable[[WorkerHandle], None] | None = None

    async def start(self) -> None:
        self.ready = False
        self.stalls = 0
        self.started_at = asyncio.get_running_loop().time()
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter.workers.child",
            f"--runtime.event-loop={self._options.event_loop}",
            f"--log.level={self._options.log_level}",
            f"--log.format={self._options.log_format}",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            limit=1 << 20,
        )
        self.exited = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read_replies(self.process, self.exited))

    def send(self, message: tuple[object, ...]) -> bool:
        process = self.process
        if process is None or process.stdin is None or process.stdin.is_closing():
            return False
        try:
            process.stdin.write(frames.encode(message))
        except (ConnectionError, RuntimeError):
            return False
        return True

    def request(self, version: int, budget: float) -> asyncio.Future[Answer] | None:
        """Ask for the results of plan ``version`` within ``budget`` seconds; None if it cannot be asked."""
        request_id = self._next_id = self._next_id + 1
        if not self.ready or not self.send(("probe", request_id, version, budget)):
            return None
        reply: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        reply.add_done_callback(lambda _: self._pending.pop(request_id, None))
        return reply

    def request_shard(self, names: list[str], deadline: Deadline) -> ShardStream | None:
        """Ask for what its continuous targets add to a scrape, as a stream: its latest-result families in the
        order of ``names`` (the counters and histograms follow in their fixed order); None if it cannot be asked."""
        request_id = self._next_id = self._next_id + 1
        stream = ShardStream(self.number, request_id, self.send, deadline)
        if not self.ready or not self.send(("collect", request_id, names, stream.window)):
            return None
        self._streams[request_id] = stream
        stream.on_done = self._forget
        return stream

    def _forget(self, stream: ShardStream) -> None:
        self._streams.pop(stream.request_id, None)

    async def _read_replies(self, process: asyncio.subprocess.Process, exited: asyncio.Future[int | None]) -> None:
        reason = "its output ended"
        assert process.stdout is not None  # started with stdout=PIPE
        try:
            while True:
                try:
                    message = await frames.read(process.stdout)
                except frames.FrameError as exc:
                    reason = str(exc)
                    break
                if message is None:
                    break
                if isinstance(message, frames.Raw):
                    stream = self._streams.get(message.request_id)
                    if stream is not None:  # else the scrape that asked gave up on it: dropped
                        stream.piece(message.data)
                    continue
                if message[0] == "ready":
                    self.ready = True
                    log.info("probe worker %d ready", self.number, extra={"pid": message[1]})
                    if self.on_ready is not None:
                        self.on_ready(self)
                elif message[0] == "results":
                    reply = self._pending.get(message[1])
                    if reply is not None and not reply.done():
                        reply.set_result(message[2])
                elif message[0] == "family":
                    stream = self._streams.get(message[1])
                    if stream is not None:
                        stream.family(message[2], message[3])
                elif message[0] == "shard":
                    stream = self._streams.get(message[1])
                    if stream is not None:
                        stream.end(message[2])
        finally:
            self.ready = False
            for reply in list(self._pending.values()):
                if not reply.done():
                    reply.set_exception(WorkerGone(f"probe worker {self.number} gone: {reason}"))
            for stream in list(self._streams.values()):
                stream.fail(f"probe worker {self.number} gone: {reason}")
            if process.returncode is None:
                try:
                    process.kill()
                except ProcessLookupError:  # it exited between the check and the signal
                    pass
            code = await process.wait()
            if not exited.done():
                exited.set_result(code)

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def failed_to_start(self) -> None:
        """Record a start that did not happen, so the pool's watcher retries it after its back-off."""
        self.ready = False
        self.exited = asyncio.get_running_loop().create_future()
        self.exited.set_result(None)

    async def stop(self) -> None:
        process = self.process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()  # the worker exits at the end of its input
        try:
            await asyncio.wait_for(process.wait(), STOP_SECONDS)
        except TimeoutError:
            process.kill()
            await process.wait()
        if self._reader is not None:
            await asyncio.wait([self._reader], timeout=STOP_SECONDS)
