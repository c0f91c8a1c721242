"""The exporter as a real subprocess (``python -m exporter``): real flags, signals and sockets."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
START_TIMEOUT = 15.0


def free_port(host: str = "127.0.0.1") -> int:
    """A loopback port nothing listens on right now (bound once, then released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


class ExporterProcess:
    """``python -m exporter ARGS``, its stderr collected line by line in the background."""

    def __init__(self, *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None):
        self.args = args
        environment = {**os.environ, "PYTHONPATH": str(REPO), **(env or {})}
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "exporter", *args],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=environment,
        )
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._changed:
                self.lines.append(line.rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def log(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    def wait_for_log(self, text: str, count: int = 1, timeout: float = START_TIMEOUT) -> None:
        """Wait until ``text`` appears in ``count`` log lines; fail if the process exits first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while sum(text in line for line in self.lines) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no {count}x {text!r} in the log within {timeout}s:\n{self.log_unlocked()}")
                if self.proc.poll() is not None and not self._reader.is_alive():
                    raise AssertionError(
                        f"the exporter exited ({self.proc.returncode}) before logging {text!r}:\n{self.log_unlocked()}"
                    )
                self._changed.wait(min(remaining, 0.1))

    def log_unlocked(self) -> str:
        return "\n".join(self.lines)

    def signal(self, signum: int = signal.SIGTERM) -> None:
        self.proc.send_signal(signum)

    def wait(self, timeout: float = 20.0) -> int:
        code = self.proc.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._reader.join(5)
        if self.proc.stdout:
            self.proc.stdout.close()


def start_exporter(*args: str, listens: int = 1, **kwargs) -> ExporterProcess:
    process = ExporterProcess(*args, **kwargs)
    try:
        process.wait_for_log("msg=listening" if "--log.format=json" not in args else '"msg": "listening"', listens)
    except BaseException:
        process.stop()
        raise
    return process


def http(
    method: str, url: str, data: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10.0
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers) of one plain-HTTP request with urllib; HTTP errors are answers, not exceptions."""
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)
