"""Graceful shutdown: SIGTERM stops accepting, lets an in-flight scrape finish within a bounded grace
period, and exits 0. The scrape is kept in flight by a real firewall rule inside a private netns."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.exporter_process import REPO

pytestmark = pytest.mark.netns


def run_scenario(grace: str, probe_timeout: str) -> dict:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace with nftables rules")
    for binary in ("unshare", "nft", "ip"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (packages util-linux, nftables, iproute2)")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.scenarios.shutdown", grace, probe_timeout],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    if done.returncode != 0 and "unshare failed" in done.stderr:
        pytest.skip(f"cannot create a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_sigterm_lets_an_in_flight_probe_finish_then_exits_0():
    outcome = run_scenario(grace="10s", probe_timeout="1500ms")
    assert outcome["in_flight"], outcome["log"]
    # Stopped accepting at once: a new connection is refused while the probe is still running.
    assert outcome["late_connect_errno"] == errno.ECONNREFUSED
    # The in-flight probe got its full answer: the dropped port classified as a timeout.
    assert outcome["reply"]["status"] == 200, outcome
    assert 'probe_tcp_state{state="timeout"} 1' in outcome["reply"]["body"]
    assert outcome["exit_code"] == 0
    # The probe's remainder (1.5 s), not the 10 s grace period; generous for a loaded machine.
    assert outcome["reply_after"] < 1.5 + 5
    assert outcome["exit_after"] < 1.5 + 6
    assert 'msg="shutting down: no new connections, in-flight scrapes get up to 10s"' in outcome["log"]


def test_the_grace_period_bounds_the_wait_for_a_slow_scrape():
    outcome = run_scenario(grace="300ms", probe_timeout="20s")
    assert outcome["in_flight"], outcome["log"]
    assert outcome["exit_code"] == 0
    assert outcome["exit_after"] < 0.3 + 8  # the 300 ms grace period, far below the probe's 20 s
    assert "status" not in outcome["reply"]  # the unfinished scrape was cut, not answered with a result
    assert "error" in outcome["reply"]
