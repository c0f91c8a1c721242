"""`--config.check` and start-up on a bad config, through the real command line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INVALID = ROOT / "tests" / "configs" / "invalid"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], capture_output=True, text=True, timeout=30, cwd=ROOT
    )


def test_config_check_ok():
    done = run("--config.file=config.example.yml", "--config.check")
    assert (done.returncode, done.stdout) == (0, "config OK\n")


def test_config_check_prints_every_error_without_traceback():
    path = INVALID / "many_errors.yml"
    done = run(f"--config.file={path}", "--config.check")
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert lines == [
        line.removeprefix("# expect: ").replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith("# expect: ")
    ]
    assert "Traceback" not in done.stderr


def test_start_with_bad_config_exits_1_with_the_errors():
    path = INVALID / "unknown_module_reference.yml"
    done = run(f"--config.file={path}", "--web.listen-address=127.0.0.1:0")
    assert done.returncode == 1
    assert f"{path}: targets[1].module: unknown module 'tcp' (defined: tcp_connect)" in done.stderr
    assert "Traceback" not in done.stderr


def test_missing_default_config_file_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "--config.check"],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert done.stderr == "config.yml: cannot read the config file: No such file or directory\n"


def test_bad_listen_address_is_a_usage_error():
    done = run("--config.file=config.example.yml", "--web.listen-address=nowhere")
    assert done.returncode == 2
    assert done.stderr.strip().endswith("--web.listen-address 'nowhere': expected HOST:PORT, :PORT or [IPv6]:PORT")
