"""tcp.probe_addresses: all against a real DNS server (dnsmasq) in a network namespace, with servers on every
address and nftables dropping or refusing chosen ones: every verdict, the per-address series, the Happy
Eyeballs time, probe_success, the no-IPv6-route case, the tcp dialogue and smtp probers, the path diagnosis of the
failing address, and (with --prometheus) the shipped alert rules in a real Prometheus.

The scenario runs inside the namespace (tests/scenarios/addresses.py); this module makes the lab and
asserts on the JSON the scenario prints.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers.dns_server import MailLab, lab_unavailable_reason
from tests.helpers.e2e_stack import binary

pytestmark = [pytest.mark.netns, pytest.mark.e2e, pytest.mark.slow]  # a real Prometheus too; ~90 s

ROOT = Path(__file__).resolve().parent.parent
V4_OK, V4_OK2, V4_DROP, V4_REFUSE = "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14"
V6_OK, V6_DROP, V6_REFUSE, V6_PROHIBIT = "fd71::11", "fd71::12", "fd71::13", "fd71::14"
# No route to these inside the namespace (only its own /128 addresses): as on a host without IPv6.
NO_ROUTE_V6, NO_ROUTE_V6_2 = "fd99::1", "fd99::2"
DNS = [
    f"--host-record=dual-ok.test,{V4_OK},{V6_OK}",
    f"--host-record=v6-drop.test,{V4_OK2},{V6_DROP}",
    f"--host-record=v6-refuse.test,{V4_OK},{V6_REFUSE}",
    f"--host-record=v4-drop.test,{V4_DROP},{V6_OK}",
    f"--host-record=all-fail.test,{V4_DROP},{V6_DROP}",
    f"--host-record=v6-prohibit.test,{V4_OK},{V6_PROHIBIT}",
    f"--host-record=noroute6.test,{V4_OK},{NO_ROUTE_V6}",
    f"--host-record=noroute6-b.test,{V4_OK2},{NO_ROUTE_V6_2}",
    f"--address=/pool.test/{V4_OK}",
    f"--address=/pool.test/{V4_OK2}",
    f"--address=/pool.test/{V4_REFUSE}",
    "--mx-host=mail.test,mx1.test,10",
    f"--host-record=mx1.test,{V4_OK2},{V6_DROP}",
    "--local=/test/",  # anything else under .test: NXDOMAIN
]
FIREWALL = f"""
table inet lab {{
  chain input {{
    type filter hook input priority 0;
    ip daddr {V4_DROP} tcp dport {{ 8080, 2525 }} drop
    ip6 daddr {V6_DROP} tcp dport {{ 8080, 2525 }} drop
    ip daddr {V4_REFUSE} tcp dport 8080 reject with tcp reset
    ip6 daddr {V6_REFUSE} tcp dport 8080 reject with tcp reset
    ip6 daddr {V6_PROHIBIT} tcp dport 8080 reject with icmpv6 type admin-prohibited
  }}
}}
"""


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    reason = lab_unavailable_reason()
    if reason is None and binary("nft") is None:
        reason = "nft is not installed (Debian package nftables; .ci/run installs it)"
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("addresses")
    lab = MailLab(tmp)
    try:
        lab.create([V4_OK, V4_OK2, V4_DROP, V4_REFUSE, V6_OK, V6_DROP, V6_REFUSE, V6_PROHIBIT])
        firewall = lab.run(["nft", "-f", "-"], input=FIREWALL)
        assert firewall.returncode == 0, firewall.stderr
        lab.start_dns(*DNS)
        argv = [sys.executable, "-m", "tests.scenarios.addresses", str(tmp)]
        if binary("prometheus") is not None:
            argv.append("--prometheus")
        done = lab.run(argv, timeout=300)
        lines = done.stdout.strip().splitlines()
        assert done.returncode == 0 and lines, f"scenario failed:\n{done.stdout}\n{done.stderr}"
        result: dict[str, Any] = json.loads(lines[-1])
        assert "error" not in result, f"{result['error']}\nlogs in {tmp}"
        return result
    finally:
        lab.close()


def case(report: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = report["cases"][name]
    return found


def addresses(report: dict[str, Any], name: str) -> dict[str, Any]:
    document = case(report, name)["json"]
    assert isinstance(document, dict), document
    found: dict[str, Any] = document["addresses"]
    return found


def states(report: dict[str, Any], name: str) -> dict[str, str]:
    return {entry["address"]: entry["state"] for entry in addresses(report, name)["list"]}


def series(report: dict[str, Any], name: str, family: str) -> dict[str, float]:
    """``{labels: value}`` of one family in the case's /probe reply."""
    out = {}
    probe = case(report, name)["probe"]
    cut = "probe_addresses_state" not in probe and "probe_success 0" in probe and family.startswith("probe_address")
    assert not cut or name in ("one", "mail_domain_one"), f"/probe of {name} was cut at its deadline:\n{probe}"
    for line in probe.splitlines():
        match = re.fullmatch(rf"{family}(?:\{{(.*)\}})? (\S+)", line)
        if match:
            out[match.group(1) or ""] = float(match.group(2))
    return out


