"""Profile the exporter under the benchmark's loads with pyinstrument (pip install pyinstrument) or py-spy.

    python3 bench/profile_exporter.py scrape [--targets 10000] [--scrapes 3] [--profiler py-spy] [--repo CHECKOUT]
    python3 bench/profile_exporter.py probe  [--seconds 10]

Runs the exporter as a subprocess on loopback targets, applies the load and prints the profile:
- pyinstrument (the default): the exporter runs under ``python -m pyinstrument``, is stopped with SIGTERM and
  pyinstrument's text report is printed (also written to bench/results/profile-<load>.txt);
- py-spy (sampling at 500 Hz, ``--native`` off, idle samples left out): attached to the running exporter for
  the load only (start-up and config load are not in it); prints the functions with the largest share of the
  samples, as the leaf ("self") and anywhere on the stack ("total"), with the raw collapsed stacks in
  bench/results/profile-<load>-pyspy.txt.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools
from run import CLOSED_PORT, EXPORTER_PORT, OPEN_PORT, PROBE_TARGETS, RESULTS, exporter_config, target_address


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("load", choices=["scrape", "probe"])
    parser.add_argument("--targets", type=int, default=10000)
    parser.add_argument("--scrapes", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--event-loop", default="uvloop")
    parser.add_argument("--profiler", choices=["pyinstrument", "py-spy"], default="pyinstrument")
    parser.add_argument("--repo", type=Path, default=tools.REPO, help="the checkout to profile")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.profiler == "py-spy":
        return with_py_spy(args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"profile-{args.load}.txt"
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        acceptor = tools.start_acceptor(native, OPEN_PORT)
        targets = scrape_targets(args)
        config = workdir / "profile.yml"
        config.write_text(exporter_config(targets))
        proc = tools.Proc(
            "exporter under pyinstrument",
            [
                sys.executable,
                "-m",
                "pyinstrument",
                "-r",
                "text",
                "-o",
                str(output),
                "-m",
                "exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{EXPORTER_PORT}",
                f"--runtime.event-loop={args.event_loop}",
                "--log.level=warn",
            ],
            cwd=tools.REPO,
            stdout=subprocess.DEVNULL,
        )
        try:
            tools.wait_ready(proc, EXPORTER_PORT, "/-/ready", seconds=60)
            if args.load == "scrape":
                for _ in range(args.scrapes):
                    status, body, wall = tools.http_get(
                        EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
                    )
                    print(f"scrape: {status}, {wall:.3f} s, {len(body):,} bytes", file=sys.stderr)
            else:
                run = tools.run_wrk(f"http://127.0.0.1:{EXPORTER_PORT}/", 64, args.seconds, (OPEN_PORT, PROBE_TARGETS))
                print(f"probe: {run['requests_per_second']:,.0f} req/s (under the profiler)", file=sys.stderr)
        finally:
            proc.stop()
            acceptor.stop()
    print(output.read_text())
    return 0


def scrape_targets(args: argparse.Namespace) -> list[str]:
    """The scrape load's targets: every fifth on the closed port (refused), the rest open; none for /probe."""
    if args.load != "scrape":
        return []
    return [f"{target_address(i)}:{CLOSED_PORT if i % 5 == 4 else OPEN_PORT}" for i in range(args.targets)]


def with_py_spy(args: argparse.Namespace) -> int:
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = RESULTS / f"profile-{args.load}-pyspy.txt"
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        acceptor = tools.start_acceptor(native, OPEN_PORT)
        targets = scrape_targets(args)
        proc = tools.start_exporter(exporter_config(targets), EXPORTER_PORT, args.event_loop, workdir, repo=args.repo)
        spy = None
        try:
            if args.load == "scrape":  # one scrape before: the first builds what later ones reuse
                tools.http_get(EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"})
            spy = subprocess.Popen(
                [py_spy, "record", "--pid", str(proc.pid), "--rate", "500", "--format", "raw", "-o", str(raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(1.0)  # py-spy attached
            cpu = proc.cpu_seconds()
            if args.load == "scrape":
                for _ in range(args.scrapes):
                    status, body, wall = tools.http_get(
                        EXPORTER_PORT, "/metrics", {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
                    )
                    print(f"scrape: {status}, {wall:.3f} s, {len(body):,} bytes", file=sys.stderr)
                probes = args.targets * args.scrapes
            else:
                run = tools.run_wrk(f"http://127.0.0.1:{EXPORTER_PORT}/", 64, args.seconds, (OPEN_PORT, PROBE_TARGETS))
                print(f"probe: {run['requests_per_second']:,.0f} req/s (under the profiler)", file=sys.stderr)
                probes = run["requests"]
            cpu = proc.cpu_seconds() - cpu
            print(f"{cpu / max(probes, 1) * 1e6:.0f} µs CPU per probe under the profiler", file=sys.stderr)
        finally:
            if spy is not None:
                spy.send_signal(signal.SIGINT)
                spy.wait(timeout=60)
            proc.stop()
            acceptor.stop()
    print(top_shares(raw.read_text(), args.top))
    return 0


def top_shares(collapsed: str, top: int) -> str:
    """The functions with the largest shares of the samples: as the leaf (self) and anywhere on the stack."""
    own: collections.Counter[str] = collections.Counter()
    anywhere: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [
            frame.split(" (")[0] + " (" + frame.split(" (")[-1].split(":")[0].rsplit("/", 1)[-1] + ")"
            for frame in stack.split(";")[1:]
        ]  # the first entry is the process/thread
        if not frames or frames[-1].startswith(("select ", "poll ", "run_forever ", "run ")):
            continue  # idle: waiting for the kernel with nothing to do
        n = int(count)
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            anywhere[frame] += n
    lines = [f"{total} samples (idle left out)", "", "self %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in own.most_common(top)]
    lines += ["", "total %  function"]
    lines += [f"{100 * n / total:6.1f}  {name}" for name, n in anywhere.most_common(top)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
