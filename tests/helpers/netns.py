"""Run a scenario inside a private network namespace (``unshare -n``) with nftables rules.

The namespace has only ``lo``: nothing a scenario does can reach any other network,
and name resolution fails at once (no resolver is reachable).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def netns_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace and load nftables rules"
    for tool in ("unshare", "nft", "ip"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages util-linux, nftables, iproute2; .ci/run installs them)"
    probe = subprocess.run(["unshare", "-n", "nft", "list", "ruleset"], capture_output=True, text=True, timeout=20)
    if probe.returncode != 0:
        return f"cannot use nftables in a new network namespace here: {probe.stderr.strip()[:200]}"
    return None


def run_in_netns(scenario: str, *args: str, timeout: float = 60, mount_namespace: bool = False) -> dict:
    """Run ``tests/scenarios/firewall.py SCENARIO ARGS`` in a fresh netns; return the JSON it prints.

    ``mount_namespace`` adds a private mount namespace, so a scenario may bind-mount its own
    /etc/resolv.conf without touching the host's.
    """
    reason = netns_unavailable_reason()
    if reason:
        pytest.skip(reason)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    flags = ["-n", "-m"] if mount_namespace else ["-n"]
    done = subprocess.run(
        ["unshare", *flags, sys.executable, str(ROOT / "tests" / "scenarios" / "firewall.py"), scenario, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise AssertionError(f"netns scenario {scenario} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])