@pytest.mark.parametrize(
    ("name", "verdict", "per_address"),
    [
        ("all_ok", "all_ok", {V4_OK: "open", V6_OK: "open"}),
        ("ipv6_drop", "ipv6_failing", {V4_OK2: "open", V6_DROP: "timeout"}),
        ("ipv6_refuse", "ipv6_failing", {V4_OK: "open", V6_REFUSE: "refused"}),
        ("ipv6_prohibited", "ipv6_failing", {V4_OK: "open", V6_PROHIBIT: "unreachable"}),
        ("ipv4_drop", "ipv4_failing", {V4_DROP: "timeout", V6_OK: "open"}),
        ("some_failing", "some_failing", {V4_OK: "open", V4_OK2: "open", V4_REFUSE: "refused"}),
        ("all_failing", "all_failing", {V4_DROP: "timeout", V6_DROP: "timeout"}),
        ("dns_error", "dns_error", {}),
    ],
)
def test_every_verdict_and_each_address_state(
    report: dict[str, Any], name: str, verdict: str, per_address: dict
) -> None:
    found = addresses(report, name)
    assert found["state"] == verdict
    assert states(report, name) == per_address
    document = case(report, name)["json"]
    # probe_success is 1 only when every address connects; check's exit code follows it.
    assert document["success"] is (verdict == "all_ok")
    assert case(report, name)["exit"] == (0 if verdict == "all_ok" else 1)
    assert series(report, name, "probe_success") == {"": 1.0 if verdict == "all_ok" else 0.0}
    # The one-hot verdict family.
    state_series = series(report, name, "probe_addresses_state")
    assert sum(state_series.values()) == 1 and state_series[f'state="{verdict}"'] == 1
    # One probe_address_success series per address, 1 exactly for the open ones.
    expected = {
        f'address="{address}",ip_protocol="{6 if ":" in address else 4}"': 1.0 if state == "open" else 0.0
        for address, state in per_address.items()
    }
    assert series(report, name, "probe_address_success") == expected
    tcp_states = series(report, name, "probe_address_tcp_state")
    for address, state in per_address.items():
        ones = [labels for labels, value in tcp_states.items() if f'address="{address}"' in labels and value == 1]
        assert ones == [f'address="{address}",ip_protocol="{6 if ":" in address else 4}",state="{state}"']


