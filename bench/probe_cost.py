"""Python per probe (issue 25): the exporter's cost per probe against C and blackbox_exporter, in one run.

    sudo python3 bench/probe_cost.py [--sections scrape,probe,continuous,inprocess] [--reps 3]
                                     [--exporter NAME=CHECKOUT ...]

Three measures, each repeated ``--reps`` times with the contenders interleaved (so drift on a shared
machine affects them alike); every figure is the median and (min–max) of the repetitions:

- scrape: the same N connects (80 % open, 20 % refused, distinct 127.x.y.z) made by
  ``bench/native/connect_loop.c many`` (an epoll loop, 512 in flight) and by one exporter process scraping
  them (``max_concurrency: 512``, uvloop): probes/s, CPU µs per probe, peak RSS while scraping, every state
  checked; the ratio to C is taken per repetition.
- probe: ``/probe`` with a new open target per request (wrk, concurrency 64) against the exporter and
  Debian's blackbox_exporter: CPU µs per request (/proc), p99, requests/s; the 1-minute load average is
  recorded at each repetition.
- continuous: N targets on ``interval: 5s`` probed in the background; CPU µs per probe over a window
  (probes counted from ``probe_results_total``).
- inprocess: what a /probe request costs below aiohttp, without HTTP or wrk: ``Exporter.probe`` and
  ``render_single`` of a new open target, one at a time on uvloop, in a process of its own per checkout (thread
  CPU time per request; levers on the request path resolve here when the whole-request figure is too noisy).

``--exporter NAME=CHECKOUT`` (repeatable) compares several checkouts of the exporter in the same run
(each started with its directory as the working directory, so ``python -m exporter`` imports it); the
default is this checkout. A NAME ending in ``+reset`` runs its module with ``tcp.close_with_reset: true``. Traffic goes to 127.0.0.0/8 only; as root inside a private network namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools
from run import (
    BLACKBOX_PORT,
    CLOSED_PORT,
    EXPORTER_PORT,
    OPEN_PORT,
    PROBE_CONCURRENCY,
    PROBE_TARGETS,
    RESULTS,
    enter_netns,
    exporter_config,
    log,
    setup_netns,
    spread,
    target_address,
)
from tools import BenchError

IN_FLIGHT = 512


def config_for(name: str, targets: list[str]) -> str:
    """``exporter_config``; a contender named ``...+reset`` closes with a reset (tcp.close_with_reset)."""
    text = exporter_config(targets)
    if name.endswith("+reset"):
        text = text.replace("{prober: tcp, timeout: 5s}", "{prober: tcp, timeout: 5s, tcp: {close_with_reset: true}}")
    return text


def fmt(values: list[float], digits: int = 0, scale: float = 1.0) -> str:
    s = spread([v * scale for v in values])
    return f"{s['median']:,.{digits}f} ({s['min']:,.{digits}f}–{s['max']:,.{digits}f})"


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def c_loop(native: tools.NativeTools, n: int) -> tuple[float, float]:
    """(connects/s, CPU seconds) of the C loop making the scrape's N connects."""
    cpu = children_cpu()
    out = subprocess.run(
        native.connect_loop + ["many", str(n), str(IN_FLIGHT), str(OPEN_PORT), str(CLOSED_PORT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    cpu = children_cpu() - cpu
    opened, refused, other, elapsed = out.stdout.split()
    if int(other) or int(refused) != sum(1 for i in range(n) if i % 5 == 4):
        raise BenchError(f"the C loop saw {opened} open, {refused} refused, {other} other")
    return n / float(elapsed), cpu


FLOOR = tools.BENCH / "native" / "connect_floor.py"


def python_floor(mode: str, n: int, python: str) -> tuple[float, float]:
    """(connects/s, CPU seconds of the connecting) of bench/native/connect_floor.py MODE: the same connects with
    the least Python (no results, no exposition), the floor under any Python exporter on this loop."""
    out = subprocess.run(
        [python, str(FLOOR), mode, str(n), str(IN_FLIGHT), str(OPEN_PORT), str(CLOSED_PORT)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    opened, refused, other, elapsed, cpu = out.stdout.split()
    if int(other) or int(refused) != sum(1 for i in range(n) if i % 5 == 4):
        raise BenchError(f"the Python floor ({mode}) saw {opened} open, {refused} refused, {other} other")
    return n / float(elapsed), float(cpu)


def scrape_once(proc: tools.Proc, port: int, n: int) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, wrongly classified targets) of one /metrics scrape."""
    before = proc.cpu_seconds()
    status, body, wall = tools.http_get(port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"})
    cpu = proc.cpu_seconds() - before
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    opened = body.count(b'state="open"} 1\n')
    refused = body.count(b'state="refused"} 1\n')
    expected_refused = sum(1 for i in range(n) if i % 5 == 4)
    return wall, cpu, n - opened - refused + abs(refused - expected_refused)


def scrape_section(
    native: tools.NativeTools,
    exporters: dict[str, Path],
    n: int,
    reps: int,
    workdir: Path,
    floors: list[str],
    python: str,
) -> dict:
    targets = [f"{target_address(i)}:{CLOSED_PORT if i % 5 == 4 else OPEN_PORT}" for i in range(n)]
    procs: dict[str, tools.Proc] = {}
    out: dict = {
        "targets": n,
        "load_average_1m": [],
        "c_loop": [],
        "c_loop_cpu_us": [],
        "floors": {mode: {"rate": [], "cpu_us": [], "ratio": []} for mode in floors},
        "exporters": {},
    }
    try:
        for index, (name, checkout) in enumerate(exporters.items()):
            port = EXPORTER_PORT + index
            procs[name] = tools.start_exporter(config_for(name, targets), port, "uvloop", workdir, repo=checkout)
            scrape_once(procs[name], port, n)  # warm-up
            procs[name].reset_peak_memory()
            out["exporters"][name] = {"wall": [], "cpu": [], "wrong": 0, "ratio": []}
        names = list(exporters)
        for rep in range(reps):
            out["load_average_1m"].append(os.getloadavg()[0])
            c_rate, c_cpu = c_loop(native, n)
            out["c_loop"].append(c_rate)
            out["c_loop_cpu_us"].append(c_cpu / n * 1e6)
            for mode in floors[rep % max(len(floors), 1) :] + floors[: rep % max(len(floors), 1)]:
                rate, cpu = python_floor(mode, n, python)
                floor = out["floors"][mode]
                floor["rate"].append(rate)
                floor["cpu_us"].append(cpu / n * 1e6)
                floor["ratio"].append(rate / c_rate)
            # Each repetition in another order: a later scrape meets the earlier ones' TIME_WAIT sockets.
            for name in names[rep % len(names) :] + names[: rep % len(names)]:
                index = names.index(name)
                wall, cpu, wrong = scrape_once(procs[name], EXPORTER_PORT + index, n)
                row = out["exporters"][name]
                row["wall"].append(wall)
                row["cpu"].append(cpu)
                row["wrong"] = max(row["wrong"], wrong)
                row["ratio"].append(n / wall / c_rate)
        for name, proc in procs.items():
            out["exporters"][name]["peak_rss_mb"] = proc.memory_mb()["peak_rss_mb"]
    finally:
        for proc in procs.values():
            proc.stop()
    log(f"  load average (1 min) at each repetition: {', '.join(f'{v:.1f}' for v in out['load_average_1m'])}")
    log(
        f"  C loop, {n:,} connects, {IN_FLIGHT} in flight: {fmt(out['c_loop'])} connects/s, "
        f"{fmt(out['c_loop_cpu_us'], 1)} µs CPU/connect"
    )
    for mode, floor in out["floors"].items():
        log(
            f"  Python floor {mode}: {fmt(floor['rate'])} connects/s, {fmt(floor['cpu_us'], 1)} µs CPU/connect, "
            f"{fmt(floor['ratio'], 2)}× C"
        )
    for name, row in out["exporters"].items():
        log(
            f"  {name}: {fmt([n / w for w in row['wall']])} probes/s, {fmt(row['cpu'], scale=1e6 / n)} µs CPU/probe, "
            f"{fmt(row['ratio'], 2)}× C, peak RSS {row['peak_rss_mb']:.0f} MB, wrong {row['wrong']}"
        )
    return out


def probe_section(exporters: dict[str, Path], reps: int, seconds: float, workdir: Path) -> dict:
    contenders: dict[str, tuple[tools.Proc, int]] = {}
    try:
        for index, (name, checkout) in enumerate(exporters.items()):
            port = EXPORTER_PORT + index
            contenders[name] = (
                tools.start_exporter(config_for(name, []), port, "uvloop", workdir, repo=checkout),
                port,
            )
        binary = tools.blackbox_binary()
        if binary is None:
            raise BenchError("prometheus-blackbox-exporter is not installed")
        contenders["blackbox_exporter"] = (tools.start_blackbox(binary, BLACKBOX_PORT, workdir), BLACKBOX_PORT)
        runs: dict[str, list[dict]] = {name: [] for name in contenders}
        for _, port in contenders.values():  # warm-up
            tools.run_wrk(f"http://127.0.0.1:{port}/", PROBE_CONCURRENCY, 2.0, (OPEN_PORT, PROBE_TARGETS))
        order = list(contenders.items())
        loads: list[float] = []
        for rep in range(reps):
            loads.append(os.getloadavg()[0])
            for name, (proc, port) in order[rep % len(order) :] + order[: rep % len(order)]:
                before = proc.cpu_seconds()
                run = tools.run_wrk(f"http://127.0.0.1:{port}/", PROBE_CONCURRENCY, seconds, (OPEN_PORT, PROBE_TARGETS))
                run["cpu_us"] = (proc.cpu_seconds() - before) / max(run["requests"], 1) * 1e6
                status, body, _ = tools.http_get(port, f"/probe?target=127.0.0.1:{OPEN_PORT}&module=tcp_connect")
                run["ok"] = status == 200 and b"\nprobe_success 1" in b"\n" + body and not run["errors"]
                runs[name].append(run)
    finally:
        for proc, _ in contenders.values():
            proc.stop()
    blackbox = runs["blackbox_exporter"]
    out: dict = {"load_average_1m": loads}
    log(f"  load average (1 min) at each repetition: {', '.join(f'{v:.1f}' for v in loads)}")
    for name, rs in runs.items():
        out[name] = {
            "requests_per_second": [r["requests_per_second"] for r in rs],
            "p99_ms": [r["p99_ms"] for r in rs],
            "cpu_us_per_request": [r["cpu_us"] for r in rs],
            # per repetition: this contender's CPU per request ÷ blackbox's in the same repetition
            "cpu_ratio": [r["cpu_us"] / b["cpu_us"] for r, b in zip(rs, blackbox, strict=True)],
            "p99_ratio": [r["p99_ms"] / b["p99_ms"] for r, b in zip(rs, blackbox, strict=True)],
            "all_ok": all(r["ok"] for r in rs),
        }
        c = out[name]
        log(
            f"  /probe {name}: {fmt(c['requests_per_second'])} req/s, p99 {fmt(c['p99_ms'], 1)} ms, "
            f"{fmt(c['cpu_us_per_request'])} µs CPU/request, CPU {fmt(c['cpu_ratio'], 2)}× blackbox, "
            f"p99 {fmt(c['p99_ratio'], 2)}× blackbox{'' if c['all_ok'] else ', ERRORS'}"
        )
    return out


def continuous_config(n: int) -> str:
    lines = [f"  - {{target: '{target_address(i)}:{OPEN_PORT}', module: every_5s}}" for i in range(n)]
    return (
        "global: {max_concurrency: 512}\n"
        "modules:\n  every_5s: {prober: tcp, timeout: 2s, interval: 5s}\n"
        "targets:\n" + "\n".join(lines) + "\n"
    )


def probes_done(port: int) -> float:
    _, body, _ = tools.http_get(port, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "30"})
    return sum(float(line.rsplit(b" ", 1)[1]) for line in body.splitlines() if line.startswith(b"probe_results_total{"))


def continuous_section(exporters: dict[str, Path], n: int, reps: int, window: float, workdir: Path) -> dict:
    out: dict = {}
    procs: dict[str, tools.Proc] = {}
    try:
        for index, (name, checkout) in enumerate(exporters.items()):
            procs[name] = tools.start_exporter(
                continuous_config(n), EXPORTER_PORT + index, "uvloop", workdir, repo=checkout
            )
            out[name] = {"cpu_us_per_probe": []}
        time.sleep(6.0)  # one interval: every target has started
        for _ in range(reps):
            for index, name in enumerate(exporters):
                port = EXPORTER_PORT + index
                first, cpu = probes_done(port), procs[name].cpu_seconds()
                time.sleep(window)
                probes, cpu = probes_done(port) - first, procs[name].cpu_seconds() - cpu
                out[name]["cpu_us_per_probe"].append(cpu / max(probes, 1) * 1e6)
    finally:
        for proc in procs.values():
            proc.stop()
    for name, row in out.items():
        log(f"  continuous {n:,} targets every 5 s, {name}: {fmt(row['cpu_us_per_probe'])} µs CPU/probe")
    return out


INPROCESS = """
import asyncio, sys, time
from prometheus_client import CollectorRegistry
from exporter.config.loader import parse_config
from exporter.core.address import parse_host_port
from exporter.core.selfmetrics import ExporterMetrics
from exporter.probers.connect.resolve import Resolver
from exporter.probing.runner import ProbeRunner
from exporter.service.exporter import Exporter, render_single
import uvloop

async def main(n, port, count):
    exporter = Exporter(parse_config(sys.stdin.read()), ExporterMetrics(CollectorRegistry()))
    resolver = Resolver(max_workers=4)
    exporter.runner = ProbeRunner(resolver, 512)
    module = exporter.config.modules["tcp_connect"]
    targets = [parse_host_port(f"127.1.{i // 250}.{i % 250 + 1}:{port}", 0) for i in range(count)]
    for i in range(500):  # warm-up
        await exporter.probe(targets[i % count], module, 5.0)
    started = time.thread_time()
    for i in range(n):
        result = await exporter.probe(targets[i % count], module, 5.0)
        render_single(result, module, None).encode()
    spent = time.thread_time() - started
    resolver.close()
    print(spent / n * 1e6, result.success)

uvloop.install()
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
"""


def inprocess_section(exporters: dict[str, Path], reps: int, requests: int) -> dict:
    out: dict = {"requests": requests, "load_average_1m": []}
    names = list(exporters)
    for name in names:
        out[name] = {"cpu_us_per_request": []}
    for rep in range(reps):
        out["load_average_1m"].append(os.getloadavg()[0])
        for name in names[rep % len(names) :] + names[: rep % len(names)]:
            run = subprocess.run(
                [sys.executable, "-c", INPROCESS, str(requests), str(OPEN_PORT), str(PROBE_TARGETS)],
                input=exporter_config([]),
                capture_output=True,
                text=True,
                cwd=exporters[name],
                env={**os.environ, "PYTHONPATH": str(exporters[name])},
                timeout=300,
            )
            if run.returncode:
                raise BenchError(f"in-process run of {name} failed: {run.stderr[-500:]}")
            cpu, ok = run.stdout.split()
            if ok != "True":
                raise BenchError(f"in-process run of {name}: the last probe failed")
            out[name]["cpu_us_per_request"].append(float(cpu))
    log(f"  load average (1 min) at each repetition: {', '.join(f'{v:.1f}' for v in out['load_average_1m'])}")
    for name in names:
        log(f"  in-process {name}: {fmt(out[name]['cpu_us_per_request'], 1)} µs CPU/request (probe + reply text)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sections", default="scrape,probe,continuous")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--probe-seconds", type=float, default=8.0)
    parser.add_argument("--continuous-targets", type=int, default=5_000)
    parser.add_argument("--inprocess-requests", type=int, default=5_000)
    parser.add_argument(
        "--floor",
        default="epoll,uvloop,uvloop-timer,uvloop-epoll",
        help="Python floor contenders in the scrape section (bench/native/connect_floor.py modes; '' for none)",
    )
    parser.add_argument("--floor-python", default=sys.executable, help="the Python (with uvloop) the floor runs on")
    parser.add_argument("--exporter", action="append", default=[], help="NAME=CHECKOUT (repeatable)")
    parser.add_argument("--json", type=Path, default=RESULTS / "probe-cost-latest.json")
    args = parser.parse_args()
    if enter_netns() is None:
        setup_netns()
    exporters = tools.checkouts(args.exporter)
    sections = set(args.sections.split(","))
    report: dict = {"reps": args.reps, "exporters": {k: str(v) for k, v in exporters.items()}}
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        acceptor = tools.start_acceptor(native, OPEN_PORT)
        try:
            if "scrape" in sections:
                log("scrape vs the C loop ...")
                floors = [mode for mode in args.floor.split(",") if mode]
                report["scrape"] = scrape_section(
                    native, exporters, args.targets, args.reps, workdir, floors, args.floor_python
                )
            if "probe" in sections:
                log("/probe vs blackbox_exporter ...")
                report["probe"] = probe_section(exporters, args.reps, args.probe_seconds, workdir)
            if "inprocess" in sections:
                log("in-process Exporter.probe + render_single ...")
                report["inprocess"] = inprocess_section(exporters, args.reps, args.inprocess_requests)
            if "continuous" in sections:
                log("continuous probing ...")
                report["continuous"] = continuous_section(exporters, args.continuous_targets, args.reps, 10.0, workdir)
        finally:
            acceptor.stop()
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    tools.exit_with(main)
