"""connectivity_exporter benchmark: against this machine's limit and against blackbox_exporter.

    python3 bench/run.py [--quick] [--json PATH]

Everything runs on loopback. As root the whole run happens inside a private network namespace
(``unshare -n``) that also holds the firewall rules for the dropped-port sections; without root
those sections are skipped with a printed reason. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import pcap
import tools
from tools import BenchError, Proc

IN_NETNS = "CONNECTIVITY_BENCH_NETNS"
OPEN_PORT, CLOSED_PORT, DELAYED_PORT = 18000, 18001, 21000
DROPPED_PORTS = "20000-20999"
EXPORTER_PORT, BLACKBOX_PORT = 19816, 19115
PROBE_CONCURRENCY = 64
PROBE_TARGETS = 1000  # /probe requests rotate over this many distinct open targets
RESULTS = tools.BENCH / "results"

FIREWALL = f"""
table inet connectivity_bench {{
  set seen_syn {{
    type ipv4_addr . inet_service
    flags dynamic, timeout
    timeout 5s
  }}
  chain input {{
    type filter hook input priority 0;
    tcp dport {DROPPED_PORTS} drop
    tcp dport {DELAYED_PORT} tcp flags & (syn | ack) == syn ip daddr . tcp sport @seen_syn accept
    tcp dport {DELAYED_PORT} tcp flags & (syn | ack) == syn add @seen_syn {{ ip daddr . tcp sport }} drop
  }}
}}
"""


# --- small helpers ------------------------------------------------------------------------------------


def spread(values: list[float]) -> dict:
    """Median and spread (min, max) of repeated measurements."""
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def target_address(index: int, block: int = 1) -> str:
    """Distinct loopback addresses 127.B.x.y, so thousands of targets need one listener."""
    return f"127.{block + index // 62500}.{index // 250 % 250 + 1}.{index % 250 + 1}"


def exporter_config(targets: list[str], max_concurrency: int = 512, offset: str = "500ms") -> str:
    lines = [
        f"  - {{target: '{t}', module: tcp_connect, labels: {{site: site-{i % 50}, tier: bench}}}}"
        for i, t in enumerate(targets)
    ]
    return (
        f"global: {{max_concurrency: {max_concurrency}, scrape_timeout_offset: {offset}}}\n"
        "modules:\n  tcp_connect: {prober: tcp, timeout: 5s}\n"
        "targets:\n" + ("\n".join(lines) if lines else "  []") + "\n"
    )


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- sections -----------------------------------------------------------------------------------------


def raw_limit(native: tools.NativeTools, reps: int, seconds: float) -> dict:
    rates = []
    for _ in range(reps):
        out = subprocess.run(
            native.connect_loop + [str(OPEN_PORT), str(seconds)],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 30,
        )
        connects, failures, elapsed = out.stdout.split()
        if int(failures):
            raise BenchError(f"the connect loop saw {failures} failed connects to the loopback acceptor")
        rates.append(int(connects) / float(elapsed))
    return {"tool": native.label, "connects_per_second": spread(rates)}


def scrape_section(setups: list[tuple[str, int, list[int]]], reps: int, workdir: Path) -> list[dict]:
    """``setups``: (event loop, --runtime.probe-processes, target counts)."""
    rows = []
    for event_loop, processes, sizes in setups:
        for n in sizes:
            rows.append(scrape_row(n, event_loop, processes, reps, workdir))
    return rows


def scrape_row(n: int, event_loop: str, processes: int, reps: int, workdir: Path) -> dict:
    targets = [f"{target_address(i)}:{CLOSED_PORT if i % 5 == 4 else OPEN_PORT}" for i in range(n)]
    expected_refused = sum(1 for i in range(n) if i % 5 == 4)
    proc = tools.start_exporter(exporter_config(targets), EXPORTER_PORT, event_loop, workdir, processes)
    try:
        loaded = proc.memory_mb()  # after reading the config: its peak is the YAML parser's
        reset = proc.reset_peak_memory()
        wait_for_workers(proc, processes - 1)
        walls, cpus, wrong = [], [], 0
        for rep in range(reps + 1):  # the first scrape warms up and is not counted
            cpu_before = proc.tree_cpu_seconds()
            status, body, wall = tools.http_get(
                EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
            )
            cpu = proc.tree_cpu_seconds() - cpu_before
            if status != 200:
                raise BenchError(f"/metrics answered {status}")
            opened = body.count(b'state="open"} 1\n')
            refused = body.count(b'state="refused"} 1\n')
            wrong = max(wrong, n - opened - refused + abs(refused - expected_refused))
            if rep:
                walls.append(wall)
                cpus.append(cpu)
        scraping = proc.memory_mb()
        workers_mb = proc.children_peak_memory_mb()
    finally:
        proc.stop()
    row = {
        "targets": n,
        "event_loop": event_loop,
        "processes": processes,
        "wall_seconds": spread(walls),
        "cpu_seconds": spread(cpus),
        "probes_per_second": spread([n / w for w in walls]),
        "rss_after_config_load_mb": loaded["rss_mb"],
        "peak_rss_at_config_load_mb": loaded["peak_rss_mb"],
        "peak_rss_scraping_mb": scraping["peak_rss_mb"] if reset else None,
        "peak_rss_mb": max(loaded["peak_rss_mb"], scraping["peak_rss_mb"]),
        "workers_peak_rss_mb": workers_mb,
        "misclassified": wrong,
        "body_bytes": len(body),
    }
    log(
        f"  scrape {n:>6} targets ({event_loop}, {processes} process{'es' if processes > 1 else ''}): "
        f"{row['probes_per_second']['median']:,.0f} probes/s, peak RSS {row['peak_rss_mb']:.0f} MB "
        f"(config load {loaded['peak_rss_mb']:.0f}, scraping {scraping['peak_rss_mb']:.0f}, workers "
        f"{workers_mb:.0f}), misclassified {wrong}"
    )
    return row


def wait_for_workers(proc: tools.Proc, workers: int, seconds: float = 30.0) -> None:
    """Until the exporter reports its workers running (a short scrape timeout: only the gauge matters)."""
    if workers == 0:
        return
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        _, body, _ = tools.http_get(EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "1"})
        if f"\nconnectivity_exporter_probe_workers {workers}.0\n".encode() in body:
            return
        time.sleep(0.2)
    raise BenchError(f"{proc.name}: its {workers} probe workers did not start within {seconds:g}s")


@dataclass
class Contender:
    """One or several servers answering /probe; several split wrk's connections between them, as
    Prometheus' hashmod sharding splits the targets between exporters."""

    name: str
    procs: list[Proc]
    ports: list[int]
    path: str

    def cpu_seconds(self) -> float:
        return sum(proc.cpu_seconds() for proc in self.procs)


