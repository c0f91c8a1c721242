"""Many vantage points, one view, end to end (issue 17): three sites in their own network namespaces, each
with its own exporter (--probe.vantage) and its own Prometheus in agent mode remote-writing to a central
Prometheus (the shipped deploy/vantage files), a shared set of targets, nftables making one target
unreachable from every site and another from one site, then a site's exporter killed, then the central
Prometheus stopped and started again.

The scenario runs in tests/scenarios/vantage.py inside the central namespace; this module builds and removes
the namespaces (names "vp" + this process' pid + a letter) and asserts on the scenario's JSON report.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers.e2e_stack import REPO, binary
from tests.scenarios.vantage import DOWN_EVERYWHERE, DOWN_FROM_A, OK, SITES, TARGET_IP

pytestmark = [pytest.mark.netns, pytest.mark.e2e]

SCENARIO_TIMEOUT = 400  # a bound for a hung run; the scenario itself takes ~1 minute


def unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces and nftables rules"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages iproute2, nftables; .ci/run installs them)"
    if binary("prometheus") is None:
        return "prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)"
    if binary("prometheus-alertmanager", "alertmanager") is None:
        return "alertmanager is not installed (Debian package 'prometheus-alertmanager'; .ci/run installs it)"
    return None


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def topology():
    """vpPIDx (central, holds the targets) linked to vpPIDa, vpPIDb, vpPIDc (sites) by one veth pair each."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    prefix = f"vp{os.getpid()}"
    central = f"{prefix}x"
    names = [central, *(f"{prefix}{site}" for site in SITES)]
    try:
        for name in names:
            ip("netns", "add", name)
            ip("-n", name, "link", "set", "lo", "up")
        ip("-n", central, "addr", "add", f"{TARGET_IP}/32", "dev", "lo")
        for site, number in SITES.items():
            here, there = f"{prefix}{site}0", f"{prefix}{site}1"
            ip("-n", central, "link", "add", here, "type", "veth", "peer", "name", there, "netns", f"{prefix}{site}")
            ip("-n", central, "addr", "add", f"10.200.{number}.1/24", "dev", here)
            ip("-n", central, "link", "set", here, "up")
            ip("-n", f"{prefix}{site}", "addr", "add", f"10.200.{number}.2/24", "dev", there)
            ip("-n", f"{prefix}{site}", "link", "set", there, "up")
            ip("-n", f"{prefix}{site}", "route", "add", "default", "via", f"10.200.{number}.1")
        yield prefix, central
    finally:
        for name in names:  # removes the veth pairs and the nftables table with them
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def report(topology, tmp_path_factory) -> dict:
    prefix, central = topology
    workdir = tmp_path_factory.mktemp("vantage")
    done = subprocess.run(
        ["ip", "netns", "exec", central, sys.executable, "-m", "tests.scenarios.vantage", prefix, str(workdir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SCENARIO_TIMEOUT,
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines, f"scenario failed:\n{done.stdout}\n{done.stderr}"
    result = json.loads(lines[-1])
    assert "error" not in result, f"{result['error']}\n{result.get('traceback')}\nlogs in {workdir}"
    print(
        json.dumps(
            {
                key: result[key]
                for key in (
                    "series_per_target",
                    "series_per_site",
                    "remote_write",
                    "buffered_seconds",
                    "samples_retried",
                    "backfill",
                )
            },
            indent=1,
        )
    )
    return result


def test_central_prometheus_holds_the_reachability_matrix(report):
    assert report["three_sites"]["matrix"] == {
        OK: {"a": 1, "b": 1, "c": 1},
        DOWN_EVERYWHERE: {"a": 0, "b": 0, "c": 0},
        DOWN_FROM_A: {"a": 0, "b": 1, "c": 1},
    }
    assert report["three_sites"]["failing"] == {OK: 0, DOWN_EVERYWHERE: 3, DOWN_FROM_A: 1}
    assert report["three_sites"]["reporting"] == {OK: 3, DOWN_EVERYWHERE: 3, DOWN_FROM_A: 3}


def test_dashboard_matrix_shows_each_sites_state(report):
    row = "{} · tcp_connect".format
    assert report["three_sites"]["cells"] == {
        row(OK): {"a": "open", "b": "open", "c": "open"},
        row(DOWN_EVERYWHERE): {"a": "timeout", "b": "timeout", "c": "timeout"},
        row(DOWN_FROM_A): {"a": "timeout", "b": "open", "c": "open"},
    }


def test_every_dashboard_query_and_variable_returns_data(report):
    results = report["three_sites"]["dashboard"]
    assert len(results) == 9  # 7 panel queries, 2 variables
    assert [name for name, count in results.items() if count == 0] == []
    assert results["variable vantage"] == 3 and results["variable target"] == 3


def test_down_everywhere_and_down_from_one_site_fire_and_nothing_else(report):
    assert report["three_sites"]["firing"] == sorted(
        [
            ["TargetDownEverywhere", DOWN_EVERYWHERE, ""],
            ["TargetDownFromSite", DOWN_FROM_A, "a"],
            ["ConnectivityPortFiltered", DOWN_EVERYWHERE, "a"],
            ["ConnectivityPortFiltered", DOWN_EVERYWHERE, "b"],
            ["ConnectivityPortFiltered", DOWN_EVERYWHERE, "c"],
            ["ConnectivityPortFiltered", DOWN_FROM_A, "a"],
        ]
    )


def test_one_cause_notifies_once(report):
    """Alertmanager inhibits the per-site alerts under TargetDownEverywhere / TargetDownFromSite."""
    view = report["three_sites"]["alertmanager"]
    assert view["active"] == sorted(
        [["TargetDownEverywhere", DOWN_EVERYWHERE, ""], ["TargetDownFromSite", DOWN_FROM_A, "a"]]
    )
    assert len(view["suppressed"]) == 4


def test_a_killed_site_exporter_is_site_blind_not_target_down(report):
    blind = report["site_c_blind"]
    assert blind["matrix"] == {OK: {"a": 1, "b": 1}, DOWN_EVERYWHERE: {"a": 0, "b": 0}, DOWN_FROM_A: {"a": 0, "b": 1}}
    assert blind["reporting"] == {OK: 2, DOWN_EVERYWHERE: 2, DOWN_FROM_A: 2}
    assert ["SiteBlind", "", "c"] in blind["firing"]
    assert not [alert for alert in blind["firing"] if alert[0].startswith("TargetDown") and alert[2] == "c"]
    assert ["TargetDownEverywhere", DOWN_EVERYWHERE, ""] in blind["firing"]  # decided by the two that report
    assert blind["alertmanager"]["active"] == sorted(
        [
            ["SiteBlind", "", "c"],
            ["TargetDownEverywhere", DOWN_EVERYWHERE, ""],
            ["TargetDownFromSite", DOWN_FROM_A, "a"],
        ]
    )
    assert ["ConnectivityExporterDown", "", "c"] in blind["alertmanager"]["suppressed"]


def test_a_site_that_comes_back_is_no_longer_blind(report):
    back = report["site_c_back"]
    assert back["firing"] == report["three_sites"]["firing"]
    assert back["matrix"] == report["three_sites"]["matrix"]


def test_agents_backfill_what_they_buffered_while_central_was_down(report):
    backfill = report["backfill"]
    assert report["buffered_seconds"] >= 12
    assert backfill["window_seconds"] >= 12
    for site in ("a", "b"):
        assert report["samples_retried"][site] > 0  # the sends failed while the central one was down
        # Samples stamped while the central Prometheus was stopped: they can only have come afterwards.
        assert backfill["samples"][site] >= backfill["samples_needed"] >= 3


def test_every_series_carries_its_vantage_point_and_cardinality_is_small(report):
    per_target = report["series_per_target"]
    assert set(per_target) == set(SITES)
    assert per_target["a"] == per_target["b"] == per_target["c"]
    # probe_success, duration, dns, ip_protocol, connect duration and six one-hot states: 11, nothing more.
    assert per_target["a"] == 11
    # The rest of a site: the exporter's own metrics and Prometheus' up/scrape_* series, a fixed overhead.
    assert report["series_per_site"]["a"] - 3 * per_target["a"] < 100
    for site in SITES:
        sent = report["remote_write"][site]
        assert sent["samples"] > 0 and 0 < sent["bytes"] / sent["samples"] < 50


def test_status_page_links_to_the_central_view(report):
    assert report["status_page_links_central"]
