"""The diagnosis needs no privileges: ``check`` run as an unprivileged user with no capabilities at
all (as the Docker image runs: uid 65532), inside the client namespace of the routed test network,
still reads the ICMP errors with their senders and reaches the right verdicts."""

from __future__ import annotations

import json
import os
import tempfile

import pytest

from tests.helpers.topology import R2_4, R2_6, SERVER4, SERVER6, Topology, built_topology, in_client
from tests.helpers.unprivileged import UID, Runtime

pytestmark = pytest.mark.netns
FIREWALL = """table inet pd {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 8103 reject with icmpx type admin-prohibited
  }
}
"""
SERVER_FIREWALL = """table inet pd {
  chain input {
    type filter hook input priority 0;
    tcp dport 8106 drop
  }
}
"""


@pytest.fixture(scope="module")
def network():
    with built_topology("u", {"r2": FIREWALL, "server": SERVER_FIREWALL}) as topology:
        yield topology


@pytest.fixture(scope="module")
def readable_config():
    directory = tempfile.mkdtemp(prefix="pd-unpriv-")  # not tmp_path: pytest makes its base mode 700
    os.chmod(directory, 0o755)
    path = os.path.join(directory, "config.yml")
    with open(path, "w") as handle:
        handle.write("modules:\n  diag: {prober: tcp, timeout: 2s, tcp: {diagnose: on_failure}}\n")
    os.chmod(path, 0o644)
    yield path
    os.unlink(path)
    os.rmdir(directory)


def unprivileged(network: Topology, runtime: Runtime, *argv: str):
    who = in_client(
        network,
        "-c",
        "import os; print(os.geteuid(), open('/proc/self/status').read().split('CapEff:')[1].split()[0])",
        runtime=runtime,
    )
    assert who.returncode == 0, who.stderr
    assert who.stdout.split() == [str(UID), "0000000000000000"], who.stdout  # no capability at all
    return in_client(network, *argv, runtime=runtime)


@pytest.mark.parametrize(
    "target, state, verdict, blocked_by",
    [
        (f"{SERVER4}:8103", "unreachable", "network_rejected", R2_4),
        (f"[{SERVER6}]:8103", "unreachable", "network_rejected", R2_6),
        (f"{SERVER4}:8106", "timeout", "dropped_at_last_hop", R2_4),
        (f"[{SERVER6}]:8106", "timeout", "dropped_at_last_hop", R2_6),
    ],
)
def test_check_diagnoses_without_privileges(
    network, readable_config, unprivileged_runtime, target, state, verdict, blocked_by
):
    done = unprivileged(
        network,
        unprivileged_runtime,
        *("-m", "exporter", "check", "--json", "--config.file", readable_config, "--module", "diag", target),
    )
    # Exit 1 is "the probe failed" only with the failed probe's JSON: not a crash, not an unreadable module.
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    result = json.loads(done.stdout)
    assert (result["target"], result["success"], result["state"]) == (target, False, state), done.stdout
    assert (result["path"]["verdict"], result["path"]["blocked_by"]) == (verdict, blocked_by), result["path"]
    assert result["path"]["hops"][0]["reply"] == "time_exceeded"  # TTL-limited SYNs and their ICMP answers
    if verdict == "network_rejected":
        assert (result["icmp"]["by"], result["icmp"]["sender"]) == ("network", blocked_by)
    else:
        assert result["icmp"] is None  # a drop sends nothing back
