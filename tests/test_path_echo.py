"""ICMP echo is used only where the system permits unprivileged ping (``net.ipv4.ping_group_range``),
and only to rule out "the host is down" when nothing else could. Runs in a private network namespace
(``unshare -n``: only loopback) whose firewall drops every TCP and UDP probe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.netns, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent

SCENARIO = r"""
set -e
ip link set lo up
nft -f - <<'NFT'
table inet pd {
  chain input {
    type filter hook input priority 0;
    tcp dport 9001 drop
    udp dport 33435-33499 drop
  }
}
NFT
sysctl -qw net.ipv4.ping_group_range="$PING_RANGE"
exec "$PYTHON" -c '
import asyncio, json, socket
from exporter.pathdiag.probes import echo_probe, ping_permitted
from exporter.pathdiag.render import path_json
from exporter.pathdiag.trace import diagnose

async def main():
    echo4 = await echo_probe(socket.AF_INET, "127.0.0.1", 2.0)
    path = path_json(await diagnose("127.0.0.1", 9001))
    print(json.dumps({"permitted": ping_permitted(), "echo4": echo4, "path": path}))
asyncio.run(main())
'
"""


def run(ping_range: str) -> dict:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace (unshare -n) and load nftables rules")
    for tool in ("unshare", "nft"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (util-linux, nftables; .ci/run installs them)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), PING_RANGE=ping_range, PYTHON=sys.executable)
    done = subprocess.run(
        ["unshare", "-n", "sh", "-c", SCENARIO], capture_output=True, text=True, timeout=120, env=env, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_echo_rules_out_host_down_where_ping_is_permitted():
    outcome = run("0 2147483647")
    assert outcome["permitted"] is True and outcome["echo4"] is True
    path = outcome["path"]
    assert path["verdict"] == "unknown"
    assert "host_down" not in path["remaining"] and path["remaining"] == ["dropped_in_network", "dropped_at_last_hop"]
    assert path["host_up"] is True
    assert "ICMP echo: the host replied" in path["notes"]
    assert "the host is down" not in path["words"]


def test_without_ping_permission_host_down_stays_possible():
    outcome = run("1 0")  # the kernel's default: nobody may open an ICMP echo socket
    assert outcome["permitted"] is False and outcome["echo4"] is None
    path = outcome["path"]
    assert path["verdict"] == "unknown"
    assert "host_down" in path["remaining"] and "or the host is down" in path["words"]
    assert path["notes"] == []
    assert path["packets"] <= 48 and path["seconds"] <= 16
