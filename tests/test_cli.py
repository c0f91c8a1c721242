"""The command line as operators run it: flags, exit codes, log formats, several listen addresses."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from tests.helpers.exporter_process import REPO, free_port, http, start_exporter


def run_exporter(*args: str, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "exporter", *args], cwd=REPO, capture_output=True, text=True, timeout=timeout
    )


def test_json_logs_have_one_debug_line_per_failed_probe(config_file, closed_port):
    port = free_port()
    process = start_exporter(
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.format=json",
        "--log.level=debug",
    )
    try:
        status, _, _ = http("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        process.wait_for_log('"msg": "probe failed"')
    finally:
        process.stop()
    records = [json.loads(line) for line in process.lines]  # every line is one JSON object
    failed = [r for r in records if r["msg"] == "probe failed"]
    assert len(failed) == 1  # the open target is not logged
    assert failed[0]["level"] == "debug"
    assert failed[0]["target"] == f"127.0.0.1:{closed_port}"
    assert failed[0]["module"] == "tcp_connect"
    assert failed[0]["state"] == "refused"
    assert "ECONNREFUSED" in failed[0]["detail"]
    assert {"ts", "level", "logger", "msg"} <= set(records[0])
    assert any(r["msg"] == "listening" and r["address"] == f"127.0.0.1:{port}" for r in records)


def test_logfmt_at_info_logs_no_probe_lines(config_file):
    port = free_port()
    process = start_exporter(f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}")
    try:
        assert http("GET", f"http://127.0.0.1:{port}/metrics")[0] == 200
    finally:
        process.stop()
    assert process.proc.returncode == 0
    assert "probe failed" not in process.log
    assert f"level=info logger=exporter msg=listening address=127.0.0.1:{port} tls=False" in process.log
    assert "msg=stopped exit_code=0" in process.log
    for line in process.lines:
        assert line.startswith("ts=") and " level=" in line


def test_several_listen_addresses_ipv4_and_ipv6(config_file):
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    port4, port6 = free_port(), free_port("::1")
    process = start_exporter(
        f"--config.file={config_file}",
        f"--web.listen-address=127.0.0.1:{port4}",
        f"--web.listen-address=[::1]:{port6}",
        listens=2,
    )
    try:
        assert http("GET", f"http://127.0.0.1:{port4}/-/healthy")[:2] == (200, "Healthy\n")
        assert http("GET", f"http://[::1]:{port6}/-/healthy")[:2] == (200, "Healthy\n")
    finally:
        process.stop()


def test_a_busy_listen_address_exits_1_with_one_line(config_file):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        done = run_exporter(f"--config.file={config_file}", f"--web.listen-address=127.0.0.1:{port}")
    assert done.returncode == 1
    assert f'msg="cannot listen on 127.0.0.1:{port}: Address already in use"' in done.stderr


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["--web.listen-address=127.0.0.1"], 2, "--web.listen-address '127.0.0.1': expected HOST:PORT"),
        (["--web.listen-address=:0"], 2, "--web.listen-address ':0': expected HOST:PORT"),
        (["--log.level=loud"], 2, "argument --log.level: invalid choice: 'loud'"),
        (["--log.format=xml"], 2, "argument --log.format: invalid choice: 'xml'"),
        (["--web.shutdown-timeout=5"], 2, "invalid duration '5'"),
    ],
)
def test_usage_errors_exit_2(config_file, args, code, message):
    done = run_exporter(f"--config.file={config_file}", *args)
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr


def test_config_errors_exit_1_one_line_each(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("modules: {m: {prober: tcp, timeout: 5}}\nextra: 1\n")
    done = run_exporter(f"--config.file={bad}")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"{bad}: extra: unknown key (valid keys: global, modules, targets, probe_access)",
        f"{bad}: modules.m.timeout: expected a duration such as 250ms, 5s or 1m, got 5 (durations need a unit)",
    ]
    missing = run_exporter(f"--config.file={tmp_path}/nope.yml")
    assert (missing.returncode, missing.stderr) == (
        1,
        f"{tmp_path}/nope.yml: cannot read the config file: No such file or directory\n",
    )


def test_config_check(config_file):
    done = run_exporter(f"--config.file={config_file}", "--config.check")
    assert (done.returncode, done.stdout) == (0, "config OK\n")
