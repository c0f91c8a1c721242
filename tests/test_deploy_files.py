"""The shipped deploy files: valid for the real tools (promtool, amtool, the exporter's own config
check), consistent with each other (service names, ports, mounts, module names), and a dashboard
that follows Grafana's conventions and the exporter's state names."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from exporter.config.loader import load_config
from exporter.core.address import parse_host_port
from exporter.probers.connect.result import TcpState
from tests.helpers.configs import require_binary
from tests.helpers.e2e_stack import (
    ALERTMANAGER_YML,
    DASHBOARD_JSON,
    DEPLOY,
    PROMETHEUS_YML,
    SHARDED_YML,
    WEBHOOK_LOGGER,
    dashboard_queries,
    dashboard_variable_queries,
    free_port,
    substitute,
)

COMPOSE_YML = DEPLOY / "docker-compose.yml"
EXPORTER_CONFIG = DEPLOY / "exporter" / "config.yml"
TARGET_FILES = sorted((DEPLOY / "prometheus" / "targets").glob("*.yml"))


def run(*argv: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)


def compose() -> dict:
    return yaml.safe_load(COMPOSE_YML.read_text())


def dashboard() -> dict:
    return json.loads(DASHBOARD_JSON.read_text())


def all_panels() -> list[dict]:
    out = []
    for panel in dashboard()["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))
    return out


# --- Prometheus, Alertmanager, exporter: checked by their own tools ---------------------------------------


@pytest.mark.parametrize("config", [PROMETHEUS_YML, SHARDED_YML], ids=lambda p: p.name)
def test_promtool_check_config(config):
    result = run(require_binary("promtool"), "check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr


def test_amtool_check_config():
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package 'prometheus-alertmanager')")
    result = run(amtool, "check-config", str(ALERTMANAGER_YML))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    "labels, receivers",
    [
        ("alertname=ConnectivityPortRefused state=refused severity=critical", "pager"),
        ("alertname=ConnectivityPortFiltered state=timeout severity=critical", "pager"),
        ("alertname=ConnectivityDnsFailure state=dns_error severity=critical", "dns"),
        ("alertname=SmtpGreetingRejected state=banner_rejected severity=critical", "pager,mail"),
        ("alertname=SmtpTemporaryFailure state=banner_rejected severity=warning", "mail"),
        ("alertname=ConnectivityConnectSlow state=open severity=warning", "chat"),
        ("alertname=TlsCertificateExpiryCritical severity=critical", "pager"),
        ("alertname=ConnectivityExporterDown severity=critical", "monitoring"),
    ],
)
def test_alertmanager_routes_by_state_and_severity(labels, receivers):
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip("amtool is not installed (Debian package 'prometheus-alertmanager')")
    result = run(amtool, "config", "routes", "test", f"--config.file={ALERTMANAGER_YML}", *labels.split())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == receivers


def test_exporter_config_loads():
    config = load_config(str(EXPORTER_CONFIG))
    assert config.targets and "tcp_connect" in config.modules


def test_commented_smtp_modules_are_valid(tmp_path):
    """The SMTP examples ship commented out (they need real mail servers as targets); uncommented they must load."""
    text = re.sub(r"^  # (smtp_|  )", r"  \1", EXPORTER_CONFIG.read_text(), flags=re.M)
    (tmp_path / "config.yml").write_text(text)
    modules = load_config(str(tmp_path / "config.yml")).modules
    assert {"smtp_starttls", "smtp_rcpt"} <= set(modules)
    assert modules["smtp_rcpt"].settings.rcpt_to == "postmaster@example.org"


def test_file_sd_targets_are_valid_and_name_existing_modules():
    modules = load_config(str(EXPORTER_CONFIG)).modules
    assert TARGET_FILES
    for path in TARGET_FILES:
        groups = yaml.safe_load(path.read_text())
        assert isinstance(groups, list) and groups, path
        for group in groups:
            assert set(group) <= {"targets", "labels"}, path
            for target in group["targets"]:
                parse_host_port(target, None)
            labels = group.get("labels", {})
            assert all(isinstance(value, str) for value in labels.values()), path
            assert labels.get("module", "tcp_connect") in modules, f"{path}: unknown module {labels.get('module')}"


# --- docker compose -----------------------------------------------------------------------------------


def test_compose_services_and_mounts():
    services = compose()["services"]
    assert set(services) >= {"exporter", "prometheus", "alertmanager", "grafana", "alert-receiver"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name}: mount source {source} does not exist"
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), f"{name} publishes {port} beyond this host"
    mounts = {name: {v.split(":")[1]: v.split(":")[0] for v in s.get("volumes", [])} for name, s in services.items()}
    assert mounts["exporter"]["/etc/connectivity_exporter/config.yml"] == "./exporter/config.yml"
    assert "--config.file=/etc/connectivity_exporter/config.yml" in services["exporter"]["command"]
    assert mounts["prometheus"]["/etc/prometheus"] == "./prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    assert mounts["alertmanager"]["/etc/alertmanager/alertmanager.yml"] == "./alertmanager/alertmanager.yml"
    assert mounts["grafana"]["/etc/grafana/provisioning"] == "./grafana/provisioning"
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/connectivity.yml").read_text())
    dashboards_path = provider["providers"][0]["options"]["path"]
    assert mounts["grafana"][dashboards_path] == "./grafana/dashboards"


def test_compose_addresses_match_the_configs():
    """prometheus.yml scrapes exporter:9816 and alerts alertmanager:9093; Alertmanager posts to alert-receiver."""
    services = compose()["services"]
    prometheus = PROMETHEUS_YML.read_text()
    assert "exporter:9816" in prometheus and "exporter" in services
    assert "alertmanager:9093" in prometheus and "alertmanager" in services
    urls = {
        config["url"]
        for receiver in yaml.safe_load(ALERTMANAGER_YML.read_text())["receivers"]
        for config in receiver.get("webhook_configs", [])
    }
    assert urls and all(url.startswith("http://alert-receiver:5001/") for url in urls)
    assert services["alert-receiver"]["command"][-1] == "5001"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"


def test_compose_builds_the_exporter_from_the_repository():
    build = compose()["services"]["exporter"]["build"]
    context = (DEPLOY / build["context"]).resolve()
    assert (context / "pyproject.toml").exists(), "the build context is not the repository root"
    assert (context / build["dockerfile"]).exists(), "the compose file builds from a Dockerfile that is missing"


def test_docker_compose_config():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("the docker CLI is not installed")
    if run(docker, "compose", "version").returncode != 0:
        pytest.skip("the docker CLI has no 'compose' plugin here; the compose file is checked structurally above")
    result = run(docker, "compose", "-f", str(COMPOSE_YML), "config", "--quiet")
    assert result.returncode == 0, result.stderr


# --- the Grafana dashboard ----------------------------------------------------------------------------


def test_dashboard_is_importable_and_provisionable():
    board = dashboard()
    assert board["schemaVersion"] >= 39
    assert board["uid"] and board["id"] is None
    assert [i["name"] for i in board["__inputs"]] == ["DS_PROMETHEUS"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    # A datasource variable of the same name makes ${DS_PROMETHEUS} resolve when provisioned from a file
    # too, where __inputs is not applied.
    assert variables["DS_PROMETHEUS"]["type"] == "datasource" and variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert {"job", "module", "target"} <= set(variables)
    assert any(v["type"] == "adhoc" for v in variables.values()), "no label filter variable"
    for name in ("job", "module", "target"):
        assert variables[name]["includeAll"] and variables[name]["allValue"] == ".*"


def test_every_panel_and_query_uses_the_datasource_variable():
    for panel in all_panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panel_ids_unique_and_layout_fits():
    panels = all_panels()
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids))
    cells = set()
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps another panel"
                cells.add((x, y))


def test_dashboard_has_the_panels_the_issue_asks_for():
    titles = {panel["title"] for panel in all_panels() if panel["type"] != "row"}
    assert {
        "State per target",
        "TCP connect time",
        "DNS lookup time",
        "SMTP greeting (banner) time",
        "SMTP reply codes per stage",
        "Certificate expires in",
    } <= titles


def test_every_dashboard_expression_is_valid_promql(tmp_path):
    """promtool parses each expression (as a recording rule); the e2e test then runs them for real."""
    queries = dashboard_queries()
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:query_{n}", "expr": q["promql"]} for n, q in enumerate(queries)],
            }
        ]
    }
    (tmp_path / "dashboard.rules.yml").write_text(yaml.safe_dump(rules))
    result = run(require_binary("promtool"), "check", "rules", "dashboard.rules.yml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    for variable in dashboard_variable_queries():
        assert variable["match"].startswith("probe_success")


def test_state_table_maps_every_tcp_state_the_exporter_has():
    """The state code in the table's query and its value mapping agree with exporter.probers.result.TcpState."""
    table = next(panel for panel in all_panels() if panel["title"] == "State per target")
    expr = next(target["expr"] for target in table["targets"] if "probe_tcp_state" in target["expr"])
    codes = {int(code): state for state, code in re.findall(r'state="(\w+)"\} \* (\d+)', expr)}
    states = [state.value for state in TcpState]
    assert codes == {code: state for code, state in enumerate(states) if code}  # 0 (open): no term is 1
    assert re.search(r'state!~"' + "|".join(states) + r'"\} \* 99', expr), "no catch-all for unknown states"
    override = next(o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "TCP state")
    options = next(p["value"] for p in override["properties"] if p["id"] == "mappings")[0]["options"]
    assert options["0"]["text"] == "open"
    assert {options[str(code)]["text"].split()[0] for code in codes} == {
        "refused",
        "timeout",
        "unreachable",
        "DNS",
        "probe",
    }
    assert set(options) == {str(code) for code in range(len(states))} | {"99"}


