"""Continuous probing under load: N loopback targets probed every 10 s in the background.

    python3 bench/continuous.py --targets 10000 --seconds 180 --ladder 15000,20000,30000 --ladder-seconds 60

For each run: one native acceptor (bench/native/acceptor.c, 0.0.0.0:PORT answers every 127.x.y.z),
the real exporter process with N targets on ``interval: 10s``, a warm-up of one interval, then a
window in which /metrics is scraped every 15 s as Prometheus would. Reported per run:
- CPU share of one core of the exporter process over the window (/proc/PID/stat), RSS (VmRSS max);
- probes run vs scheduled, skipped and missed ticks, non-open results;
- schedule accuracy: the start-lateness histogram the exporter keeps
  (connectivity_exporter_continuous_start_lateness_seconds), p50/p99 interpolated in its buckets;
- connect-time accuracy under that load: the targets' summed connect-time histogram (fine buckets)
  vs the kernel's RTT of loopback connects (tcpi_rtt via TCP_INFO, measured here meanwhile);
- scrape duration and size of /metrics.
The ladder runs larger counts for a shorter window, stopping at the first that does not hold the
interval (see HELD). Every loop is bounded; traffic goes to 127.0.0.0/8 only.
With --processes N the exporter runs N processes (--runtime.probe-processes) and the continuous targets are
spread over them (issue 23): CPU and RSS are then the whole process tree's (CPU in cores, RSS summed).
--buckets default uses the module defaults (what a deployment writes); fine adds the 20 µs connect buckets
the connect-accuracy figures need (and a larger scrape).
Prints one JSON object on stdout and a Markdown table on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools

from exporter.core.histogram import quantile

INTERVAL = 10.0
SCRAPE_EVERY = 15.0
CONNECT_BUCKETS = [0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 1.0]
LATENESS = "connectivity_exporter_continuous_start_lateness_seconds_bucket"
TCPI_RTT_OFFSET = 68  # struct tcp_info: tcpi_rtt in microseconds (as bench/timing_truth.py)
# A count "holds" a 10 s interval when the ticks started match the ticks due (within what the read times
# allow: `ran_tolerance`), nothing was skipped or
# missed, fewer than 0.1 % of the probes failed, and the late-start p99 is under 10 % of the interval.
HELD = {"failed_share": 0.001, "late_p99_seconds": INTERVAL / 10}


def target_address(index: int, block: int = 1) -> str:
    """Distinct loopback addresses 127.B.x.y (as bench/run.py), so thousands of targets need one listener."""
    return f"127.{block + index // 62500}.{index // 250 % 250 + 1}.{index % 250 + 1}"


def config_text(count: int, port: int, fine: bool = True) -> str:
    lines = "\n".join(f"  - {{target: '{target_address(i)}:{port}', module: every_10s}}" for i in range(count))
    bounds = ", ".join(format(b, "f") for b in CONNECT_BUCKETS)
    buckets = f", histogram_buckets: {{connect: [{bounds}]}}" if fine else ""
    return (
        "global: {max_concurrency: 512}\n"
        "modules:\n"
        f"  every_10s: {{prober: tcp, timeout: 5s, interval: 10s{buckets}}}\n"
        f"targets:\n{lines}\n"
    )


def read_counts(body: bytes) -> dict:
    """The few sums the benchmark needs, from a /metrics body, without a full parse (600k lines)."""
    out = {"lateness": {}, "connect": {}, "results": {}, "skipped": 0.0, "missed": 0.0}
    for line in body.decode().splitlines():
        if line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        if name.startswith(LATENESS):
            le = name.rsplit('le="', 1)[1].split('"')[0]
            out["lateness"][le] = float(value)
        elif name.startswith("probe_tcp_connect_time_seconds_bucket"):
            le = name.rsplit('le="', 1)[1].split('"')[0]
            out["connect"][le] = out["connect"].get(le, 0.0) + float(value)
        elif name.startswith("probe_results_total"):
            state = name.rsplit('state="', 1)[1].split('"')[0]
            out["results"][state] = out["results"].get(state, 0.0) + float(value)
        elif name.startswith("probe_skipped_total"):
            out["skipped"] += float(value)
        elif name.startswith("connectivity_exporter_continuous_missed_ticks_total"):
            out["missed"] = float(value)
    return out


def per_bucket(cumulative: dict[str, float], bounds: list[float]) -> list[float]:
    values = [cumulative.get(repr(float(b)), 0.0) for b in bounds] + [cumulative.get("+Inf", 0.0)]
    return [values[0]] + [b - a for a, b in zip(values, values[1:], strict=False)]


def delta(after: dict[str, float], before: dict[str, float]) -> dict[str, float]:
    return {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}


def kernel_rtt_us(port: int, count: int = 200) -> float:
    """Median tcpi_rtt (µs) of ``count`` serial loopback connects to the acceptor."""
    rtts = []
    for i in range(count):
        with socket.create_connection((target_address(i, block=100), port), timeout=5) as sock:
            info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
            rtts.append(struct.unpack_from("I", info, TCPI_RTT_OFFSET)[0])
    return statistics.median(rtts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


RSS_EVERY = 0.05


def vm_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024


def rss_split(exporter: tools.Proc) -> tuple[float, float, float]:
    """(whole tree, serving process, workers summed) VmRSS in MB."""
    serving = vm_rss_mb(exporter.pid)
    workers = 0.0
    for pid in exporter.children():
        with contextlib.suppress(OSError, StopIteration):  # a worker exiting between listing and reading
            workers += vm_rss_mb(pid)
    return serving + workers, serving, workers


def sample_rss(exporter: tools.Proc, into: list[tuple[float, float, float]], stop: threading.Event) -> None:
    while not stop.is_set():  # bounded: set once the last scrape is read (or the run failed)
        with contextlib.suppress(OSError, ValueError, StopIteration):
            into.append(rss_split(exporter))
        time.sleep(RSS_EVERY)


def measure(
    native: tools.NativeTools,
    count: int,
    seconds: float,
    workdir: Path,
    processes: int = 1,
    fine: bool = True,
    repo: Path | None = None,
) -> dict:
    load_before = os.getloadavg()
    target_port, exporter_port = free_port(), free_port()
    acceptor = tools.start_acceptor(native, target_port)
    exporter = None
    try:
        started = time.monotonic()
        exporter = tools.start_exporter(
            config_text(count, target_port, fine), exporter_port, "auto", workdir, processes=processes, repo=repo
        )
        startup = time.monotonic() - started
        time.sleep(INTERVAL + 2)  # warm-up: every target probed once (and the workers took their shares)
        rss_before_scrapes = rss_split(exporter)  # the targets' state, before any scrape's text
        first_asked = time.monotonic()
        _, body, took = tools.http_get(exporter_port, "/metrics")
        first_ended, first_took = time.monotonic(), took
        before, cpu_before, t_before = read_counts(body), exporter.tree_cpu_seconds(), time.monotonic()
        acceptor_cpu_before = acceptor.cpu_seconds()
        rss: list[tuple[float, float, float]] = []
        scrapes, sizes, rtts = [], [], []
        next_scrape = t_before + SCRAPE_EVERY
        # "ran": the ticks the schedulers started (their start-lateness histograms' count, summed over the
        # processes) between two scrapes asked a whole number of intervals apart, per tick due. A tick is never
        # lost silently: it starts (counted there), is skipped or is missed (both counted). The counts are read
        # at some point inside each scrape (a 120 MB scrape takes seconds; this code reads them at the end of
        # the reply, older code before writing it), so the ratio is only known to within the longer scrape's
        # duration over the window: "held" allows that (`ran_tolerance`) and no more.
        intervals = max(1, round(seconds / INTERVAL))
        last_asked = first_asked + intervals * INTERVAL
        end = last_asked
        # RSS sampled every RSS_EVERY seconds by a thread, through the scrapes too: their text is the peak, and
        # since the exporter returns it to the system once written, samples between scrapes would miss it.
        # The last scrape is sampled too.
        sampler_stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(exporter, rss, sampler_stop), daemon=True)
        sampler.start()
        while (now := time.monotonic()) < end:
            exporter.check_alive()
            if now >= next_scrape and now + 2 * took + 1 < last_asked:  # never delays the last scrape
                status, body, took = tools.http_get(exporter_port, "/metrics")
                if status != 200:
                    raise tools.BenchError(f"/metrics answered {status}")
                scrapes.append(took)
                sizes.append(len(body))
                next_scrape += SCRAPE_EVERY
                rtts.append(kernel_rtt_us(target_port, 50))
            time.sleep(min(1.0, max(0.0, end - time.monotonic())))
        late_by = time.monotonic() - last_asked
        _, body, took = tools.http_get(exporter_port, "/metrics")
        last_ended, last_took = time.monotonic(), took
        after, cpu_after, t_after = read_counts(body), exporter.tree_cpu_seconds(), time.monotonic()
        sampler_stop.set()
        sampler.join()
        acceptor_cpu = acceptor.cpu_seconds() - acceptor_cpu_before
    finally:
        with contextlib.suppress(NameError):  # the run failed before the sampler started
            sampler_stop.set()
        if exporter is not None:
            exporter.stop()
        acceptor.stop()
    window = t_after - t_before
    results = delta(after["results"], before["results"])
    ran = sum(results.values())
    # Due between the ends of the two scrapes (where this code reads the counters).
    scheduled = count * (last_ended - first_ended) / INTERVAL
    ran_tolerance = max(first_took, last_took) / (last_ended - first_ended) + 0.002
    ticks = after["lateness"].get("+Inf", 0.0) - before["lateness"].get("+Inf", 0.0)  # the schedulers' own count
    lateness_bounds = [float(le) for le in after["lateness"] if le != "+Inf"]
    late = per_bucket(delta(after["lateness"], before["lateness"]), lateness_bounds)
    connect_bounds = sorted(float(le) for le in after["connect"] if le != "+Inf")
    connect = per_bucket(delta(after["connect"], before["connect"]), connect_bounds)
    row = {
        "code": str(repo) if repo is not None else "this checkout",
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "targets": count,
        "processes": processes,
        "buckets": "fine" if fine else "default",
        "window_seconds": round(window, 1),
        "startup_seconds": round(startup, 2),
        "cpu_share_of_one_core": round((cpu_after - cpu_before) / window, 3),
        "acceptor_cpu_share": round(acceptor_cpu / window, 3),
        "rss_mb_max": round(max(r[0] for r in rss), 1) if rss else None,
        "rss_serving_mb_max": round(max(r[1] for r in rss), 1) if rss else None,
        "rss_workers_mb_max": round(max(r[2] for r in rss), 1) if rss else None,
        "rss_serving_mb_before_scrapes": round(rss_before_scrapes[1], 1),
        "rss_workers_mb_before_scrapes": round(rss_before_scrapes[2], 1),
        "probes_per_second": round(ran / window, 1),
        # Ticks started (the start-lateness histogram's count, summed over processes) per tick due between two
        # scrapes asked `intervals` intervals apart; results counted is the same for probes that finished.
        "ran_share": round(ticks / scheduled, 4),
        "ran_tolerance": round(ran_tolerance, 4),
        "completed_share": round(ran / scheduled, 4),
        "last_scrape_asked_late_seconds": round(late_by, 3),
        "failed": ran - results.get("open", 0.0),
        "failed_by_state": {state: n for state, n in results.items() if n and state != "open"},
        "rss_mb_before_scrapes": round(rss_before_scrapes[0], 1),
        "skipped": after["skipped"] - before["skipped"],
        "missed_ticks": after["missed"] - before["missed"],
        "late_p50_ms": round(1000 * (quantile(0.5, lateness_bounds, late) or 0), 2),
        "late_p99_ms": round(1000 * (quantile(0.99, lateness_bounds, late) or 0), 2),
        "late_over_100ms_share": round(1 - sum(late[: lateness_bounds.index(0.1) + 1]) / max(1, sum(late)), 5),
        "connect_p50_us": round(1e6 * (quantile(0.5, connect_bounds, connect) or 0), 1),
        "connect_p99_us": round(1e6 * (quantile(0.99, connect_bounds, connect) or 0), 1),
        "kernel_rtt_us_median": statistics.median(rtts) if rtts else None,
        "scrape_seconds_median": round(statistics.median(scrapes), 3) if scrapes else None,
        "scrape_mb": round(statistics.median(sizes) / 1e6, 1) if sizes else None,
    }
    row["held"] = (
        row["ran_share"] >= 1 - ran_tolerance
        and row["skipped"] == 0
        and row["missed_ticks"] == 0
        and row["failed"] <= HELD["failed_share"] * ran
        and row["late_p99_ms"] / 1000 < HELD["late_p99_seconds"]
    )
    return row


def versus_smokeping(native: tools.NativeTools, count: int, seconds: float, workdir: Path) -> dict | None:
    """The same probe rate side by side: smokeping_prober pinging ``count`` loopback hosts every 1 s
    (ICMP, privileged) and this exporter connecting to ``count`` loopback targets every 1 s."""
    import shutil

    binary = shutil.which("prometheus-smokeping-prober") or shutil.which("smokeping_prober")
    if binary is None:
        return None
    hosts = [target_address(i) for i in range(count)]
    out: dict = {"targets": count, "interval_seconds": 1.0}
    port = free_port()
    smokeping = tools.Proc(
        "smokeping_prober",
        [
            binary,
            "--privileged",
            "--ping.interval=1s",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--config.file={workdir / 'none.yml'}",
            "--log.level=error",
            *hosts,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tools.wait_ready(smokeping, port, "/metrics", seconds=180)  # it starts its pingers one by one
        out["smokeping"] = side_window(smokeping, port, seconds)
    finally:
        smokeping.stop()
    target_port, exporter_port = free_port(), free_port()
    acceptor = tools.start_acceptor(native, target_port)
    exporter = None
    try:
        text = config_text(count, target_port).replace("interval: 10s", "interval: 1s")
        exporter = tools.start_exporter(text, exporter_port, "auto", workdir)
        out["exporter"] = side_window(exporter, exporter_port, seconds)
    finally:
        if exporter is not None:
            exporter.stop()
        acceptor.stop()
    return out


def side_window(proc: tools.Proc, port: int, seconds: float) -> dict:
    time.sleep(5)  # warm-up
    cpu, started = proc.cpu_seconds(), time.monotonic()
    rss = []
    while time.monotonic() - started < seconds:
        proc.check_alive()
        rss.append(proc.memory_mb()["rss_mb"])
        time.sleep(1)
    window = time.monotonic() - started
    _, body, took = tools.http_get(port, "/metrics")
    out = {
        "cpu_share_of_one_core": round((proc.cpu_seconds() - cpu) / window, 3),
        "rss_mb_max": round(max(rss), 1),
        "scrape_seconds": round(took, 3),
        "scrape_mb": round(len(body) / 1e6, 1),
    }
    # Round-trip quantiles over the whole run from each one's own histogram, summed over targets.
    for family in ("smokeping_response_duration_seconds_bucket", "probe_tcp_connect_time_seconds_bucket"):
        cumulative: dict[str, float] = {}
        for line in body.decode().splitlines():
            if line.startswith(family):
                name, _, value = line.rpartition(" ")
                le = name.rsplit('le="', 1)[1].split('"')[0]
                cumulative[le] = cumulative.get(le, 0.0) + float(value)
        if cumulative:
            bounds = sorted(float(le) for le in cumulative if le != "+Inf")
            per = per_bucket({repr(float(le)) if le != "+Inf" else le: v for le, v in cumulative.items()}, bounds)
            out["rtt_p50_us"] = round(1e6 * (quantile(0.5, bounds, per) or 0), 1)
            out["rtt_p99_us"] = round(1e6 * (quantile(0.99, bounds, per) or 0), 1)
            out["samples"] = cumulative.get("+Inf", 0.0)
    return out


def markdown(rows: list[dict]) -> str:
    head = (
        "| code | load | targets @10 s | processes | window | CPU (cores) | RSS MB before scrapes / max | "
        "serving / workers MB before / max | probes/s | ran | failed | "
        "skipped/missed | late p50 | late p99 | connect p50 / p99 | kernel RTT | scrape (MB) | held |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    return head + "".join(
        f"| {Path(r['code']).name} | {r['loadavg_before'][0]:.1f} | {r['targets']:,} | {r['processes']} | {r['window_seconds']:.0f} s | {r['cpu_share_of_one_core']:.2f} | "
        f"{r['rss_mb_before_scrapes']:.0f} / "
        f"{r['rss_mb_max']} | {r['rss_serving_mb_before_scrapes']:.0f} / {r['rss_serving_mb_max']:.0f}, "
        f"{r['rss_workers_mb_before_scrapes']:.0f} / {r['rss_workers_mb_max']:.0f} | {r['probes_per_second']:,.0f} | {100 * r['ran_share']:.1f} % | {r['failed']:.0f} | "
        f"{r['skipped']:.0f}/{r['missed_ticks']:.0f} | {r['late_p50_ms']} ms | {r['late_p99_ms']} ms | "
        f"{r['connect_p50_us']:.0f} / {r['connect_p99_us']:.0f} µs | {r['kernel_rtt_us_median']} µs | "
        f"{r['scrape_seconds_median']} s ({r['scrape_mb']}) | {'yes' if r['held'] else 'no'} |\n"
        for r in rows
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--ladder", default="", help="comma-separated larger counts, tried until one fails")
    parser.add_argument("--ladder-seconds", type=float, default=60.0)
    parser.add_argument(
        "--versus-smokeping",
        type=int,
        default=0,
        metavar="N",
        help="also run smokeping_prober and the exporter side by side, N targets at 1 s",
    )
    parser.add_argument("--only-versus", action="store_true", help="run only the side-by-side comparison")
    parser.add_argument("--processes", default="1", help="comma-separated --runtime.probe-processes values to run")
    parser.add_argument("--buckets", choices=["default", "fine"], default="fine")
    parser.add_argument(
        "--compare", default="", help="another checkout (git worktree) whose exporter runs each row too"
    )
    parser.add_argument("--repeat", type=int, default=1, help="run the whole ladder this many times")
    args = parser.parse_args()
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        load_before = os.getloadavg()
        versus = versus_smokeping(native, args.versus_smokeping, 60.0, workdir) if args.versus_smokeping else None
        if versus is not None:
            print(json.dumps(versus), file=sys.stderr, flush=True)
        rows: list[dict] = []
        fine = args.buckets == "fine"
        # Each row of this checkout is followed by the same row of --compare's checkout (if given), so the
        # two see the same machine load; --repeat runs the whole ladder again.
        codes: list[Path | None] = [None, *([Path(args.compare).resolve()] if args.compare else [])]
        for _ in range(args.repeat):
            for processes in [] if args.only_versus else [int(p) for p in args.processes.split(",")]:
                counts = [args.targets, *(int(c) for c in args.ladder.split(",") if c)]
                for index, count in enumerate(counts):
                    seconds = args.seconds if index == 0 else args.ladder_seconds
                    held = []
                    for repo in codes:
                        rows.append(measure(native, count, seconds, workdir, processes, fine, repo))
                        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
                        held.append(rows[-1]["held"])
                    if not any(held):
                        break
        report = {
            "rows": rows,
            "versus_smokeping": versus,
            "acceptor": native.label,
            "cpus": os.cpu_count(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
            "python": sys.version.split()[0],
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        }
    print(markdown(rows), file=sys.stderr)
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
