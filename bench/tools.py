"""Processes the benchmark starts and measures: loopback targets, the exporter, blackbox_exporter, wrk.

Every process is started here, stopped by its own pid in ``stop()``, and bounded in time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
MAX_TARGET_LIFETIME = 1800  # seconds; the acceptors exit by themselves after this


class BenchError(Exception):
    pass


def checkouts(items: list[str]) -> dict[str, Path]:
    """The ``--exporter NAME=CHECKOUT`` arguments (repeatable) by name; this checkout when there are none."""
    found = {}
    for item in items or [f"this checkout={REPO}"]:
        name, _, checkout = item.partition("=")
        found[name] = Path(checkout).resolve()
    return found


def exit_with(main: Callable[[], int]) -> NoReturn:
    """Run a benchmark's ``main`` as the program: its status, or one line and status 1 for a BenchError."""
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"bench: {exc}", file=sys.stderr)
        sys.exit(1)


@dataclass
class NativeTools:
    acceptor: list[str]
    connect_loop: list[str]
    label: str  # says whether the ceiling was measured in C or by the Python stand-in


def build_native(workdir: Path) -> NativeTools:
    """Compile bench/native/*.c with gcc; fall back to bench/fallback.py (labelled) without it."""
    gcc = shutil.which("gcc")
    if gcc is not None:
        built = {}
        for name in ("acceptor", "connect_loop"):
            out = workdir / name
            subprocess.run([gcc, "-O2", "-o", str(out), str(BENCH / "native" / f"{name}.c")], check=True)
            built[name] = [str(out)]
        return NativeTools(built["acceptor"], built["connect_loop"], "C (gcc -O2)")
    python = [sys.executable, str(BENCH / "fallback.py")]
    return NativeTools(python + ["acceptor"], python + ["connect-loop"], "Python stand-in (gcc not found)")


class Proc:
    """A started process with readers for its own CPU time and peak memory."""

    def __init__(self, name: str, argv: list[str], **popen):
        self.name = name
        self.popen = subprocess.Popen(argv, **popen)
        self.pid = self.popen.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time of the process (all its threads), from /proc/PID/stat."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def memory_mb(self) -> dict[str, float]:
        """Current (VmRSS) and peak (VmHWM) resident memory in MB."""
        values = {}
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    values[key] = int(rest.split()[0]) / 1024
        return {"rss_mb": values["VmRSS"], "peak_rss_mb": values["VmHWM"]}

    def children(self) -> list[int]:
        """Pids of the process's direct children (the exporter's probe workers)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [int(pid) for pid in f.read().split()]
        except OSError:
            return []

    def tree_cpu_seconds(self) -> float:
        """CPU time of the process and of its live children."""
        total = self.cpu_seconds()
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                total += (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            except OSError:
                pass
        return total

    def tree_rss_mb(self) -> float:
        """Current resident memory (VmRSS) of the process and its live children, summed."""
        total = self.memory_mb()["rss_mb"]
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
            except (OSError, StopIteration):
                pass
        return total

    def children_peak_memory_mb(self) -> float:
        """Sum of the children's peak resident memory (VmHWM), an upper bound of their simultaneous peak."""
        total = 0.0
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/status") as f:
                    total += next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
            except (OSError, StopIteration):
                pass
        return total

    def reset_peak_memory(self) -> bool:
        """Reset VmHWM to the current RSS (Linux clear_refs "5"), so a later peak is the load's alone."""
        try:
            with open(f"/proc/{self.pid}/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            return False
        return True

    def check_alive(self) -> None:
        if self.popen.poll() is not None:
            raise BenchError(f"{self.name} exited with status {self.popen.returncode}")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start_acceptor(tools: NativeTools, port: int) -> Proc:
    proc = Proc(
        f"acceptor :{port}", tools.acceptor + [str(port), str(MAX_TARGET_LIFETIME)], stdout=subprocess.PIPE, text=True
    )
    if proc.popen.stdout.readline().strip() != "ready":
        proc.stop()
        raise BenchError(f"the loopback acceptor on port {port} did not start")
    return proc


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None, timeout: float = 120.0
) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET to 127.0.0.1:port."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    return status, body, time.perf_counter() - started


def wait_ready(proc: Proc, port: int, path: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        proc.check_alive()
        try:
            if http_get(port, path, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise BenchError(f"{proc.name} did not answer {path} on port {port} within {seconds:g}s")


def start_exporter(
    config_text: str, port: int, event_loop: str, workdir: Path, processes: int = 1, repo: Path | None = None
) -> Proc:
    """The exporter of this checkout, or of ``repo`` (another checkout, e.g. an older commit's worktree)."""
    config = workdir / f"exporter-{port}.yml"
    config.write_text(config_text)
    proc = Proc(
        f"connectivity_exporter ({event_loop})",
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--runtime.event-loop={event_loop}",
            f"--runtime.probe-processes={processes}",
            "--log.level=warn",
        ],
        cwd=repo or REPO,
        env={**os.environ, "PYTHONPATH": str(repo or REPO)},
        stdout=subprocess.DEVNULL,
    )
    wait_ready(proc, port, "/-/ready", seconds=120.0)
    return proc


BLACKBOX_BINARY = "/usr/bin/prometheus-blackbox-exporter"
BLACKBOX_CONFIG = """modules:
  tcp_connect:
    prober: tcp
    timeout: 5s
"""


def blackbox_binary() -> str | None:
    return shutil.which("prometheus-blackbox-exporter") or (
        BLACKBOX_BINARY if os.access(BLACKBOX_BINARY, os.X_OK) else None
    )


def start_blackbox(binary: str, port: int, workdir: Path) -> Proc:
    config = workdir / "blackbox.yml"
    config.write_text(BLACKBOX_CONFIG)
    proc = Proc(
        "blackbox_exporter",
        [binary, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--log.level=error"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_ready(proc, port, "/-/healthy")
    return proc


def version_of(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (out.stdout + out.stderr).strip().splitlines()
    return text[0] if text else "unknown"


def run_wrk(url: str, connections: int, seconds: float, rotate: tuple[int, int] | None = None) -> dict:
    """One wrk run (1 thread: it needs little CPU at these rates); figures in requests/s and ms.
    ``rotate=(port, count)``: each request probes the next of ``count`` distinct loopback targets."""
    extra = ["--", str(rotate[0]), str(rotate[1])] if rotate else []
    out = subprocess.run(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds:g}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "wrk_report.lua"),
            url,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )
    line = next((lab for lab in out.stdout.splitlines() if lab.startswith("WRK_JSON ")), None)
    if line is None:
        raise BenchError(f"wrk produced no summary: {out.stdout[-500:]} {out.stderr[-500:]}")
    raw = json.loads(line[len("WRK_JSON ") :])
    errors = sum(raw[k] for k in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    return {
        "requests_per_second": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p90_ms": raw["p90_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"],
        "errors": errors,
    }


def scratch_dir() -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix="connectivity-bench-")