def probe_section(loops: list[str], reps: int, seconds: float, warmup: float, workdir: Path) -> dict:
    contenders: list[Contender] = []
    started: list[Proc] = []
    path = f"/probe?target=127.0.0.1:{OPEN_PORT}&module=tcp_connect"
    try:
        for event_loop in loops:
            port = EXPORTER_PORT + len(started)
            proc = tools.start_exporter(exporter_config([]), port, event_loop, workdir)
            started.append(proc)
            contenders.append(Contender(f"connectivity_exporter ({event_loop})", [proc], [port], path))
        # The multi-core deployment for /probe: one exporter per core, targets sharded by Prometheus.
        shards = []
        for _ in range(2):
            port = EXPORTER_PORT + len(started)
            proc = tools.start_exporter(exporter_config([]), port, loops[0], workdir)
            started.append(proc)
            shards.append((proc, port))
        contenders.append(
            Contender(
                f"connectivity_exporter ({loops[0]}), 2 exporters sharded",
                [p for p, _ in shards],
                [port for _, port in shards],
                path,
            )
        )
        binary = tools.blackbox_binary()
        skipped = None
        if binary is None:
            skipped = "prometheus-blackbox-exporter is not installed (apt-get install prometheus-blackbox-exporter)"
            log(f"  SKIP blackbox_exporter: {skipped}")
        else:
            proc = tools.start_blackbox(binary, BLACKBOX_PORT, workdir)
            started.append(proc)
            contenders.append(Contender("blackbox_exporter", [proc], [BLACKBOX_PORT], path))
        workloads = []
        for label, rotate in (
            (f"{PROBE_TARGETS:,} open targets in turn", (OPEN_PORT, PROBE_TARGETS)),
            ("one open target", None),
        ):
            workloads.append(probe_workload(label, rotate, contenders, reps, seconds, warmup))
        return {
            "concurrency": PROBE_CONCURRENCY,
            "seconds": seconds,
            "skipped_blackbox": skipped,
            "workloads": workloads,
        }
    finally:
        for proc in started:
            proc.stop()


