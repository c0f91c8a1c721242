"""Timing truth, in-process: the exporter's own connect path vs the kernel's RTT of the same socket.

Runs ``ProbeRunner.probe_all`` — the scheduling a /metrics scrape uses — over N loopback targets
with a prober that is ``connect_target`` (the code every prober connects through) plus one extra
step: before closing the socket it reads ``TCP_INFO`` and keeps ``tcpi_rtt``, the kernel's own
measurement of the SYN -> SYN-ACK time of that very connection. ``reported - tcpi_rtt`` is then
what the event loop (and the connect syscall) add to the figure under that load. A plain tcp scrape
runs the coroutine-free entry (``start_connect``) instead; both stamp the connect time in the same
``Dial``, so the figure holds for it too, minus a coroutine step per probe.

    python3 bench/timing_truth.py --port P --targets 1000 --reps 5 --event-loop uvloop
prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import socket
import statistics
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.config.loader import Module
from exporter.core.address import HostPort, parse_host_port
from exporter.core.deadline import Deadline
from exporter.core.runtime import new_event_loop
from exporter.probers.connect.dial import connect_target
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import DetailsBase, ProbeResult
from exporter.probers.table import PROBERS
from exporter.probing.runner import ProbeRunner

TCPI_RTT_OFFSET = 68  # struct tcp_info: 8 one-byte fields, then 15 u32 before tcpi_rtt (microseconds)


class KernelRtt(DetailsBase):
    """The kernel's RTT of the probe's own connection, carried as the result's typed details."""

    __slots__ = ("seconds",)

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds


async def probe_with_kernel_rtt(target: HostPort, module: Module, deadline: float, resolver: Resolver) -> ProbeResult:
    result = ProbeResult()
    sock = await connect_target(result, target, module.tcp, deadline, resolver)
    if sock is not None:
        try:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            result.details = KernelRtt(struct.unpack_from("I", info, TCPI_RTT_OFFSET)[0] / 1e6)
        finally:
            sock.close()
    return result


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def measure(port: int, targets: int, reps: int) -> dict:
    PROBERS["bench_kernel_rtt"] = dataclasses.replace(
        # start=None: the callback-only path would skip probe_with_kernel_rtt; connect_target is the same
        # connect step (start_connect is its coroutine-free entry).
        PROBERS["tcp"],
        name="bench_kernel_rtt",
        probe=probe_with_kernel_rtt,
        start=None,
    )
    module = Module(name="bench", prober="bench_kernel_rtt", timeout=10.0)
    addresses = [parse_host_port(f"127.60.{i // 250}.{i % 250 + 1}:{port}") for i in range(targets)]
    runner = ProbeRunner(Resolver(), max_concurrency=targets)
    loop = asyncio.get_running_loop()
    reps_out = []
    for _ in range(reps + 1):  # the first round warms up and is not counted
        results = await runner.probe_all([(a, module) for a in addresses], Deadline.after(10.0))
        pairs = [
            (r.connect_seconds, r.details.seconds)
            for r in results
            if isinstance(r.details, KernelRtt) and r.connect_seconds is not None
        ]
        diffs = [(reported - rtt) * 1e6 for reported, rtt in pairs]
        reps_out.append(
            {
                "connected": len(pairs),
                "targets": targets,
                "median_diff_us": statistics.median(diffs) if diffs else None,
                "p99_diff_us": percentile(diffs, 99) if diffs else None,
                "median_reported_us": statistics.median(p[0] for p in pairs) * 1e6 if pairs else None,
                "median_kernel_rtt_us": statistics.median(p[1] for p in pairs) * 1e6 if pairs else None,
            }
        )
    return {"loop": type(loop).__module__.split(".")[0], "reps": reps_out[1:]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--event-loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args()
    loop = new_event_loop(args.event_loop)
    try:
        print(json.dumps(loop.run_until_complete(measure(args.port, args.targets, args.reps))))
    finally:
        loop.close()


if __name__ == "__main__":
    main()