def test_happy_eyeballs_time_when_ipv6_drops_is_the_connection_attempt_delay(report: dict[str, Any]) -> None:
    found = addresses(report, "ipv6_drop")
    seconds = found["happy_eyeballs_seconds"]
    # RFC 8305: the IPv4 attempt starts 250 ms after the unanswered IPv6 one; the IPv4 connect is on loopback.
    v4 = next(entry for entry in found["list"] if entry["ip_protocol"] == 4)
    assert seconds == pytest.approx(0.25 + v4["connect_seconds"])
    assert 0.25 <= seconds < 0.75
    assert series(report, "ipv6_drop", "probe_happy_eyeballs_seconds")[""] == pytest.approx(0.25, abs=0.5)
    assert series(report, "ipv6_drop", "probe_happy_eyeballs_seconds")[""] >= 0.25


def test_happy_eyeballs_time_when_both_work_is_the_connect_time(report: dict[str, Any]) -> None:
    found = addresses(report, "all_ok")
    v6 = next(entry for entry in found["list"] if entry["ip_protocol"] == 6)
    assert found["happy_eyeballs_seconds"] == pytest.approx(v6["connect_seconds"])
    assert found["happy_eyeballs_seconds"] < 0.25  # never the fallback delay


def test_refused_ipv6_costs_a_client_no_connection_attempt_delay(report: dict[str, Any]) -> None:
    # The reset ends the IPv6 attempt at once: the IPv4 one starts without waiting out 250 ms.
    assert addresses(report, "ipv6_refuse")["happy_eyeballs_seconds"] < 0.25


def test_no_address_connects_no_happy_eyeballs_time(report: dict[str, Any]) -> None:
    assert addresses(report, "all_failing")["happy_eyeballs_seconds"] is None
    assert series(report, "all_failing", "probe_happy_eyeballs_seconds") == {}


def test_what_users_experience_in_one_sentence_and_a_table(report: dict[str, Any]) -> None:
    human = case(report, "ipv6_drop")["human"]
    # 0.25 s plus the IPv4 connect time (more than 5 ms on a loaded machine: then "0.26 s").
    sentence = r"^Clients with IPv6 wait (\d+\.\d\d) s, then connect over IPv4: the IPv6 path drops packets$"
    waited = re.search(sentence, human, re.MULTILINE)  # the verdict line
    assert waited is not None, human
    assert 0.25 <= float(waited.group(1)) < 0.75
    assert human.count("then connect over IPv4: the IPv6 path drops packets") == 1, human  # said once
    assert re.search(rf"^  {re.escape(V6_DROP)}\s+v6\s+timeout\s", human, re.MULTILINE)
    assert re.search(rf"^  {re.escape(V4_OK2)}\s+v4\s+open\s", human, re.MULTILINE)
    refused = case(report, "ipv6_refuse")["human"]
    assert "then connect over IPv4: every IPv6 address refuses connections (TCP reset)" in refused
    pool = case(report, "some_failing")["human"]
    assert f"1 of 3 addresses fail ({V4_REFUSE} refuses connections)" in pool
    assert (
        "What users experience: No client can connect: every address drops packets"
        in case(report, "all_failing")["human"]
    )


def test_json_contract(report: dict[str, Any]) -> None:
    found = addresses(report, "ipv6_drop")
    assert {"state", "happy_eyeballs_seconds", "list"} <= set(found)
    for entry in found["list"]:
        assert {"address", "ip_protocol", "state", "connect_seconds"} <= set(entry)
    assert set(found["list"][0]) >= {"address", "ip_protocol", "state", "connect_seconds"}
    # A dropped address waited until the connects' end (the 2 s deadline less the DNS time and a reserve of at
    # most 0.25 s), the open one answered on loopback.
    by_address = {entry["address"]: entry for entry in found["list"]}
    assert by_address[V6_DROP]["connect_seconds"] >= 1.0
    assert by_address[V4_OK2]["connect_seconds"] < 1.0