def run_wrk_split(contender: Contender, rotate: tuple[int, int] | None, seconds: float) -> dict:
    """wrk with PROBE_CONCURRENCY connections in all, split evenly over the contender's servers."""

    def url(port: int) -> str:
        return f"http://127.0.0.1:{port}{'/' if rotate else contender.path}"

    share = PROBE_CONCURRENCY // len(contender.ports)
    runs: list[dict] = [{}] * len(contender.ports)

    def one(i: int) -> None:
        runs[i] = tools.run_wrk(url(contender.ports[i]), share, seconds, rotate)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(contender.ports))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if not all(runs):
        raise BenchError(f"wrk failed against {contender.name}")
    # Latency percentiles: the worst server's (conservative); throughput and errors: the sum.
    return {
        "requests_per_second": sum(r["requests_per_second"] for r in runs),
        "p50_ms": max(r["p50_ms"] for r in runs),
        "p99_ms": max(r["p99_ms"] for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def probe_workload(
    label: str, rotate: tuple[int, int] | None, contenders: list[Contender], reps: int, seconds: float, warmup: float
) -> dict:
    """wrk at fixed concurrency against each contender in turn. ``rotate``: each request probes the next
    of many distinct targets; None: every request probes the same target."""
    runs: dict[str, list[dict]] = {c.name: [] for c in contenders}
    for contender in contenders:
        run_wrk_split(contender, rotate, warmup)
    for _ in range(reps):  # interleaved, so drift in the machine affects every contender alike
        for contender in contenders:
            cpu_before = contender.cpu_seconds()
            run = run_wrk_split(contender, rotate, seconds)
            run["cpu_us_per_request"] = (contender.cpu_seconds() - cpu_before) / max(run["requests"], 1) * 1e6
            run["probe_success_after"] = True
            for port in contender.ports:
                status, body, _ = tools.http_get(port, contender.path)
                run["probe_success_after"] &= status == 200 and b"\nprobe_success 1" in b"\n" + body
            runs[contender.name].append(run)
    out = {"workload": label, "contenders": {}}
    for contender in contenders:
        rs = runs[contender.name]
        out["contenders"][contender.name] = {
            "requests_per_second": spread([r["requests_per_second"] for r in rs]),
            "p50_ms": spread([r["p50_ms"] for r in rs]),
            "p99_ms": spread([r["p99_ms"] for r in rs]),
            "cpu_us_per_request": spread([r["cpu_us_per_request"] for r in rs]),
            "errors": sum(r["errors"] for r in rs),
            "all_succeeded": all(r["probe_success_after"] for r in rs),
            "peak_rss_mb": sum(proc.memory_mb()["peak_rss_mb"] for proc in contender.procs),
        }
        c = out["contenders"][contender.name]
        log(
            f"  /probe {label}, {contender.name}: {c['requests_per_second']['median']:,.0f} req/s, "
            f"p99 {c['p99_ms']['median']:.1f} ms, {c['cpu_us_per_request']['median']:.0f} µs CPU/request"
        )
    return out


def kernel_rtt_truth(loops: list[str], reps: int, targets: int) -> dict:
    out = {}
    for event_loop in loops:
        done = subprocess.run(
            [
                sys.executable,
                str(tools.BENCH / "timing_truth.py"),
                "--port",
                str(OPEN_PORT),
                "--targets",
                str(targets),
                "--reps",
                str(reps),
                f"--event-loop={event_loop}",
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=300,
        )
        result = json.loads(done.stdout)
        rs = result["reps"]
        out[event_loop] = {
            "targets": targets,
            "median_excess_us": spread([r["median_diff_us"] for r in rs]),
            "p99_excess_us": spread([r["p99_diff_us"] for r in rs]),
            "median_kernel_rtt_us": spread([r["median_kernel_rtt_us"] for r in rs]),
            "connected": min(r["connected"] for r in rs),
        }
        log(
            f"  timing truth vs tcpi_rtt ({event_loop}): median excess "
            f"{out[event_loop]['median_excess_us']['median']:,.0f} µs"
        )
    return out


def enter_netns() -> str | None:
    """Re-run this benchmark inside a private network namespace; return why not, or exit with its status."""
    if os.environ.get(IN_NETNS):
        return None
    if os.geteuid() != 0:
        return "not root: the dropped-port sections need a private network namespace and nftables"
    for binary in ("unshare", "nft", "ip"):
        if shutil.which(binary) is None:
            return f"{binary} is not installed"
    env = dict(os.environ, **{IN_NETNS: "1"})
    sys.exit(subprocess.run(["unshare", "-n", "--", sys.executable, *sys.argv], env=env).returncode)


def setup_netns() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", "-"], input=FIREWALL, text=True, check=True)


def deadline_section(reps: int, targets: int, timeout: float, workdir: Path, processes: int = 1) -> dict:
    addresses = [f"{target_address(i, block=30)}:{20000 + i % 1000}" for i in range(targets)]
    proc = tools.start_exporter(exporter_config(addresses, offset="0s"), EXPORTER_PORT, "auto", workdir, processes)
    try:
        wait_for_workers(proc, processes - 1)
        late, timed_out = [], targets
        for rep in range(reps + 1):
            status, body, wall = tools.http_get(
                EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": f"{timeout:g}"}
            )
            if status != 200:
                raise BenchError(f"/metrics answered {status}")
            timed_out = min(timed_out, body.count(b'state="timeout"} 1\n'))
            if rep:
                late.append((wall - timeout) * 1000)
    finally:
        proc.stop()
    log(
        f"  deadline: {targets} dropped targets, {processes} process(es), {timeout:g}s timeout: returned "
        f"{statistics.median(late):+.0f} ms after the deadline (worst {max(late):+.0f} ms)"
    )
    return {
        "targets": targets,
        "processes": processes,
        "scrape_timeout_seconds": timeout,
        "ms_past_deadline": spread(late),
        "reported_timeout": timed_out,
    }


def injected_delay_truth(reps: int, targets: int, workdir: Path) -> dict:
    """Connects whose first SYN the firewall drops take one initial RTO (~1 s, with the kernel timer
    wheel's slack of tens of ms). The truth for each target is its handshake as captured on the
    wire (first SYN -> SYN-ACK, tcpdump on lo); the exporter's figure comes from a /metrics scrape."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        raise BenchError("tcpdump is not installed (apt-get install tcpdump)")
    addresses = [target_address(i, block=50) for i in range(targets)]
    proc = tools.start_exporter(
        exporter_config([f"{a}:{DELAYED_PORT}" for a in addresses], max_concurrency=targets + 24),
        EXPORTER_PORT,
        "auto",
        workdir,
    )
    pattern = re.compile(rb'^probe_tcp_connect_duration_seconds\{target="([0-9.]+):\d+"[^}]*\} (\S+)$', re.M)
    medians, p99s, truths, matched = [], [], [], []
    try:
        for rep in range(reps):
            time.sleep(1.0)  # the first-SYN set forgets this rep's ports before the next one
            capture_file = workdir / f"handshakes-{rep}.pcap"
            capture = Proc(
                "tcpdump",
                [
                    tcpdump,
                    "-i",
                    "lo",
                    "-n",
                    "-U",
                    "-B",
                    "65536",
                    "-s",
                    "96",
                    "-w",
                    str(capture_file),
                    f"tcp port {DELAYED_PORT} and tcp[tcpflags] & tcp-syn != 0",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            if "listening" not in capture.popen.stderr.readline():
                raise BenchError("tcpdump did not start")
            try:
                status, body, _ = tools.http_get(
                    EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "10"}
                )
            finally:
                time.sleep(1.5)  # tcpdump on a busy core lags behind its buffer; let it catch up
                capture.stop()
            wire = pcap.handshake_seconds(str(capture_file), DELAYED_PORT)
            excess = [
                (float(value) - wire[address.decode()]) * 1e6
                for address, value in pattern.findall(body)
                if address.decode() in wire
            ]
            matched.append(len(excess))
            if excess:
                medians.append(statistics.median(excess))
                p99s.append(percentile(excess, 99))
                truths.append(statistics.median(wire.values()))
    finally:
        proc.stop()
    if not medians:
        raise BenchError("no handshake through the first-SYN-drop rule was captured")
    log(
        f"  timing truth vs injected ~{statistics.median(truths):.3f}s delay (wire): median excess "
        f"{statistics.median(medians):,.0f} µs"
    )
    return {
        "targets": targets,
        "median_wire_seconds": spread(truths),
        "matched": min(matched),
        "median_excess_us": spread(medians),
        "p99_excess_us": spread(p99s),
    }


# --- output -------------------------------------------------------------------------------------------


def fmt(stat: dict, scale: float = 1.0, digits: int = 0) -> str:
    return f"{stat['median'] * scale:,.{digits}f} ({stat['min'] * scale:,.{digits}f}–{stat['max'] * scale:,.{digits}f})"


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}, "
        f"uvloop {m['uvloop']}, {m['blackbox']}, {m['wrk']}. {report['date']}"
        f"{' (quick run)' if report['quick'] else ''}. Figures: median (min–max) of {report['reps']} runs.",
        "",
        "| Measure | Result | Goal |",
        "|---|---|---|",
    ]
    raw = report["raw_limit"]
    lines.append(
        f"| Raw limit: loopback connects/s, one at a time, {raw['tool']} | "
        f"{fmt(raw['connects_per_second'])} | (ceiling) |"
    )
    for row in report["scrape"]:
        goal = "≥ 8,000 probes/s, ≤ 100 MB" if row["targets"] == 10000 else ""
        scraping = row["peak_rss_scraping_mb"]
        processes = row.get("processes", 1)
        setup = row["event_loop"] + (f", {processes} processes" if processes > 1 else "")
        workers = f" + workers {row['workers_peak_rss_mb']:.0f} MB" if processes > 1 else ""
        lines.append(
            f"| Scrape of {row['targets']:,} targets ({setup}): probes/s · wall s · CPU s · "
            f"peak RSS (config load · scraping) | {fmt(row['probes_per_second'])} · "
            f"{fmt(row['wall_seconds'], digits=3)} · {row['cpu_seconds']['median']:.2f} · "
            f"{row['peak_rss_mb']:.0f} MB ({row['peak_rss_at_config_load_mb']:.0f} · "
            f"{'?' if scraping is None else format(scraping, '.0f')}){workers}"
            f"{'' if not row['misclassified'] else ' · ' + str(row['misclassified']) + ' WRONG'} | {goal} |"
        )
    probe = report["probe"]
    for workload in probe["workloads"]:
        contenders = workload["contenders"]
        for name, c in contenders.items():
            lines.append(
                f"| `/probe`, {workload['workload']}, concurrency {probe['concurrency']}, {name}: "
                f"req/s · p50 · p99 · CPU/request | {fmt(c['requests_per_second'])} · "
                f"{c['p50_ms']['median']:.1f} ms · {c['p99_ms']['median']:.1f} ms · "
                f"{c['cpu_us_per_request']['median']:.0f} µs"
                f"{'' if c['all_succeeded'] and not c['errors'] else ' · ERRORS'} | |"
            )
        blackbox = contenders.get("blackbox_exporter")
        for name, c in contenders.items():
            if blackbox is not None and name != "blackbox_exporter":
                ratio = c["requests_per_second"]["median"] / blackbox["requests_per_second"]["median"]
                p99 = c["p99_ms"]["median"] / blackbox["p99_ms"]["median"]
                cpu = blackbox["cpu_us_per_request"]["median"] / c["cpu_us_per_request"]["median"]
                lines.append(
                    f"| **`/probe`, {workload['workload']}: {name} ÷ blackbox_exporter**: throughput · "
                    f"p99 · CPU efficiency | **{ratio:.2f}×** · {p99:.2f}× · {cpu:.2f}× | ≥ 2.0× · ≤ 1.0× · |"
                )
    for d in report.get("deadline", []):
        processes = f", {d['processes']} processes" if d.get("processes", 1) > 1 else ""
        lines.append(
            f"| Deadline: {d['targets']:,} dropped targets{processes}, {d['scrape_timeout_seconds']:g} s scrape timeout: "
            f"ms past the deadline | {fmt(d['ms_past_deadline'])} (all timeout: "
            f"{d['reported_timeout'] == d['targets']}) | ≤ +100 ms |"
        )
    for event_loop, t in report["timing_truth_kernel_rtt"].items():
        lines.append(
            f"| Timing truth: reported − kernel `tcpi_rtt`, {t['targets']:,} concurrent probes "
            f"({event_loop}): median · p99 | {fmt(t['median_excess_us'])} µs · "
            f"{t['p99_excess_us']['median']:,.0f} µs | median ≤ 1,000 µs |"
        )
    if "timing_truth_injected" in report:
        t = report["timing_truth_injected"]
        lines.append(
            f"| Timing truth: reported − handshake on the wire, first SYN dropped (~"
            f"{t['median_wire_seconds']['median'] * 1000:,.0f} ms), {t['targets']:,} concurrent probes: "
            f"median · p99 | {fmt(t['median_excess_us'])} µs · {t['p99_excess_us']['median']:,.0f} µs "
            f"({t['matched']:,} matched) | |"
        )
    for section, reason in report["skipped"].items():
        lines.append(f"| {section} | skipped: {reason} | |")
    return "\n".join(lines)


def machine() -> dict:
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        import uvloop

        uv = uvloop.__version__
    except ImportError:
        uv = "not installed"
    binary = tools.blackbox_binary()
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "uvloop": uv,
        "blackbox": tools.version_of([binary, "--version"]).split(" (")[0] if binary else "none",
        "wrk": tools.version_of(["wrk", "--version"]).split(" [")[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="fewer, shorter runs (about 2.5 minutes on 2 cores; the full run about 8)"
    )
    parser.add_argument("--json", type=Path, default=RESULTS / "latest.json", help="where to write the results")
    parser.add_argument(
        "--sections",
        default="raw,scrape,probe,deadline,truth",
        help="comma-separated subset of raw,scrape,probe,deadline,truth",
    )
    args = parser.parse_args()
    netns_skip = enter_netns()
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (apt-get install wrk)", file=sys.stderr)
        return 2
    sections = set(args.sections.split(","))
    reps = 2 if args.quick else 5
    loops = ["uvloop", "asyncio"] if importlib.util.find_spec("uvloop") else ["asyncio"]
    report: dict = {
        "date": datetime.date.today().isoformat(),
        "quick": args.quick,
        "reps": reps,
        "machine": machine(),
        "skipped": {},
    }
    if netns_skip is None:
        setup_netns()
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        acceptors = [tools.start_acceptor(native, port) for port in (OPEN_PORT, DELAYED_PORT)]
        try:
            if "raw" in sections:
                log("raw limit ...")
                report["raw_limit"] = raw_limit(native, reps, 1.0 if args.quick else 2.0)
            if "scrape" in sections:
                log("scrapes ...")
                setups = [(loop, 1, [100, 1000, 10000]) for loop in loops]
                setups.append((loops[0], 2, [1000, 10000]))
                report["scrape"] = scrape_section(setups, reps, workdir)
            if "probe" in sections:
                log("/probe throughput ...")
                report["probe"] = probe_section(
                    loops, 2 if args.quick else 3, 3.0 if args.quick else 10.0, 1.0 if args.quick else 2.0, workdir
                )
            if "truth" in sections:
                log("timing truth ...")
                report["timing_truth_kernel_rtt"] = kernel_rtt_truth(loops, reps, 1000)
            if netns_skip is not None:
                for section in ("deadline", "timing truth with an injected delay"):
                    report["skipped"][section] = netns_skip
                    log(f"  SKIP {section}: {netns_skip}")
            else:
                if "deadline" in sections:
                    log("deadline ...")
                    report["deadline"] = [deadline_section(reps, n, 2.0, workdir) for n in (1000, 10000)]
                    report["deadline"].append(deadline_section(reps, 10000, 2.0, workdir, processes=2))
                if "truth" in sections:
                    report["timing_truth_injected"] = injected_delay_truth(reps, 1000, workdir)
        finally:
            for proc in acceptors:
                proc.stop()
    report.setdefault("raw_limit", None)
    table = (
        markdown(report)
        if all(k in report for k in ("raw_limit", "scrape", "probe", "timing_truth_kernel_rtt")) and report["raw_limit"]
        else ""
    )
    print(table or json.dumps(report, indent=1))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    report["table"] = table
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    log(f"results written to {args.json}")
    return 0


if __name__ == "__main__":
    tools.exit_with(main)
