"""User-space instructions per scrape probe (issue 25): a measure the machine's load does not move.

    sudo python3 bench/instructions.py [--targets 2000] [--functions 25] [--exporter NAME=CHECKOUT ...]

CPU time per probe on a shared 2-core VM swings by 10-20 % between repetitions, more than most single levers
save. Instructions executed do not: each checkout's in-process scrape (``Exporter.scrape`` of N plain tcp
targets, 4/5 open, 1/5 refused, on uvloop, the reply read to the end) runs under valgrind's callgrind with 1 and
with 4 counted scrapes, after an uncounted run (which compiles and caches what a first run would); the difference
divided by 3 N is what one more probe costs in user space (start-up, imports and config loading cancel out).
Repeated runs of one checkout agree within ~0.5 %. The kernel's share (connect, close) is not counted:
``probe_cost.py`` measures whole CPU and the ratio to C. ``--functions K`` also prints the K C functions (of the
interpreter, libc, uvloop) whose instruction count grew most per probe.

Needs valgrind (Debian package ``valgrind``) and gcc; as root it runs in a private network namespace (loopback only).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools
from run import CLOSED_PORT, OPEN_PORT, enter_netns, exporter_config, log, setup_netns, target_address
from tools import BenchError

SCRAPE = """
import asyncio, sys
from prometheus_client import CollectorRegistry
from exporter.config.loader import parse_config
from exporter.core.selfmetrics import ExporterMetrics
from exporter.probers.connect.resolve import Resolver
from exporter.probing.runner import ProbeRunner
from exporter.service.exporter import Exporter
import uvloop

async def main(scrapes):
    exporter = Exporter(parse_config(sys.stdin.read()), ExporterMetrics(CollectorRegistry()))
    resolver = Resolver(max_workers=1)
    exporter.runner = ProbeRunner(resolver, 512)
    exporter.continuous.start(lambda: exporter.runner)  # as the app does (full collections on its timer)
    for _ in range(1 + scrapes):  # a warm-up scrape, then the counted ones
        reply = await exporter.scrape(60)
        size = 0
        async for chunk in reply:
            size += len(chunk)
        await reply.aclose()
    await exporter.continuous.stop()
    resolver.close()
    print(size)

uvloop.run(main(int(sys.argv[1])))
"""


def callgrind(checkout: Path, config: str, scrapes: int, out: Path) -> int:
    """Total instructions of one run with ``scrapes`` counted scrapes (callgrind's output written to ``out``)."""
    run = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, "-c", SCRAPE, str(scrapes)],
        input=config,
        capture_output=True,
        text=True,
        cwd=checkout,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(checkout)},
        timeout=1800,
    )
    found = re.search(r"Collected : (\d+)", run.stderr)
    if run.returncode or found is None or not run.stdout.strip().isdigit():
        raise BenchError(f"the scrape under callgrind failed in {checkout}: {run.stderr[-600:]}")
    return int(found.group(1))


def functions(path: Path) -> dict[str, int]:
    """Instructions per C function (self cost) in one callgrind output."""
    text = subprocess.run(
        ["callgrind_annotate", "--threshold=100", str(path)], capture_output=True, text=True, check=True
    ).stdout
    counts: dict[str, int] = {}
    for line in text.splitlines():
        found = re.match(r"^\s*([\d,]+) \([^)]*\)\s+(.*)$", line)
        if found and "PROGRAM TOTALS" not in line:
            name = re.sub(r"\s*\[.*\]$", "", found.group(2)).split("/")[-1]
            counts[name] = counts.get(name, 0) + int(found.group(1).replace(",", ""))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", type=int, default=2000)
    parser.add_argument("--functions", type=int, default=0, help="print the K C functions that grew most per probe")
    parser.add_argument("--exporter", action="append", default=[], help="NAME=CHECKOUT (repeatable)")
    args = parser.parse_args()
    for binary in ("valgrind", "callgrind_annotate"):
        if shutil.which(binary) is None:
            raise BenchError(f"{binary} is not installed (Debian package valgrind)")
    if enter_netns() is None:
        setup_netns()
    exporters = tools.checkouts(args.exporter)
    n = args.targets
    config = exporter_config([f"{target_address(i)}:{CLOSED_PORT if i % 5 == 4 else OPEN_PORT}" for i in range(n)])
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        acceptor = tools.start_acceptor(tools.build_native(workdir), OPEN_PORT)
        try:
            for name, checkout in exporters.items():
                log(f"{name}: 1 and 4 scrapes of {n:,} targets under callgrind ...")
                one, four = workdir / f"{len(rows)}-1.out", workdir / f"{len(rows)}-4.out"
                # Run once untimed first: whatever it compiles or caches (bytecode) is not counted in either.
                callgrind(checkout, config, 1, one)
                fewer = callgrind(checkout, config, 1, one)
                per_probe = (callgrind(checkout, config, 4, four) - fewer) / (3 * n)
                rows.append((name, per_probe))
                if args.functions:
                    before, after = functions(one), functions(four)
                    grown = {f: after.get(f, 0) - before.get(f, 0) for f in set(before) | set(after)}
                    for function, count in sorted(grown.items(), key=lambda kv: -kv[1])[: args.functions]:
                        log(f"    {count / (3 * n):9,.0f}  {function[:100]}")
        finally:
            acceptor.stop()
    first = rows[0][1]
    print("| exporter | user-space instructions per probe | vs the first |")
    print("|---|---|---|")
    for name, per_probe in rows:
        print(f"| {name} | {per_probe:,.0f} | {per_probe / first - 1:+.1%} |")
    return 0


if __name__ == "__main__":
    tools.exit_with(main)