def test_smtp_state_mapping_matches_the_prober():
    from exporter.probers.smtp.result import SmtpState

    table = next(panel for panel in all_panels() if panel["title"] == "State per target")
    expr = next(target["expr"] for target in table["targets"] if "probe_smtp_state" in target["expr"])
    codes = {int(code): state for state, code in re.findall(r'state="(\w+)"\} \* (\d+)', expr)}
    states = [state.value for state in SmtpState]
    # Every state has its term, ok (0) included: only the current state's series exists (not one-hot).
    assert codes == dict(enumerate(states))
    override = next(o for o in table["fieldConfig"]["overrides"] if o["matcher"]["options"] == "SMTP state")
    options = next(p["value"] for p in override["properties"] if p["id"] == "mappings")[0]["options"]
    assert {code: options[str(code)]["text"] for code in range(len(states))} == dict(enumerate(states))


def test_dashboard_variable_substitution_rejects_unknown_variables():
    assert substitute('rate(x{job=~"$job"}[$__rate_interval])') == 'rate(x{job=~".*"}[30s])'
    with pytest.raises(ValueError, match=r"\$site"):
        substitute('x{site=~"$site"}')


# --- the webhook logger -------------------------------------------------------------------------------


@pytest.fixture
def webhook_logger():
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-u", str(WEBHOOK_LOGGER), f"127.0.0.1:{port}"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert json.loads(process.stdout.readline()) == {"listening": f"127.0.0.1:{port}"}
        yield process, f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=5)


def post(url: str, body: bytes) -> int:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_webhook_logger_prints_one_line_per_alert_and_rejects_garbage(webhook_logger):
    process, url = webhook_logger
    assert post(f"{url}/pager", b"not json") == 400
    assert post(f"{url}/pager", b'{"no": "alerts"}') == 400
    notification = {
        "receiver": "pager",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "ConnectivityPortRefused",
                    "state": "refused",
                    "severity": "critical",
                    "target": "db:5432",
                },
                "annotations": {"summary": "db:5432 refuses connections"},
            }
        ],
    }
    assert post(f"{url}/pager", json.dumps(notification).encode()) == 200
    line = json.loads(process.stdout.readline())
    assert line == {
        "path": "/pager",
        "receiver": "pager",
        "status": "firing",
        "alertname": "ConnectivityPortRefused",
        "severity": "critical",
        "state": "refused",
        "target": "db:5432",
        "summary": "db:5432 refuses connections",
    }
