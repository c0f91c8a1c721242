"""The shipped alerting rules, checked and unit-tested by the real promtool.

promtool's own unit tests (deploy/prometheus/rules/connectivity.rules.test.yml) hold the expected
labels and rendered annotations; the tests here run them, and make sure they cover every alert with
a firing and a silent case, so a new rule cannot ship untested.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.helpers.configs import require_binary

RULES_DIR = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "rules"
RULES = RULES_DIR / "connectivity.rules.yml"
RULE_TESTS = RULES_DIR / "connectivity.rules.test.yml"
# Alerts about a probe outcome must say which outcome, in a `state` label.
PROBE_METRIC_PREFIXES = ("probe_tcp_state", "probe_smtp_state", "probe_smtp_reply_code")


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


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
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_fail_when_an_annotation_changes(tmp_path):
    """The expectations are compared for real: one changed word in a rule's summary fails the run."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    changed = text.replace("refuses connections (module", "rejects connections (module")
    assert changed != text
    (tmp_path / RULES.name).write_text(changed)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "ConnectivityPortRefused" in result.stdout + result.stderr


def test_every_alert_has_a_firing_and_a_silent_case():
    names = {rule["alert"] for rule in alerts()}
    firing = {case["alertname"] for case in alert_tests() if case.get("exp_alerts")}
    silent = {case["alertname"] for case in alert_tests() if not case.get("exp_alerts")}
    assert names - firing == set(), "alerts without a firing test case"
    assert names - silent == set(), "alerts without a test case where they must stay silent"
    assert (firing | silent) - names == set(), "test cases for alerts that do not exist"


def test_every_alert_has_severity_summary_and_description():
    for rule in alerts():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        summary = rule["annotations"]["summary"]
        assert "$labels.target" in summary or "$labels.instance" in summary, f"{rule['alert']}: say what failed"
        assert len(rule["annotations"]["description"]) > 150, f"{rule['alert']}: say what to check"


def test_probe_state_alerts_carry_the_state_label():
    """Checked on what the rules produce (promtool's expected labels), not on the rule text."""
    state_alerts = {rule["alert"] for rule in alerts() if any(m in rule["expr"] for m in PROBE_METRIC_PREFIXES)}
    assert len(state_alerts) >= 10
    for case in alert_tests():
        if case["alertname"] in state_alerts:
            for alert in case.get("exp_alerts", []):
                assert alert["exp_labels"].get("state"), f"{case['alertname']} at {case['eval_time']} has no state"


@pytest.mark.parametrize(
    "state, alertname",
    [
        ("refused", "ConnectivityPortRefused"),
        ("timeout", "ConnectivityPortFiltered"),
        ("unreachable", "ConnectivityHostUnreachable"),
        ("dns_error", "ConnectivityDnsFailure"),
        ("banner_rejected", "SmtpGreetingRejected"),
        ("starttls_unavailable", "SmtpStartTlsMissing"),
        ("tls_error", "SmtpTlsHandshakeFailed"),
    ],
)
def test_the_issue_states_each_have_an_alert(state, alertname):
    rule = next(rule for rule in alerts() if rule["alert"] == alertname)
    assert f'state="{state}"' in rule["expr"]
