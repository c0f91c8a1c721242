"""The path alerting rules (deploy/prometheus/rules/path.rules.yml), checked and unit-tested by the
real promtool; every alert must have a firing and a silent case in path.rules.test.yml."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from exporter.pathdiag.model import Verdict
from tests.helpers.configs import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "path.rules.yml"
RULE_TESTS = RULES_DIR / "path.rules.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [require_binary("promtool"), *args], cwd=RULES_DIR, capture_output=True, text=True, timeout=60
    )


def alerts() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_unit_tests_pass():
    done = promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("alert", [rule["alert"] for rule in alerts()])
def test_every_alert_has_a_firing_and_a_silent_case(alert):
    cases = [
        case
        for group in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in group["alert_rule_test"]
        if case["alertname"] == alert
    ]
    assert any(case["exp_alerts"] for case in cases) and any(not case["exp_alerts"] for case in cases)


def test_the_rules_name_only_verdicts_that_exist():
    named = set()
    for rule in alerts():
        for part in rule["expr"].split('verdict=~"')[1:]:
            named |= set(part.split('"')[0].split("|"))
    assert named and named <= {verdict.value for verdict in Verdict}
    # Every failing verdict but unknown alerts somewhere; reached never does.
    assert named == {verdict.value for verdict in Verdict} - {"reached", "unknown"}


def test_prometheus_configs_load_the_path_rules():
    for config in ("prometheus.yml", "prometheus-sharded.yml"):
        rule_files = yaml.safe_load((RULES_DIR.parent / config).read_text())["rule_files"]
        assert "rules/path.rules.yml" in rule_files
