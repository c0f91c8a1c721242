"""The mail-domain alerting rules (deploy/prometheus/rules/maildomain.rules.yml), checked and
unit-tested by the real promtool; the expectations live in maildomain.rules.test.yml."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers.configs import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "maildomain.rules.yml"
RULE_TESTS = RULES_DIR / "maildomain.rules.test.yml"
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


def test_promtool_unit_tests_fail_when_the_backup_rule_changes(tmp_path):
    """The expectations are compared for real: a backup alert after 10 instead of 30 minutes fails the run."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace("for: 30m", "for: 10m")
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "MailDomainBackupMXDown" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    names = {rule["alert"] for rule in alerts()}
    firing = {case["alertname"] for case in alert_tests() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in alert_tests() if not case.get("exp_alerts")}
    assert names - firing == set() and names - silent == set() and (firing | silent) - names == set()


def test_prometheus_loads_the_rules():
    for config in PROMETHEUS_CONFIGS:
        assert "rules/maildomain.rules.yml" in yaml.safe_load(config.read_text())["rule_files"], config.name


def test_dashboard_mail_domain_panels_use_families_the_exporter_writes():
    import json
    import re

    from exporter.probers.smtp.domain import MAIL_DOMAIN_FAMILIES

    board = json.loads((RULES_DIR.parent.parent / "grafana" / "dashboards" / "connectivity.json").read_text())
    titles = [panel["title"] for panel in board["panels"]]
    row = titles.index("Mail domains")
    assert {"Mail domain verdict", "MX hosts", "MX host history"} <= set(titles[row:])
    used = {
        name
        for panel in board["panels"][row:]
        for target in panel.get("targets", [])
        for name in re.findall(r"\b(probe_(?:mx|mail_domain)_\w+)\{", target["expr"])
    }
    assert used and used <= {family.name for family in MAIL_DOMAIN_FAMILIES}
