"""Path diagnosis on a real routed network: client — r1 — r2 — server, IPv4 and IPv6.

One case per verdict, each asserted three ways: the ``path`` object of ``check --json`` (verdict and
blocked_by), the ``probe_path_*`` metrics after a scrape of the exporter running in the client
namespace, and the words ``check`` prints. Every case has its own port or address, so all of them
live in one firewall configuration and run concurrently; the routers' ICMP rate limits are lifted
for this matrix (test_path_ratelimit.py puts them back, tighter).
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.helpers.eventually import GaveUp, eventually
from tests.helpers.metrics_text import samples
from tests.helpers.topology import (
    R1_4,
    R1_6,
    R2_4,
    R2_6,
    SERVER4,
    SERVER6,
    ClientExporter,
    Topology,
    check_json,
    check_text,
    topology_unavailable_reason,
)

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# (case, IPv4 target, IPv6 target, verdict, blocked_by v4, blocked_by v6, words check must print)
CASES = [
    (
        "open port",
        f"{SERVER4}:8080",
        f"[{SERVER6}]:8080",
        "reached",
        None,
        None,
        "accepted the connection, 3 hops away; the path is clear",
    ),
    (
        "closed port",
        f"{SERVER4}:8107",
        f"[{SERVER6}]:8107",
        "reached",
        SERVER4,
        SERVER6,
        "itself answered with a TCP reset from its own hop (3 hops away)",
    ),
    (
        "drop in r1's forward chain",
        f"{SERVER4}:8101",
        f"[{SERVER6}]:8101",
        "dropped_in_network",
        R1_4,
        R1_6,
        "Dropped after {by} (hop 1)",
    ),
    (
        "drop in r2's forward chain",
        f"{SERVER4}:8102",
        f"[{SERVER6}]:8102",
        "dropped_at_last_hop",
        R2_4,
        R2_6,
        "the host's own firewall, or its last router {by}, drops it",
    ),
    (
        "ICMP reject at r2",
        f"{SERVER4}:8103",
        f"[{SERVER6}]:8103",
        "network_rejected",
        R2_4,
        R2_6,
        "by {by} (hop 2) — a network firewall, not the host",
    ),
    (
        "ICMP reject at the server",
        f"{SERVER4}:8104",
        f"[{SERVER6}]:8104",
        "host_rejected",
        SERVER4,
        SERVER6,
        "the host's own firewall rejects port 8104, not the network",
    ),
    (
        "TCP-reset reject at r1",
        f"{SERVER4}:8105",
        f"[{SERVER6}]:8105",
        "network_rejected",
        R1_4,
        R1_6,
        "a device at or just after {by} (hop 1) forges resets for port 8105",
    ),
    (
        "server firewall drops while up",
        f"{SERVER4}:8106",
        f"[{SERVER6}]:8106",
        "dropped_at_last_hop",
        R2_4,
        R2_6,
        "is up (3 hops away, it answered a UDP probe)",
    ),
    (
        "server drops everything",
        "10.61.3.3:8108",
        "[fd61:3::3]:8108",
        "unknown",
        None,
        None,
        "Still possible: a network firewall drops the SYN before the host's last hop; or the host's own firewall or "
        "its last router drops the SYN; or the host is down",
    ),
    ("no host at the address", "10.61.3.9:8110", "[fd61:3::9]:8110", "host_down", R2_4, R2_6, "the last router before"),
    (
        "router without a route",
        "10.61.4.2:8109",
        "[fd61:4::2]:8109",
        "no_route",
        R1_4,
        R1_6,
        "that router has no route to",
    ),
]

FIREWALLS = {
    "r1": """table inet pd {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 8101 drop
    tcp dport 8105 reject with tcp reset
  }
}
""",
    "r2": """table inet pd {
  chain forward {
    type filter hook forward priority 0;
    tcp dport 8102 drop
    tcp dport 8103 reject with icmpx type admin-prohibited
  }
}
""",
    "server": """table inet pd {
  chain input {
    type filter hook input priority 0;
    tcp dport 8104 reject with icmpx type admin-prohibited
    tcp dport 8106 drop
    ip daddr 10.61.3.3 drop
    ip6 daddr fd61:3::3 drop
  }
}
""",
}
LISTENER = (
    "import socket, time\n"
    "sock = socket.socket(socket.AF_INET6)\n"
    "sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)\n"
    "sock.bind(('::', 8080))\n"
    "sock.listen(64)\n"
    "print('listening', flush=True)\n"
    "time.sleep(3600)\n"
)


def lift_rate_limits(topology: Topology) -> None:
    for ns in (topology.r1, topology.r2, topology.server):
        topology.exec(
            ns,
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv6.icmp.ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=100000",
            "net.ipv4.icmp_msgs_burst=100000",
        )


def config_file(tmp_path_factory, targets: list[str], extra_global: str = "") -> str:
    path = tmp_path_factory.mktemp("pathcfg") / "config.yml"
    lines = "\n".join(f"  - {{target: '{target}', module: diag}}" for target in targets)
    path.write_text(f"""global: {{max_diagnoses_in_flight: 32{extra_global}}}
modules:
  diag: {{prober: tcp, timeout: 2s, tcp: {{diagnose: on_failure, diagnose_interval: 1h}}}}
