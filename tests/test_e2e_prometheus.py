"""End to end with a real Prometheus (and Alertmanager): the shipped scrape configs, rules, routing and
dashboard, run against the real exporter on loopback.

The scenarios run in a subprocess (tests/scenarios/e2e_prometheus.py) so that, as root, the whole stack can live in
a private network namespace with nftables rules: there the timeout, unreachable and dns_error states
exist too. Without root only the loopback states (open, refused) are checked, and the rest skips.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter

import pytest

from tests.helpers.e2e_stack import REPO, binary, needs_smtp

pytestmark = pytest.mark.e2e

SCENARIO_TIMEOUT = 120


def netns_available() -> bool:
    if os.geteuid() != 0 or not all(map(shutil.which, ("unshare", "nft", "ip"))):
        return False
    return subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10).returncode == 0


def run_scenario(name: str, workdir, netns: bool = False) -> dict:
    if binary("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)")
    argv = [sys.executable, "-m", "tests.scenarios.e2e_prometheus", name, str(workdir)]
    if netns:
        argv = ["unshare", "-n", *argv, "--netns"]
    process = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=SCENARIO_TIMEOUT)
    lines = process.stdout.strip().splitlines()
    assert process.returncode == 0 and lines, f"scenario {name} failed:\n{process.stdout}\n{process.stderr}"
    report = json.loads(lines[-1])
    assert "error" not in report, f"scenario {name}: {report['error']}\nlogs in {workdir}"
    return report


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict:
    return run_scenario("stack", tmp_path_factory.mktemp("stack"), netns=netns_available())


@pytest.fixture(scope="module")
def sharding(tmp_path_factory) -> dict:
    return run_scenario("sharding", tmp_path_factory.mktemp("sharding"))


def require_netns(report: dict) -> None:
    if not report["netns"]:
        pytest.skip("timeout/unreachable/dns_error need root, unshare and nftables (a private network namespace)")


def require_smtp(report: dict) -> None:
    assert report["smtp"], "the SMTP part of the scenario did not run: is the smtp prober registered?"


def stored_state(report: dict, case: str) -> dict:
    matches = [series for series in report["states"] if series.get("case") == case]
    assert len(matches) == 1, f"case {case}: expected one probe_tcp_state == 1 series, got {matches}"
    return matches[0]


def firing(report: dict, alertname: str, case: str) -> dict:
    matches = [
        alert
        for alert in report["alerts"]
        if alert["labels"]["alertname"] == alertname and alert["labels"].get("case") == case
    ]
    assert matches, f"{alertname} for case {case} not in Prometheus' alerts: {report['alerts']}"
    assert matches[0]["state"] == "firing", matches[0]
    return matches[0]


# --- Prometheus stores what the exporter reports ------------------------------------------------------


@pytest.mark.parametrize("case", ["open", "refused"])
def test_metrics_endpoint_states_are_stored(stack, case):
    series = stored_state(stack, case)
    assert series["state"] == case
    assert series["job"] == "connectivity"
    assert series["target"] == stack["cases"][case]
    assert series["module"] == "tcp_connect"
    assert series["instance"] == stack["exporter"]  # pattern (1): instance is the exporter


@pytest.mark.netns
@pytest.mark.parametrize(
    "case, module", [("timeout", "tcp_short"), ("unreachable", "tcp_connect"), ("dns_error", "tcp_connect")]
)
def test_namespace_only_states_are_stored(stack, case, module):
    require_netns(stack)
    series = stored_state(stack, case)
    assert series["state"] == case
    assert series["module"] == module


@pytest.mark.parametrize("case, state", [("probe_open", "open"), ("probe_refused", "refused")])
def test_probe_endpoint_relabeling(stack, case, state):
    """Pattern (2): file_sd address -> ?target=, `target` label, module from the label or the default."""
    series = stored_state(stack, case)
    assert series["state"] == state
    assert series["job"] == "connectivity_probe"
    assert series["target"] == stack["probe_cases"][case]
    assert series["module"] == "tcp_connect"  # probe_refused has no module label: the relabel default
    assert series["instance"] == stack["exporter"]


# --- the dashboard ------------------------------------------------------------------------------------


def test_every_dashboard_query_returns_data(stack):
    checked = [entry for entry in stack["dashboard"] if stack["smtp"] or not needs_smtp(entry["expr"])]
    assert len(checked) >= 15, "the dashboard's queries were not all found"
    empty = [
        f"panel {entry['panel']!r} query {entry['ref']}: {entry.get('error') or 'no data'}\n  {entry['promql']}"
        for entry in checked
        if entry["count"] == 0
    ]
    assert not empty, "dashboard queries without data:\n" + "\n".join(empty)


def test_smtp_dashboard_queries_return_data(stack):
    require_smtp(stack)
    smtp = [entry for entry in stack["dashboard"] if needs_smtp(entry["expr"])]
    assert len(smtp) >= 8
    empty = [f"{entry['panel']} {entry['ref']}" for entry in smtp if entry["count"] == 0]
    assert not empty, f"SMTP/TLS dashboard queries without data: {empty}"


def test_dashboard_variables_list_the_targets(stack):
    variables = stack["variables"]
    assert set(variables["job"]) >= {"connectivity", "connectivity_probe"}
    assert set(variables["module"]) >= {"tcp_connect"}
    assert set(variables["target"]) >= {stack["cases"]["open"], stack["cases"]["refused"]}


# --- SMTP (runs once the smtp prober is part of the build) ---------------------------------------------


@pytest.mark.parametrize("case, state", [("smtp_ok", "ok"), ("smtp_blocked", "banner_rejected")])
def test_smtp_states_are_stored(stack, case, state):
    require_smtp(stack)
    matches = [series for series in stack["smtp_states"] if series.get("case") == case]
    assert [series["state"] for series in matches] == [state]
    assert stored_state(stack, case)["state"] == "open"  # the TCP connect itself worked


def test_smtp_greeting_rejected_alert_fires_with_the_reply_code(stack):
    require_smtp(stack)
    alert = firing(stack, "SmtpGreetingRejected", "smtp_blocked")
    target = stack["cases"]["smtp_blocked"]
    assert alert["labels"]["state"] == "banner_rejected"
    assert alert["annotations"]["summary"] == f"{target} rejects us with 554 at the greeting"
    assert not [a for a in stack["alerts"] if a["labels"].get("case") == "smtp_ok"], "a healthy server alerts"
    if stack["alertmanager"]:
        paths = {note["path"] for note in stack["notifications"] if note["alertname"] == "SmtpGreetingRejected"}
        assert paths == {"/pager", "/mail"}


# --- alerts -------------------------------------------------------------------------------------------


def test_refused_port_alert_fires_with_its_state_and_advice(stack):
    alert = firing(stack, "ConnectivityPortRefused", "refused")
    target = stack["cases"]["refused"]
    assert alert["labels"]["state"] == "refused"
    assert alert["labels"]["severity"] == "critical"
    assert alert["labels"]["target"] == target
    assert alert["annotations"]["summary"] == f"{target} refuses connections (module tcp_connect)"
    assert f"from {stack['exporter']}" in alert["annotations"]["description"]


def test_open_port_raises_no_alert(stack):
    assert not [alert for alert in stack["alerts"] if alert["labels"].get("case") in ("open", "probe_open")]


@pytest.mark.netns
@pytest.mark.parametrize(
    "case, alertname",
    [
        ("timeout", "ConnectivityPortFiltered"),
        ("unreachable", "ConnectivityHostUnreachable"),
        ("dns_error", "ConnectivityDnsFailure"),
    ],
)
def test_namespace_only_state_alerts_fire(stack, case, alertname):
    require_netns(stack)
    alert = firing(stack, alertname, case)
    assert alert["labels"]["state"] == case


def test_alertmanager_routes_the_refused_alert_to_the_pager(stack):
    if not stack["alertmanager"]:
        pytest.skip("Alertmanager is not installed (Debian package 'prometheus-alertmanager')")
    target = stack["cases"]["refused"]
    received = [
        alert
        for alert in stack["alertmanager_alerts"]
        if alert["labels"]["alertname"] == "ConnectivityPortRefused" and alert["labels"]["target"] == target
    ]
    assert received and received[0]["state"] == "active"
    assert received[0]["receivers"] == ["pager"]
    notes = [
        note
        for note in stack["notifications"]
        if note["alertname"] == "ConnectivityPortRefused" and note["target"] == target
    ]
    assert notes, f"the webhook logger got nothing for {target}: {stack['notifications']}"
    assert {(note["path"], note["status"], note["state"]) for note in notes} == {("/pager", "firing", "refused")}


@pytest.mark.netns
def test_alertmanager_routes_dns_failures_to_the_dns_team(stack):
    require_netns(stack)
    if not stack["alertmanager"]:
        pytest.skip("Alertmanager is not installed (Debian package 'prometheus-alertmanager')")
    notes = [note for note in stack["notifications"] if note["alertname"] == "ConnectivityDnsFailure"]
    assert notes and {note["path"] for note in notes} == {"/dns"}


# --- sharding -----------------------------------------------------------------------------------------


def test_every_target_is_probed_by_exactly_one_exporter(sharding):
    per_target = Counter(series["target"] for series in sharding["series"])
    assert set(per_target) == set(sharding["targets"]), "targets missing from Prometheus"
    twice = {target: n for target, n in per_target.items() if n != 1}
    assert not twice, f"targets probed by more than one exporter: {twice}"
    per_exporter = Counter(series["instance"] for series in sharding["series"])
    assert set(per_exporter) == set(sharding["exporters"]), f"an exporter got no targets: {per_exporter}"
    assert all(sharding["probes_by_exporter"].get(exporter) for exporter in sharding["exporters"])


def prometheus_hashmod(value: str, modulus: int) -> int:
    """Prometheus' hashmod: the low 8 bytes of the MD5 of the value, big-endian, modulo ``modulus``."""
    return int.from_bytes(hashlib.md5(value.encode()).digest()[8:], "big") % modulus


def test_the_split_is_the_hashmod_of_the_target(sharding):
    """Computed independently: shard K's targets go to the exporter the shipped config names for K."""
    exporter_of = {series["target"]: series["instance"] for series in sharding["series"]}
    for target in sharding["targets"]:
        shard = prometheus_hashmod(target, sharding["modulus"])
        assert exporter_of[target] == sharding["exporters"][shard], target