def test_no_ipv6_route_is_said_once_and_not_counted(report: dict[str, Any]) -> None:
    found = addresses(report, "no_ipv6_route")
    assert found["no_route_families"] == [6]
    assert found["state"] == "all_ok"  # the IPv4 address works; IPv6 is not the target's problem
    assert case(report, "no_ipv6_route")["json"]["success"] is True
    human = case(report, "no_ipv6_route")["human"]
    assert human.count("this exporter cannot reach IPv6: no route") == 1
    assert case(report, "no_ipv6_route")["json"]["addresses"]["note"].startswith("this exporter cannot reach IPv6")
    assert series(report, "no_ipv6_route", "probe_address_success") == {f'address="{V4_OK}",ip_protocol="4"': 1.0}
    assert series(report, "no_ipv6_route", "probe_addresses_no_route") == {'ip_protocol="6"': 1.0}
    # Two names without a route, probed through one exporter: its log says it once.
    assert addresses(report, "no_ipv6_route_again")["no_route_families"] == [6]
    assert series(report, "no_ipv6_route_again", "probe_addresses_no_route") == {'ip_protocol="6"': 1.0}
    assert report["no_route_log_lines"] == 1


def test_an_icmp_rejected_ipv6_address_is_unreachable_and_costs_no_delay(report: dict[str, Any]) -> None:
    found = addresses(report, "ipv6_prohibited")
    assert found["happy_eyeballs_seconds"] < 0.25  # the ICMP error ends the attempt at once
    assert "every IPv6 address is unreachable (an ICMP error came back)" in case(report, "ipv6_prohibited")["human"]


def test_the_default_one_is_todays_probe(report: dict[str, Any]) -> None:
    probe = case(report, "one")["probe"]
    assert "probe_address" not in probe and "probe_happy_eyeballs" not in probe
    assert case(report, "one")["json"]["addresses"] is None
    assert series(report, "one", "probe_success") == {"": 1.0}  # IPv4 preferred: today's one address works


def test_the_cap_cuts_with_a_warning(report: dict[str, Any]) -> None:
    found = addresses(report, "cap")
    assert len(found["list"]) == 2 and found["resolved"] == 3 and found["not_probed"] == 1
    assert series(report, "cap", "probe_addresses_not_probed") == {"": 1.0}
    assert any(
        "not probed" in line and "probe_addresses_max" in line for line in case(report, "cap")["json"]["transcript"]
    )


def test_a_dialogue_runs_on_one_address_and_every_address_is_connected(report: dict[str, Any]) -> None:
    document = case(report, "dialogue")["json"]
    assert document["state"] == "ok"  # the greeting matched on the address that connected (IPv4)
    assert document["address"] == V4_OK2
    assert addresses(report, "dialogue")["state"] == "ipv6_failing"
    assert document["success"] is False


def test_smtp_every_address(report: dict[str, Any]) -> None:
    document = case(report, "smtp")["json"]
    assert document["state"] == "ok" and document["address"] == V4_OK2
    assert states(report, "smtp") == {V4_OK2: "open", V6_DROP: "timeout"}
    assert addresses(report, "smtp")["state"] == "ipv6_failing"
    assert series(report, "smtp", "probe_success") == {"": 0.0}


def test_an_mx_hosts_every_address(report: dict[str, Any]) -> None:
    document = case(report, "mail_domain")["json"]
    shown = json.dumps(document, indent=1)[:3000]
    assert document["mail_domain"]["state"] == "ok", shown  # the MX host's session (over IPv4) accepted
    assert states(report, "mail_domain") == {V4_OK2: "open", V6_DROP: "timeout"}, shown
    assert addresses(report, "mail_domain")["state"] == "ipv6_failing"
    assert document["success"] is False
    assert series(report, "mail_domain", "probe_address_success") == {  # /probe, the same probe again
        f'address="{V4_OK2}",ip_protocol="4"': 1.0,
        f'address="{V6_DROP}",ip_protocol="6"': 0.0,
    }


