"""The multi-site deploy files (deploy/vantage/), checked and unit-tested by the real promtool and amtool.

promtool's own unit tests (deploy/vantage/rules/vantage.rules.test.yml) hold the expected labels and
rendered annotations; the tests here run them, make sure every alert has a firing and a silent case, and
that a changed rule fails them (the expectations are compared for real)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.configs import require_binary

VANTAGE_DIR = Path(__file__).resolve().parent.parent / "deploy" / "vantage"
RULES_DIR = VANTAGE_DIR / "rules"
RULES = RULES_DIR / "vantage.rules.yml"
RULE_TESTS = RULES_DIR / "vantage.rules.test.yml"
CONTRACT_ALERTS = {"TargetDownEverywhere", "TargetDownFromSite"}


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alert_tests() -> list[dict]:
    return [
        case for group in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in group.get("alert_rule_test", [])
    ]


def run(tool: str, *args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    if tool == "amtool" and shutil.which(tool) is None:
        pytest.skip("amtool is not installed (Debian package 'prometheus-alertmanager'; .ci/run installs it)")
    return subprocess.run([require_binary(tool), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules():
    result = run("promtool", "check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_contract_alert_names_exist():
    assert {rule.get("alert") for rule in rules()} >= CONTRACT_ALERTS


def test_promtool_unit_tests_pass():
    result = run("promtool", "test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case():
    cases = alert_tests()
    for rule in rules():
        if "alert" not in rule:
            continue
        mine = [case for case in cases if case["alertname"] == rule["alert"]]
        assert any(case["exp_alerts"] for case in mine), f"{rule['alert']}: no firing case"
        assert any(not case["exp_alerts"] for case in mine), f"{rule['alert']}: no silent case"


def test_a_changed_quorum_fails_the_unit_tests(tmp_path):
    """With "at least two vantage points" raised to four, the tests of TargetDownEverywhere fail."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace("target:probe_vantage_points:count >= 2", "target:probe_vantage_points:count >= 4")
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = run("promtool", "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: TargetDownEverywhere" in result.stdout + result.stderr


def test_a_blind_site_counted_as_failing_fails_the_unit_tests(tmp_path):
    """If stale (blind) sites counted as failing, "down from site" would fire for them: the tests catch it."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace(
        "expr: count by (vantage) (target_vantage:probe_success:max)\n",
        "expr: count by (vantage) (max_over_time(target_vantage:probe_success:max[1h]))\n",
    )
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = run("promtool", "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "alertname: SiteBlind" in result.stdout + result.stderr


def test_site_agent_and_central_configs_are_valid():
    agent = run("promtool", "check", "config", "--agent", "site-agent.yml", cwd=VANTAGE_DIR)
    assert agent.returncode == 0, agent.stdout + agent.stderr
    central = run("promtool", "check", "config", "central.yml", cwd=VANTAGE_DIR)
    assert central.returncode == 0, central.stdout + central.stderr
    assert "SUCCESS: 2 rule files found" in central.stdout


def test_site_agent_names_its_vantage_point_and_remote_writes():
    agent = yaml.safe_load((VANTAGE_DIR / "site-agent.yml").read_text())
    assert set(agent["global"]["external_labels"]) == {"vantage"}
    assert agent["remote_write"][0]["url"].endswith("/api/v1/write")
    assert "rule_files" not in agent and "alerting" not in agent  # agent mode evaluates nothing


def test_alertmanager_config_is_valid_and_inhibits_by_cause():
    result = run("amtool", "check-config", "alertmanager.yml", cwd=VANTAGE_DIR)
    assert result.returncode == 0, result.stdout + result.stderr
    inhibit = yaml.safe_load((VANTAGE_DIR / "alertmanager.yml").read_text())["inhibit_rules"]
    sources = {rule["source_matchers"][0] for rule in inhibit}
    assert sources == {
        'alertname="TargetDownEverywhere"',
        'alertname="TargetDownFromSite"',
        'alertname="SiteNetworkDown"',
        'alertname="SiteBlind"',
    }


# --- the dashboard's queries, evaluated by promtool on series shaped like the central Prometheus' -------

DASHBOARD = VANTAGE_DIR / "grafana" / "vantage.json"
ALL = {"vantage": ".*", "target": ".*"}  # what Grafana sends for "All" (allValue)


def dashboard_queries() -> dict[str, str]:
    """{panel title + refId: PromQL with the variables set to "All"}."""
    import json
    import re

    out = {}
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for query in panel.get("targets", []):
            expr = re.sub(r"\$(\w+)", lambda m: ALL.get(m.group(1), m.group(0)), query["expr"])
            out[f"{panel['title']} {query['refId']}"] = expr
    return out


def matrix_query() -> str:
    return next(expr for title, expr in dashboard_queries().items() if title.startswith("Reachability matrix"))


def test_dashboard_matrix_shows_state_and_path_verdict_per_cell(tmp_path):
    """Cells read "timeout · <verdict>" where the exporter diagnosed the path, the bare state elsewhere; a mail
    server that was connected shows its SMTP state (a 554 greeting is no "open"), one that was not its TCP state."""

    def state(target, vantage, on, family="tcp", module="tcp_connect"):
        names = ("open", "refused", "timeout") if family == "tcp" else ("ok", "connect_failed", "banner_rejected")
        return [
            {
                "series": f'probe_{family}_state{{job="connectivity",target="{target}",module="{module}",'
                f'vantage="{vantage}",state="{name}"}}',
                "values": f"{int(name == on)}x5",
            }
            for name in names
        ]

    series = [
        *state("db:5432", "fra1", "timeout"),
        *state("db:5432", "nyc", "open"),
        *state("web:443", "fra1", "open"),
        *state("web:443", "nyc", "refused"),
        *state("mx:25", "fra1", "open", module="smtp"),
        *state("mx:25", "fra1", "banner_rejected", "smtp", "smtp"),
        *state("mx:25", "nyc", "timeout", module="smtp"),
        *state("mx:25", "nyc", "connect_failed", "smtp", "smtp"),
        {
            "series": 'probe_path_diagnosis{job="connectivity",target="db:5432",module="tcp_connect",'
            'vantage="fra1",verdict="dropped_on_path"}',
            "values": "1x5",
        },
        {
            "series": 'probe_path_diagnosis{job="connectivity",target="db:5432",module="tcp_connect",'
            'vantage="fra1",verdict="host_firewall"}',
            "values": "0x5",
        },
    ]

    def cell(target, vantage, state, shown, verdict=None, module="tcp_connect"):
        labels = {
            "target": target,
            "module": module,
            "vantage": vantage,
            "state": state,
            "cell": shown,
            "row": f"{target} · {module}",
            **({"verdict": verdict} if verdict else {}),
        }
        return {"labels": "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}", "value": 1}

    expected = [
        cell("db:5432", "fra1", "timeout", "timeout · dropped_on_path", "dropped_on_path"),
        cell("db:5432", "nyc", "open", "open"),
        cell("web:443", "fra1", "open", "open"),
        cell("web:443", "nyc", "refused", "refused"),
        cell("mx:25", "fra1", "banner_rejected", "banner_rejected", module="smtp"),
        cell("mx:25", "nyc", "timeout", "timeout", module="smtp"),
    ]
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [{"expr": matrix_query(), "eval_time": "2m", "exp_samples": expected}],
            }
        ],
    }
    (tmp_path / "dashboard.test.yml").write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    result = run("promtool", "test", "rules", "dashboard.test.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_parse_and_use_only_its_variables():
    import json

    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "connectivity-vantage"
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert variables == {"DS_PROMETHEUS", "vantage", "target"}
    matrix = next(p for p in dashboard["panels"] if p["title"].startswith("Reachability matrix"))
    assert matrix["transformations"][0]["options"] | {"emptyValue": None} == {
        "columnField": "vantage",
        "rowField": "row",
        "valueField": "cell",
        "emptyValue": None,
    }
    assert "probe_path_diagnosis" in matrix["targets"][0]["expr"]
    for title, expr in dashboard_queries().items():
        assert "$" not in expr.replace('"$1"', ""), f"{title}: unknown variable in {expr}"


# --- the inhibitions, in a real Alertmanager with the shipped config ------------------------------------


@pytest.mark.e2e
def test_alertmanager_inhibits_each_cause_once(tmp_path):
    """Alerts posted to a real Alertmanager (loopback only): each inhibition rule silences what it should,
    and nothing of another target or site."""
    import json
    import time
    import urllib.request

    from tests.helpers.e2e_stack import Processes, binary, free_port, readdress, wait_until_ready
    from tests.helpers.eventually import eventually

    alertmanager = binary("prometheus-alertmanager", "alertmanager")
    if alertmanager is None:
        pytest.skip("alertmanager is not installed (Debian package 'prometheus-alertmanager'; .ci/run installs it)")
    config = yaml.safe_load((VANTAGE_DIR / "alertmanager.yml").read_text())
    readdress(config, {"alert-receiver:5001": f"127.0.0.1:{free_port()}"})  # nothing listens: nothing is sent
    (tmp_path / "am.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    base = f"http://127.0.0.1:{port}"

    def alert(name: str, **labels: str) -> dict:
        return {"labels": {"alertname": name, **labels}}

    t = {"module": "tcp_connect"}
    posted = [
        # db down everywhere: the per-site views and a "from site" still converging are the same cause.
        alert("TargetDownEverywhere", target="db:5432", **t),
        alert("ConnectivityPortFiltered", target="db:5432", vantage="fra1", **t),
        alert("TargetDownFromSite", target="db:5432", vantage="nyc", **t),
        # mail down from fra1 only: its per-state alert there is the same cause; web from nyc is another one.
        alert("TargetDownFromSite", target="mail:25", vantage="fra1", **t),
        alert("ConnectivityPortRefused", target="mail:25", vantage="fra1", **t),
        alert("ConnectivityPortRefused", target="web:443", vantage="nyc", **t),
        # sgp reaches almost nothing: one site alert, not one per target.
        alert("SiteNetworkDown", vantage="sgp"),
        alert("TargetDownFromSite", target="api:8443", vantage="sgp", **t),
        alert("ConnectivityHostUnreachable", target="api:8443", vantage="sgp", **t),
        # tok is blind: its exporter being down is the same cause; another site's exporter is not.
        alert("SiteBlind", vantage="tok"),
        alert("ConnectivityExporterDown", vantage="tok", instance="tok-exporter:9816"),
        alert("ConnectivityExporterDown", vantage="nyc", instance="nyc-exporter-2:9816"),
    ]
    notified = sorted(
        [
            ["TargetDownEverywhere", "db:5432", ""],
            ["TargetDownFromSite", "mail:25", "fra1"],
            ["ConnectivityPortRefused", "web:443", "nyc"],
            ["SiteNetworkDown", "", "sgp"],
            ["SiteBlind", "", "tok"],
            ["ConnectivityExporterDown", "", "nyc"],
        ]
    )
    with Processes(tmp_path) as processes:
        processes.start(
            "alertmanager",
            [
                alertmanager,
                f"--config.file={tmp_path / 'am.yml'}",
                f"--storage.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",
                "--log.level=warn",
            ],
            cwd=tmp_path,
        )
        wait_until_ready(f"{base}/-/ready", processes, time.monotonic() + 30)
        request = urllib.request.Request(
            f"{base}/api/v2/alerts",
            data=json.dumps(posted).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status == 200

        def alert_states() -> dict:
            with urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=10) as response:
                alerts = json.loads(response.read())
            states = {}
            for a in alerts:
                labels = a["labels"]
                states[labels["alertname"], labels.get("target", ""), labels.get("vantage", "")] = a["status"]["state"]
            return states

        # Inhibition is computed as alerts arrive: wait until every posted alert has been processed.
        states = eventually(
            alert_states,
            until=lambda states: len(states) == len(posted) and "unprocessed" not in states.values(),
            what=f"Alertmanager to process all {len(posted)} posted alerts",
        )
    active = sorted(list(key) for key, state in states.items() if state == "active")
    assert active == notified
    assert sorted(state for state in states.values() if state != "active") == ["suppressed"] * 6
