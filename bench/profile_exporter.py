"""Profile the exporter under the benchmark's loads with pyinstrument (pip install pyinstrument).

    python3 bench/profile_exporter.py scrape [--targets 10000] [--scrapes 3]
    python3 bench/profile_exporter.py probe  [--seconds 10]

Runs the exporter as a subprocess under ``python -m pyinstrument`` on loopback targets, applies
the load, stops the exporter with SIGTERM and prints pyinstrument's text report (also written to
bench/results/profile-<load>.txt).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
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
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"profile-{args.load}.txt"
    with tools.scratch_dir() as scratch:
        workdir = Path(scratch)
        native = tools.build_native(workdir)
        acceptor = tools.start_acceptor(native, OPEN_PORT)
        targets = (
            [f"{target_address(i)}:{CLOSED_PORT if i % 5 == 4 else OPEN_PORT}" for i in range(args.targets)]
            if args.load == "scrape"
            else []
        )
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


if __name__ == "__main__":
    sys.exit(main())
