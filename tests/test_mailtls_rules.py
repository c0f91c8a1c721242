"""The mail TLS policy alerting rules (deploy/prometheus/rules/mailtls.rules.yml), checked and unit-tested by
the real promtool; the expectations live in mailtls.rules.test.yml. The dashboard's panels use only series the
exporter writes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers.configs import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "mailtls.rules.yml"
RULE_TESTS = RULES_DIR / "mailtls.rules.test.yml"
PROMETHEUS_CONFIGS = [RULES_DIR.parent / "prometheus.yml", RULES_DIR.parent / "prometheus-sharded.yml"]


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"] if "alert" in rule]


def alert_tests() -> list[dict]:
    return [
        case for group in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in group.get("alert_rule_test", [])
    ]


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_promtool_check_rules():
    result = promtool("check", "rules", RULES.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0 and "SUCCESS" in result.stdout, result.stdout + result.stderr


def test_enforce_failing_pages_and_the_others_warn():
    severity = {rule["alert"]: rule["labels"]["severity"] for rule in alerts()}
    assert severity["MTASTSEnforceFailing"] == "critical"
    assert severity["MTASTSTestingFailing"] == severity["MTASTSPolicyUnavailable"] == "warning"


def test_promtool_unit_tests_fail_when_enforce_failing_waits_longer(tmp_path):
    """The expectations are compared for real: paging after 20 instead of 10 minutes fails the run."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace("for: 10m", "for: 20m", 1)
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "MTASTSEnforceFailing" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    names = {rule["alert"] for rule in alerts()}
    firing = {case["alertname"] for case in alert_tests() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in alert_tests() if not case.get("exp_alerts")}
    assert names - firing == set() and names - silent == set() and (firing | silent) - names == set()


def test_prometheus_loads_the_rules():
    for config in PROMETHEUS_CONFIGS:
        assert "rules/mailtls.rules.yml" in yaml.safe_load(config.read_text())["rule_files"], config.name


def test_dashboard_mail_tls_panel_uses_families_the_exporter_writes():
    from exporter.probers.smtp.domain import MAIL_DOMAIN_FAMILIES

    board = json.loads((RULES_DIR.parent.parent / "grafana" / "dashboards" / "connectivity.json").read_text())
    panels = [panel for panel in board["panels"] if panel["title"] == "Mail TLS policies (MTA-STS, DANE)"]
    assert len(panels) == 1
    used = {
        name
        for target in panels[0]["targets"]
        for name in re.findall(r"\b(probe_(?:mta_sts|dane|tls_rpt)_\w+)\b", target["expr"])
    }
    assert {"probe_mta_sts_state", "probe_mta_sts_mx_failing", "probe_dane_mx_state"} <= used
    assert used <= {family.name for family in MAIL_DOMAIN_FAMILIES}
