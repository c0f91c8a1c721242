"""Config loading and /metrics compression for 10,000 targets: the numbers behind two choices.

    python3 bench/config_and_gzip.py [--reps 5] [--json PATH]

1. YAML: exporter/yamlload.py (objects built from libyaml's event stream) against the
   alternative it would be replaced by, libyaml's ``yaml.CSafeLoader`` with a strict constructor
   (duplicate keys rejected, merge keys per the YAML spec). Each load runs in a fresh process:
   wall and CPU time of the load, and the resident memory the process keeps afterwards (the
   node tree is freed, but the interpreter does not give all of it back to the system).
2. gzip: one real 10,000-target /metrics reply (an exporter subprocess on loopback, every
   target a closed loopback port), compressed at each zlib level in this process: bytes and CPU.
   Then the exporter itself answers with ``Accept-Encoding: gzip``: its CPU per scrape, against
   the same scrape uncompressed.

Only loopback is contacted. Not part of the test suite; results in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import tools
from run import exporter_config, machine, spread, target_address

TARGETS = 10_000
EXPORTER_PORT = 19817
CLOSED_PORT = 18001  # nothing listens here: every probe is a fast, real "refused"

# Run in a fresh interpreter per measurement: argv[1] is the loader, stdin the YAML text.
_LOAD_ONE = r'''
import gc, json, os, sys, time
sys.path.insert(0, sys.argv[2])
import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, SequenceNode
text = sys.stdin.read()

class StrictCSafeLoader(yaml.CSafeLoader):
    """libyaml's parser and PyYAML's node tree, with duplicate keys rejected and merge keys per
    https://yaml.org/type/merge.html (explicit keys win, then earlier merged mappings)."""
    def construct_mapping(self, node, deep=False):
        merged, explicit = {}, {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        raise ConstructorError(None, None, "a merge key needs mappings", key_node.start_mark)
                    for key, value in self.construct_mapping(source, deep=True).items():
                        merged.setdefault(key, value)
                continue
            key = self.construct_object(key_node, deep=deep)
            if key in explicit:
                raise ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            explicit[key] = self.construct_object(value_node, deep=deep)
        merged.update(explicit)
        return merged

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

if sys.argv[1] == "yamlload":
    from exporter.core.yamlload import load
else:
    def load(text):
        return yaml.load(text, Loader=StrictCSafeLoader)
before = rss_mb()
wall, cpu = time.perf_counter(), time.process_time()
data = load(text)
wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
gc.collect()
assert len(data["targets"]) == int(sys.argv[3])
print(json.dumps({"wall_seconds": wall, "cpu_seconds": cpu, "rss_kept_mb": rss_mb() - before}))
'''


def yaml_section(reps: int) -> dict:
    text = exporter_config([f"{target_address(i)}:{CLOSED_PORT}" for i in range(TARGETS)])
    runs: dict[str, list[dict]] = {"yamlload": [], "strict CSafeLoader": []}
    for _ in range(reps):
        for loader in runs:  # interleaved, so a busy moment hits both
            out = subprocess.run(
                [sys.executable, "-c", _LOAD_ONE, loader, str(tools.REPO), str(TARGETS)],
                input=text,
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            runs[loader].append(json.loads(out))
    return {
        loader: {key: spread([run[key] for run in values]) for key in values[0]} for loader, values in runs.items()
    } | {"config_bytes": len(text.encode())}


def gzip_section(reps: int, workdir: Path) -> dict:
    targets = [f"{target_address(i)}:{CLOSED_PORT}" for i in range(TARGETS)]
    proc = tools.start_exporter(exporter_config(targets), EXPORTER_PORT, "asyncio", workdir)
    timeout = {"X-Prometheus-Scrape-Timeout-Seconds": "60"}
    try:
        status, body, _ = tools.http_get(EXPORTER_PORT, "/metrics", timeout)
        if status != 200 or body.count(b"probe_success{") != TARGETS:
            raise tools.BenchError(f"/metrics answered {status} with an unexpected body")
        levels = {}
        for level in range(1, 10):
            cpus, sizes = [], []
            for _ in range(reps):
                compressor = zlib.compressobj(level, zlib.DEFLATED, 31)
                started = time.process_time()
                size = len(compressor.compress(body)) + len(compressor.flush())
                cpus.append(time.process_time() - started)
                sizes.append(size)
            levels[level] = {"bytes": sizes[0], "cpu_seconds": spread(cpus)}
        scrapes: dict[str, list] = {"identity": [], "gzip": []}
        sizes: dict[str, int] = {}
        for _ in range(reps):
            for coding in scrapes:
                cpu_before = proc.cpu_seconds()
                status, reply, wall = tools.http_get(EXPORTER_PORT, "/metrics", timeout | {"Accept-Encoding": coding})
                scrapes[coding].append(proc.cpu_seconds() - cpu_before)
                sizes[coding] = len(reply)
        return {
            "body_bytes": len(body),
            "levels": levels,
            "exporter": {
                coding: {"reply_bytes": sizes[coding], "cpu_seconds": spread(cpus)} for coding, cpus in scrapes.items()
            },
        }
    finally:
        proc.stop()


def markdown(report: dict) -> str:
    y = report["yaml"]
    lines = [
        f"Machine: {report['machine']['cpu']}, {report['machine']['cores']} cores, Python "
        f"{report['machine']['python']}. {report['date']}. Median (min–max) of {report['reps']} runs.",
        "",
        f"YAML, {TARGETS:,} targets ({y['config_bytes'] / 1e6:.1f} MB), a fresh process per load:",
        "",
        "| loader | wall s | CPU s | RSS kept after the load |",
        "|---|---|---|---|",
    ]
    for loader in ("yamlload", "strict CSafeLoader"):
        row = y[loader]
        lines.append(
            f"| {loader} | {_fmt(row['wall_seconds'], 2)} | {_fmt(row['cpu_seconds'], 2)} | "
            f"{_fmt(row['rss_kept_mb'], 0)} MB |"
        )
    g = report["gzip"]
    lines += [
        "",
        f"gzip of one {TARGETS:,}-target /metrics reply ({g['body_bytes'] / 1e6:.1f} MB):",
        "",
        "| level | bytes | ratio | CPU ms |",
        "|---|---|---|---|",
    ]
    for level, row in g["levels"].items():
        lines.append(
            f"| {level} | {row['bytes']:,} | {g['body_bytes'] / row['bytes']:.0f}× | "
            f"{_fmt(row['cpu_seconds'], 0, 1000)} |"
        )
    lines += ["", "| exporter, whole scrape | reply bytes | exporter CPU s |", "|---|---|---|"]
    for coding, row in g["exporter"].items():
        lines.append(f"| Accept-Encoding: {coding} | {row['reply_bytes']:,} | {_fmt(row['cpu_seconds'], 2)} |")
    return "\n".join(lines)


def _fmt(stat: dict, digits: int, scale: float = 1.0) -> str:
    return f"{stat['median'] * scale:,.{digits}f} ({stat['min'] * scale:,.{digits}f}–{stat['max'] * scale:,.{digits}f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=5, help="runs per measurement (default 5; about a minute)")
    parser.add_argument("--json", type=Path, default=tools.BENCH / "results" / "config_and_gzip-latest.json")
    args = parser.parse_args()
    report = {"date": datetime.date.today().isoformat(), "reps": args.reps, "machine": machine()}
    report["yaml"] = yaml_section(args.reps)
    with tools.scratch_dir() as scratch:
        report["gzip"] = gzip_section(args.reps, Path(scratch))
    report["table"] = markdown(report)
    print(report["table"])
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
