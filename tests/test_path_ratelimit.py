"""ICMP rate limiting and a failing link on the routed test network (client — r1 — r2 — server).

A router that rate-limits its ICMP errors must not make the diagnosis invent a silent hop: with the
server's firewall dropping the port while it is up, the verdict stays ``dropped_at_last_hop`` even
when r2's token bucket is empty at the moment the trace reaches it (emptied by a burst right before).
The server's link going down gives ``host_down`` (r2's ARP / neighbour discovery fails after ~3 s).
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.topology import R2_4, R2_6, SERVER4, SERVER6, built_topology, check_json, in_client

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# Empties r2's ICMP token bucket for us (a burst of UDP datagrams that expire at r2), then diagnoses
# at once, in the same process, so the bucket is still empty when the trace reaches hop 2.
EXHAUST_THEN_DIAGNOSE = """
import asyncio, json, socket, sys
from exporter.pathdiag.icmp import enable_recverr, read_icmp_errors, set_ttl
from exporter.pathdiag.render import path_json
from exporter.pathdiag.trace import diagnose
from tests.helpers.eventually import eventually

address, port = sys.argv[1], int(sys.argv[2])
family = socket.AF_INET6 if ":" in address else socket.AF_INET
burst = []
for n in range(30):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    enable_recverr(sock)
    set_ttl(sock, 2)
    sock.connect((address, 40000 + n))
    sock.send(b"burst")
    burst.append(sock)
# A marker to a closed UDP port of the host itself: its answer (port unreachable, from the host) passes r2
# after r2's answers to the burst (first in, first out on the same links), so once it is here, every answer
# r2 gave the burst is in the error queues.
marker = socket.socket(family, socket.SOCK_DGRAM)
enable_recverr(marker)
marker.connect((address, 40999))
marker.send(b"marker")
eventually(lambda: read_icmp_errors(marker), what="the host's answer to the marker sent after the burst")
answered = sum(1 for sock in burst if read_icmp_errors(sock))
path = path_json(asyncio.run(diagnose(address, port)))
print(json.dumps({"burst_answered": answered, "path": path}))
"""
SERVER_DROPS_8106 = """table inet pd {
  chain input {
    type filter hook input priority 0;
    tcp dport 8106 drop
  }
}
"""


@pytest.fixture(scope="module")
def network():
    with built_topology("r") as topology:
        yield topology


@pytest.mark.parametrize(
    "sysctls, server",
    [
        # per peer: one ICMP error per 2 s after a burst (IPv4 and IPv6)
        (("net.ipv4.icmp_ratelimit=2000", "net.ipv6.icmp.ratelimit=2000"), SERVER4),
        (("net.ipv4.icmp_ratelimit=2000", "net.ipv6.icmp.ratelimit=2000"), SERVER6),
        # the whole router: about one ICMP message per second
        (("net.ipv4.icmp_msgs_per_sec=1", "net.ipv4.icmp_msgs_burst=1"), SERVER4),
    ],
    ids=["per-peer ratelimit 2s, IPv4", "per-peer ratelimit 2s, IPv6", "global 1 msg per s, IPv4"],
)
def test_rate_limited_router_does_not_change_dropped_at_last_hop(network, sysctls, server):
    network.reset()
    network.nft(network.server, SERVER_DROPS_8106)
    network.exec(network.r2, "sysctl", "-qw", *sysctls)
    network.warm_up()
    done = in_client(network, "-c", EXHAUST_THEN_DIAGNOSE, server, "8106")
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout)
    path = outcome["path"]
    if "ratelimit" in sysctls[0] or server == SERVER4:
        # The limit really bites: r2 answered only part of the burst.
        assert outcome["burst_answered"] < 30, outcome
    if "icmp_ratelimit=2000" in sysctls[0]:
        # The trace reached hop 2 right after the burst's answers, well inside r2's 2 s refill: its first SYN there
        # drew nothing, and only the paced retry got r2's answer.
        assert path["hops"][1]["tries"] >= 2 and path["hops"][1]["reply"] == "time_exceeded", path
    assert path["verdict"] == "dropped_at_last_hop", path
    assert path["blocked_by"] == (R2_4 if server == SERVER4 else R2_6)
    assert path["hops_to_host"] == 3
    assert path["packets"] <= 48


def test_server_link_down_is_host_down(network, tmp_path):
    network.reset()
    for ns in (network.r1, network.r2, network.server):  # rate limits are not what this case is about
        network.exec(ns, "sysctl", "-qw", "net.ipv4.icmp_ratelimit=0", "net.ipv6.icmp.ratelimit=0")
    network.warm_up()
    network.exec(network.server, "ip", "link", "set", "s0", "down")
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  diag: {prober: tcp, timeout: 2s, tcp: {diagnose: on_failure}}\n")
    try:
        for target, r2 in ((f"{SERVER4}:8080", R2_4), (f"[{SERVER6}]:8080", R2_6)):
            result = check_json(network, target, str(config))
            path = result["path"]
            assert (path["verdict"], path["blocked_by"]) == ("host_down", r2), path
            assert "the last router before" in path["words"] and "the host is down" in path["words"]
    finally:
        network.reset()
