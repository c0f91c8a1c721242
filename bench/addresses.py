"""What ``tcp.probe_addresses: all`` costs: a 10,000-target /metrics scrape where every name has two addresses
(an IPv4 loopback address 127.x.y.z and ::1), probed with ``one`` (today's single connect) and with ``all``.

    python3 bench/addresses.py [--targets N] [--reps N] [--json PATH]

Runs as root inside a private network namespace and mount namespace (``unshare -n -m``): a hosts file bind-mounted
on /etc/hosts holds the names, listeners accept and close on both families. Nothing leaves the namespace's
loopback. Names: NAMES names x (targets / NAMES) ports, so each probe still resolves its name (getaddrinfo, like
any name target) while the hosts file stays small enough that reading it does not swamp the connects.
Prints a markdown table (docs/performance.md, "Every address of a name") and writes JSON with every run.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools
from tools import BenchError

IN_NAMESPACE = "CONNECTIVITY_BENCH_ADDRESSES_NS"
EXPORTER_PORT = 19817
FIRST_PORT = 18100
NAMES = 100
ACCEPTOR_SECONDS = 900  # the listeners exit by themselves after this long (bounded)


def enter_namespace() -> None:
    if os.environ.get(IN_NAMESPACE):
        return
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        raise SystemExit("bench/addresses.py needs root and unshare (a private network and mount namespace)")
    env = dict(os.environ, **{IN_NAMESPACE: "1"})
    sys.exit(subprocess.run(["unshare", "-n", "-m", "--", sys.executable, *sys.argv], env=env).returncode)


def name_address(index: int) -> str:
    return f"127.{1 + index // 62500}.{index // 250 % 250 + 1}.{index % 250 + 1}"


def setup(workdir: Path, ports: int) -> subprocess.Popen[bytes]:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    hosts = workdir / "hosts"
    lines = ["127.0.0.1 localhost", "::1 localhost"]
    for index in range(NAMES):
        lines += [f"{name_address(index)} n{index}.bench.test", f"::1 n{index}.bench.test"]
    hosts.write_text("\n".join(lines) + "\n")
    nsswitch = workdir / "nsswitch.conf"
    nsswitch.write_text("hosts: files\n")  # no DNS server is reachable here: never ask one
    for source, target in ((hosts, "/etc/hosts"), (nsswitch, "/etc/nsswitch.conf")):
        subprocess.run(["mount", "--bind", str(source), target], check=True)
    acceptor = subprocess.Popen(
        [sys.executable, __file__, "--acceptor", str(ports)], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    assert acceptor.stdout is not None
    if acceptor.stdout.readline().strip() != b"ready":
        raise BenchError("the listeners did not start")
    return acceptor


def acceptor(ports: int) -> None:
    """Accept and close on every port, both families, until ACCEPTOR_SECONDS have passed."""
    selector = selectors.DefaultSelector()
    for port in range(FIRST_PORT, FIRST_PORT + ports):
        for family, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::1")):
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind((host, port))
            listener.listen(65535)
            listener.setblocking(False)
            selector.register(listener, selectors.EVENT_READ)
    print("ready", flush=True)
    end = time.monotonic() + ACCEPTOR_SECONDS
    while time.monotonic() < end:
        for key, _ in selector.select(timeout=1.0):
            listener = key.fileobj
            assert isinstance(listener, socket.socket)
            for _ in range(256):  # bounded: drain a burst, then poll the others
                try:
                    connection, _ = listener.accept()
                except BlockingIOError:
                    break
                connection.close()


def config(targets: int, mode: str) -> str:
    ports = targets // NAMES
    lines = [
        f"  - {{target: 'n{index % NAMES}.bench.test:{FIRST_PORT + index // NAMES % ports}', module: m}}"
        for index in range(targets)
    ]
    # `one` as the default (no key): the same config runs on a version without the option, for comparison.
    tcp = "" if mode == "one" else f", tcp: {{probe_addresses: {mode}}}"
    return (
        "global: {max_concurrency: 512, scrape_timeout_offset: 500ms}\n"
        f"modules:\n  m: {{prober: tcp, timeout: 5s{tcp}}}\n"
        "targets:\n" + "\n".join(lines) + "\n"
    )


def measure(targets: int, mode: str, reps: int, workdir: Path) -> dict[str, object]:
    proc = tools.start_exporter(config(targets, mode), EXPORTER_PORT, "auto", workdir)
    try:
        walls, cpus, body = [], [], b""
        for rep in range(reps + 1):  # the first scrape warms up and is not counted
            before = proc.tree_cpu_seconds()
            status, body, wall = tools.http_get(
                EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
            )
            cpu = proc.tree_cpu_seconds() - before
            if status != 200:
                raise BenchError(f"/metrics answered {status}")
            if rep:
                walls.append(wall)
                cpus.append(cpu)
        peak = proc.memory_mb()["peak_rss_mb"]
    finally:
        proc.stop()
    text = body.decode()
    succeeded = text.count("\nprobe_success{") and sum(
        1 for line in text.splitlines() if line.startswith("probe_success{") and line.endswith(" 1")
    )
    connects = targets * (2 if mode == "all" else 1)
    row = {
        "mode": mode,
        "targets": targets,
        "connects": connects,
        "wall_seconds": tools_spread(walls),
        "cpu_seconds": tools_spread(cpus),
        "cpu_us_per_target": 1e6 * sorted(cpus)[len(cpus) // 2] / targets,
        "succeeded": succeeded,
        "body_bytes": len(body),
        "peak_rss_mb": peak,
    }
    print(
        f"  {mode:>3}: wall {row['wall_seconds']['median']:.2f} s, CPU {row['cpu_seconds']['median']:.2f} s, "
        f"{row['cpu_us_per_target']:.0f} µs CPU/target, {succeeded}/{targets} succeeded, body {len(body):,} B",
        file=sys.stderr,
        flush=True,
    )
    return row


def tools_spread(values: list[float]) -> dict[str, object]:
    ordered = sorted(values)
    return {"median": ordered[len(ordered) // 2], "min": ordered[0], "max": ordered[-1], "runs": values}


def markdown(rows: list[dict[str, object]]) -> str:
    lines = [
        "| probe_addresses | targets | connects | scrape wall s (median, min–max) | CPU s | CPU µs/target | "
        "body bytes | peak RSS MB |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        wall, cpu = row["wall_seconds"], row["cpu_seconds"]
        assert isinstance(wall, dict) and isinstance(cpu, dict)
        lines.append(
            f"| {row['mode']} | {row['targets']:,} | {row['connects']:,} | {wall['median']:.2f} "
            f"({wall['min']:.2f}–{wall['max']:.2f}) | {cpu['median']:.2f} | {row['cpu_us_per_target']:.0f} | "
            f"{row['body_bytes']:,} | {row['peak_rss_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--modes", default="one,all,one,all", help="the runs, in order (default: one,all,one,all)")
    parser.add_argument("--acceptor", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.acceptor:
        acceptor(args.acceptor)
        return 0
    if args.targets % NAMES:
        raise SystemExit(f"--targets must be a multiple of {NAMES}")
    enter_namespace()
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        listeners = setup(workdir, args.targets // NAMES)
        try:
            rows = [measure(args.targets, mode, args.reps, workdir) for mode in args.modes.split(",")]
        finally:
            listeners.terminate()
            listeners.wait(timeout=10)
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