targets:
{lines}
""")
    path.chmod(0o644)
    path.parent.chmod(0o755)
    return str(path)


@pytest.fixture(scope="module")
def network():
    reason = topology_unavailable_reason()
    if reason:
        pytest.skip(reason)
    topology = Topology().build()
    listener = None
    try:
        lift_rate_limits(topology)
        topology.exec(topology.server, "ip", "addr", "add", "10.61.3.3/24", "dev", "s0")
        topology.exec(topology.server, "ip", "-6", "addr", "add", "fd61:3::3/64", "dev", "s0", "nodad")
        for role, ruleset in FIREWALLS.items():
            topology.nft(getattr(topology, role), ruleset)
        listener = subprocess.Popen(
            ["ip", "netns", "exec", topology.server, sys.executable, "-c", LISTENER], stdout=subprocess.PIPE, text=True
        )
        assert listener.stdout.readline().strip() == "listening"
        topology.warm_up()
        yield topology
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=20)
        topology.close()


@pytest.fixture(scope="module")
def outcomes(network, tmp_path_factory):
    """Every case through check --json, check (words) and a scrape, all at once."""
    targets = [target for case in CASES for target in (case[1], case[2])]
    config = config_file(tmp_path_factory, targets)
    exporter = ClientExporter(network, config)
    try:
        exporter.get("/metrics")  # the scrape that submits the failures; diagnoses run meanwhile
        with ThreadPoolExecutor(max_workers=2 * len(targets)) as pool:
            json_runs = [pool.submit(check_json, network, target, config) for target in targets]
            text_runs = [pool.submit(check_text, network, target, config) for target in targets]
            as_json = {target: run.result() for target, run in zip(targets, json_runs, strict=False)}
            as_text = {target: run.result() for target, run in zip(targets, text_runs, strict=False)}
        failing = {t for t in targets if as_json[t]["tcp_state"] != "open"}

        def diagnosed(text: str) -> set[str]:
            found = samples(text).items()
            return {dict(labels)["target"] for (name, labels), v in found if name == "probe_path_diagnosis" and v == 1}

        try:  # diagnoses appear on later scrapes; if some never do, the tests name them
            text = eventually(
                lambda: exporter.get("/metrics"),
                until=lambda text: failing <= diagnosed(text),
                what=f"path diagnoses of the {len(failing)} failing targets",
                timeout=120,
                interval=1.0,
            )
        except GaveUp as gave_up:
            text = gave_up.last
        status_page = exporter.get("/")
    finally:
        exporter.close()
    return as_json, as_text, samples(text), status_page


def params():
    for name, v4, v6, verdict, by4, by6, words in CASES:
        yield pytest.param(v4, verdict, by4, words, id=f"{name} (IPv4)")
        yield pytest.param(v6, verdict, by6, words, id=f"{name} (IPv6)")


@pytest.mark.parametrize("target, verdict, blocked_by, words", list(params()))
def test_check_json_gives_the_verdict_and_who_blocked(outcomes, target, verdict, blocked_by, words):
    path = outcomes[0][target]["path"]
    assert path is not None, outcomes[0][target]
    assert (path["verdict"], path["blocked_by"]) == (verdict, blocked_by), path
    assert {"verdict", "blocked_by", "blocked_at_hop", "hops_to_host", "hops"} <= set(path)
    for hop in path["hops"]:
        assert {"ttl", "address", "reply", "rtt_ms"} <= set(hop)
    if verdict in ("reached", "host_rejected", "dropped_at_last_hop") and "8108" not in target:
        assert path["hops_to_host"] == 3
    if verdict == "dropped_in_network":
        assert path["blocked_at_hop"] == 1 and path["hops"][0]["reply"] == "time_exceeded"


@pytest.mark.parametrize("target, verdict, blocked_by, words", list(params()))
def test_check_says_it_in_words(outcomes, target, verdict, blocked_by, words):
    text = outcomes[1][target]
    assert f"Path verdict: {verdict} " in text, text
    assert words.format(by=blocked_by) in " ".join(text.split()), text


@pytest.mark.parametrize("target, verdict, blocked_by, words", list(params()))
def test_metrics_after_a_scrape(outcomes, target, verdict, blocked_by, words):
    as_json, _text, found, _page = outcomes
    series = {name: (dict(labels), v) for (name, labels), v in found.items() if dict(labels).get("target") == target}
    on = [
        dict(labels)["verdict"]
        for (name, labels), v in found.items()
        if name == "probe_path_diagnosis" and dict(labels)["target"] == target and v == 1
    ]
    if as_json[target]["tcp_state"] == "open":
        assert on == [] and "probe_path_diagnosis_timestamp_seconds" not in series  # nothing to diagnose
        return
    assert on == [verdict]
    blocked = [
        dict(labels)["address"]
        for (name, labels), v in found.items()
        if name == "probe_path_blocked_by_info" and dict(labels)["target"] == target
    ]
    assert blocked == ([blocked_by] if blocked_by else [])
    assert "probe_path_diagnosis_timestamp_seconds" in series


@pytest.mark.parametrize(
    "target, by",
    [
        (f"{SERVER4}:8104", "host"),
        (f"{SERVER4}:8103", "network"),
        (f"[{SERVER6}]:8104", "host"),
        (f"[{SERVER6}]:8103", "network"),
    ],
)
def test_icmp_rejections_say_host_or_network_at_no_extra_cost(outcomes, target, by):
    as_json, _text, found, _page = outcomes
    assert as_json[target]["icmp"]["by"] == by
    values = {
        dict(labels)["by"]: v
        for (name, labels), v in found.items()
        if name == "probe_tcp_rejected_by" and dict(labels)["target"] == target
    }
    assert values == {"host": 1 if by == "host" else 0, "network": 1 if by == "network" else 0}
    detail = as_json[target]["detail"]
    assert " from " + target.rsplit(":", 1)[0].strip("[]") not in detail  # no more "from <target>"
    if by == "network":
        assert "administratively prohibited by " in detail and "a network firewall, not the host" in detail


def test_status_page_shows_the_words(outcomes):
    page = outcomes[3]
    assert "path: dropped_in_network — dropped after 10.61.1.1 (hop 1)" in page