def test_a_mail_domain_with_one_is_todays_probe(report: dict[str, Any]) -> None:
    document = case(report, "mail_domain_one")["json"]
    assert document["addresses"] is None and document["success"] is True
    assert "probe_address" not in case(report, "mail_domain_one")["probe"]


def test_path_diagnosis_runs_for_the_failing_address(report: dict[str, Any]) -> None:
    document = case(report, "diagnose")["json"]
    assert document["path"] is not None
    assert document["path"]["target"] == V6_DROP
    paths = {entry["address"]: entry["path"] for entry in document["addresses"]["list"]}
    assert paths[V6_DROP]["target"] == V6_DROP and paths[V4_OK2] is None  # the working address is not traced


def test_path_diagnosis_runs_for_every_failing_address(report: dict[str, Any]) -> None:
    document = case(report, "diagnose_all_failing")["json"]
    paths = {entry["address"]: entry["path"] for entry in document["addresses"]["list"]}
    assert {address: path["target"] for address, path in paths.items()} == {V6_DROP: V6_DROP, V4_DROP: V4_DROP}
    assert document["path"]["target"] == V6_DROP  # the first in RFC 8305 order: IPv6 first
    human = case(report, "diagnose_all_failing")["human"]
    assert f"Path to {V6_DROP} port 8080" in human and f"Path to {V4_DROP} port 8080" in human, human


def test_alert_rules_in_a_real_prometheus(report: dict[str, Any]) -> None:
    if "prometheus" not in report:
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)")
    firing = {(a["labels"]["alertname"], a["labels"]["target"]): a for a in report["prometheus"]["alerts"]}
    assert ("ConnectivityIPv6Broken", "v6-drop.test:8080") in firing
    assert firing["ConnectivityIPv6Broken", "v6-drop.test:8080"]["annotations"]["summary"] == (
        "IPv6 broken for v6-drop.test:8080"
    )
    assert firing["ConnectivityAddressesFailing", "pool.test:8080"]["annotations"]["summary"] == (
        "1 of 3 addresses of pool.test:8080 failing"
    )
    assert not [key for key in firing if key[1] == "dual-ok.test:8080"]
    he = {r["metric"]["target"]: float(r["value"][1]) for r in report["prometheus"]["happy_eyeballs"]}
    assert he["v6-drop.test:8080"] >= 0.25 and he["dual-ok.test:8080"] < 0.25


def test_status_page_shows_every_address_verdict(report: dict[str, Any]) -> None:
    page = report["status_page"]
    row = next(line for line in page.split("<tr") if "v6-drop.test:8080" in line)
    assert "every address: ipv6_failing, 1 of 2 connect, Happy Eyeballs 0.2" in row
    ok_row = next(line for line in page.split("<tr") if "dual-ok.test:8080" in line)
    assert "every address: all_ok, 2 of 2 connect" in ok_row


def test_dashboard_panels_have_data_in_a_real_prometheus(report: dict[str, Any]) -> None:
    if "prometheus" not in report:
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)")
    dashboard = report["prometheus"]["dashboard"]
    titles = {entry["panel"] for entry in dashboard}
    assert {"Address verdict per name", "Addresses", "Happy Eyeballs time", "Failing addresses per name"} <= titles
    empty = [
        f"{entry['panel']} {entry['ref']}: {entry.get('error', 'no data')}" for entry in dashboard if not entry["count"]
    ]
    assert not empty


def test_probe_workers_carry_every_address(report: dict[str, Any]) -> None:
    text = report["workers_metrics"]
    assert 'probe_addresses_state{target="v6-drop.test:8080",module="tcp_all",state="ipv6_failing"} 1' in text
    assert (
        f'probe_address_success{{target="pool.test:8080",module="tcp_all",address="{V4_REFUSE}",ip_protocol="4"}} 0'
        in text
    )
    assert 'probe_addresses_state{target="dual-ok.test:8080",module="tcp_all",state="all_ok"} 1' in text
