"""Continuous probing end to end on the real Prometheus: the shipped continuous.rules.yml fire on a
flapping port and on a dead one (and not on a healthy one), and the dashboard's continuous panels
(connect-time heatmap, loss) return data. Uses the helpers of tests/helpers/e2e_stack.py."""

from __future__ import annotations

import json
import select
import socket
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
import yaml

from tests.helpers.e2e_stack import (
    DASHBOARD_JSON,
    PROMETHEUS_YML,
    Processes,
    binary,
    dashboard_queries,
    fast_global,
    free_port,
    readdress,
    start_exporter,
    start_prometheus,
)
from tests.helpers.eventually import eventually

pytestmark = pytest.mark.e2e

RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules" / "continuous.rules.yml"
STARTUP_SECONDS = 30
SETTLE_SECONDS = 60
TOGGLE_SECONDS = 1.0


def flapping_port(stack: ExitStack) -> int:
    """A loopback port that accepts for a second, refuses for a second, and so on, until the test ends."""
    port = free_port()
    stop = threading.Event()

    def run() -> None:
        start, step = time.monotonic(), 0
        while not stop.is_set():
            until = start + (step + 1) * TOGGLE_SECONDS
            if step % 2 == 0:
                with socket.socket() as sock:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    sock.bind(("127.0.0.1", port))
                    sock.listen(64)
                    while (left := until - time.monotonic()) > 0 and not stop.is_set():
                        if select.select([sock], [], [], min(left, 0.2))[0]:
                            sock.accept()[0].close()
            else:
                stop.wait(max(0.0, until - time.monotonic()))
            step += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stack.callback(thread.join, 5)
    stack.callback(stop.set)
    return port


def open_port(stack: ExitStack) -> int:
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen(256)
    sock.settimeout(0.2)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            try:
                sock.accept()[0].close()
            except (TimeoutError, OSError):
                continue

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    stack.callback(thread.join, 5)
    stack.callback(stop.set)
    return sock.getsockname()[1]


def short_for_rules(destination: Path) -> Path:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    destination.write_text(yaml.safe_dump(rules, sort_keys=False))
    return destination


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict:
    if binary("prometheus") is None:
        pytest.skip("prometheus is not installed (Debian package 'prometheus'; .ci/run installs it)")
    workdir = tmp_path_factory.mktemp("e2e_continuous")
    with ExitStack() as stack:
        cases = {"flapping": flapping_port(stack), "healthy": open_port(stack), "dead": free_port()}
        targets = "\n".join(
            f"  - {{target: '127.0.0.1:{port}', module: every_200ms, labels: {{case: {case}}}}}"
            for case, port in cases.items()
        )
        config = f"""
modules:
  every_200ms: {{prober: tcp, timeout: 1s, interval: 200ms}}
targets:
{targets}
"""
        processes = stack.enter_context(Processes(workdir))
        deadline = time.monotonic() + STARTUP_SECONDS
        exporter = start_exporter(processes, "exporter", config, workdir, deadline)
        prometheus_config = yaml.safe_load(PROMETHEUS_YML.read_text())
        fast_global(prometheus_config)
        readdress(prometheus_config, {"exporter:9816": exporter})
        prometheus_config.pop("alerting", None)
        prometheus_config["scrape_configs"] = [
            c for c in prometheus_config["scrape_configs"] if c["job_name"] == "connectivity"
        ]
        prometheus_config["rule_files"] = [str(short_for_rules(workdir / "continuous.rules.yml"))]
        api = start_prometheus(processes, workdir, prometheus_config, deadline)
        wanted = {
            ("ConnectivityFlapping", "flapping"),
            ("ConnectivityIntermittentFailures", "flapping"),
            ("ConnectivityFailingInARow", "dead"),
        }
        queries = [
            q
            for q in dashboard_queries()
            if "probe_results_total" in q["expr"]
            or "probe_tcp_connect_time_seconds" in q["expr"]
            or "probe_state_changes_total" in q["expr"]
        ]

        def snapshot() -> tuple[set, dict]:
            firing = {
                (alert["labels"]["alertname"], alert["labels"].get("case"))
                for alert in api.alerts()
                if alert["state"] == "firing"
            }
            return firing, {f"{q['panel']} {q['ref']}": len(api.query(q["promql"])) for q in queries}

        firing, counts = eventually(
            processes.watching(snapshot),
            until=lambda seen: wanted <= seen[0] and all(seen[1].values()),
            what=f"alerts {sorted(wanted)} firing and every continuous panel with data",
            timeout=SETTLE_SECONDS,
            interval=0.5,
        )
        ratio = api.query(
            'sum by (case) (rate(probe_results_total{state!="open"}[1m])) '
            "/ sum by (case) (rate(probe_results_total[1m]))"
        )
        p50 = api.query("histogram_quantile(0.5, sum by (case, le) (rate(probe_tcp_connect_time_seconds_bucket[1m])))")
        return {
            "firing": sorted(firing),
            "dashboard": counts,
            "ratio": {r["metric"].get("case"): float(r["value"][1]) for r in ratio},
            "p50": {r["metric"].get("case"): r["value"][1] for r in p50},
            "panels": [p["title"] for p in json.loads(DASHBOARD_JSON.read_text())["panels"]],
        }


def test_flapping_and_dead_ports_fire_the_continuous_alerts(run):
    firing = set(map(tuple, run["firing"]))
    assert ("ConnectivityFlapping", "flapping") in firing, run
    assert ("ConnectivityIntermittentFailures", "flapping") in firing, run
    assert ("ConnectivityFailingInARow", "dead") in firing, run
    assert not [alert for alert in firing if alert[1] == "healthy"], run
    # A dead port fails every probe: that is not "intermittent" (the per-state alerts cover it).
    assert ("ConnectivityIntermittentFailures", "dead") not in firing, run


def test_failure_ratio_in_prometheus_matches_the_flapping(run):
    assert 0.25 <= run["ratio"]["flapping"] <= 0.75, run["ratio"]  # up half the time
    assert run["ratio"]["healthy"] == 0 and run["ratio"]["dead"] == 1, run["ratio"]


def test_continuous_dashboard_panels_return_data(run):
    assert "Connect time heatmap (continuous targets)" in run["panels"]
    assert "Loss: failed share of background probes" in run["panels"]
    assert len(run["dashboard"]) >= 3, run["dashboard"]
    assert all(run["dashboard"].values()), run["dashboard"]
    assert float(run["p50"]["healthy"]) < 0.1  # loopback connects: well under 100 ms
