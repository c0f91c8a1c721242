"""The continuous-probing alert rules, checked and unit-tested by the real promtool
(deploy/prometheus/rules/continuous.rules.test.yml holds the expected labels and annotations)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.helpers.configs import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "continuous.rules.yml"
RULE_TESTS = RULES_DIR / "continuous.rules.test.yml"


def promtool(*args: str, cwd: Path = RULES_DIR) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)


def alert_names() -> set[str]:
    return {rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]}


def test_promtool_checks_and_unit_tests_pass():
    checked = promtool("check", "rules", RULES.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_names())} rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    cases = [case for group in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in group["alert_rule_test"]]
    for name in alert_names():
        mine = [case for case in cases if case["alertname"] == name]
        assert any(case["exp_alerts"] for case in mine), f"{name} never tested firing"
        assert any(not case["exp_alerts"] for case in mine), f"{name} never tested silent"


def test_a_changed_threshold_fails_the_unit_tests(tmp_path):
    """The expectations are evaluated for real: loosening the ratio threshold makes the 1 % target fire."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace(") > 0.05 < 1", ") > 0.005 < 1")
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "fine.example.org" in result.stdout + result.stderr


def test_the_shipped_prometheus_config_loads_the_rules():
    config = yaml.safe_load((RULES_DIR.parent / "prometheus.yml").read_text())
    assert "rules/continuous.rules.yml" in config["rule_files"]
