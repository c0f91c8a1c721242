"""Helpers for the end-to-end tests: real processes on loopback, the shipped deploy files adapted to them.

Used by tests/scenarios/e2e_prometheus.py (which may run inside a private network namespace) and by the pytest
tests that read its report. Every wait is bounded; every process started is stopped on exit.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import TypeVar

import yaml

from tests.helpers.eventually import eventually

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_YML = DEPLOY / "prometheus" / "prometheus.yml"
SHARDED_YML = DEPLOY / "prometheus" / "prometheus-sharded.yml"
RULES_YML = DEPLOY / "prometheus" / "rules" / "connectivity.rules.yml"
ALERTMANAGER_YML = DEPLOY / "alertmanager" / "alertmanager.yml"
WEBHOOK_LOGGER = DEPLOY / "alertmanager" / "webhook_logger.py"
DASHBOARD_JSON = DEPLOY / "grafana" / "dashboards" / "connectivity.json"

# Template variables of the dashboard and what a query gets for them: "All" is ".*" (allValue).
DASHBOARD_VARIABLES = {
    "job": ".*",
    "module": ".*",
    "target": ".*",
    "__rate_interval": "30s",
    "__interval": "15s",
    "__range": "5m",
}
# Metric families that only SMTP (and its TLS) probes produce.
SMTP_METRIC = re.compile(r"\bprobe_(smtp|ssl|tls)_\w+")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def binary(*names: str) -> str | None:
    return next((path for path in map(shutil.which, names) if path), None)


class ProcessExited(Exception):
    """A process of the stack ended early: waiting on it any longer is pointless (never "not yet")."""


class Processes(ExitStack):
    """Starts processes with their output in files under ``logs``; terminates them all on exit."""

    def __init__(self, logs: Path):
        super().__init__()
        self.logs = logs
        self.started: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, name: str, argv: list[str], cwd: Path | None = None) -> subprocess.Popen:
        log = self.logs / f"{name}.log"
        handle = self.enter_context(open(log, "wb"))
        process = subprocess.Popen(argv, stdout=handle, stderr=subprocess.STDOUT, cwd=cwd or REPO)
        self.started[name] = (process, log)
        self.callback(_stop, process)
        return process

    def check_alive(self) -> None:
        for name, (process, log) in self.started.items():
            if process.poll() is not None:
                raise ProcessExited(f"{name} exited with {process.returncode}:\n{tail(log)}")

    def watching(self, probe: Callable[[], T]) -> Callable[[], T]:
        """``probe``, after checking that every process still runs (for ``eventually``)."""

        def checked() -> T:
            self.check_alive()
            return probe()

        return checked

    def log_text(self, name: str) -> str:
        return self.started[name][1].read_text(errors="replace")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except OSError:
        return 0, b""


def wait_until_ready(url: str, processes: Processes, deadline: float) -> None:
    """Until ``url`` answers 200, by ``deadline`` (monotonic); a process that exits meanwhile ends the wait."""

    def status() -> int:
        processes.check_alive()
        return http_get(url, timeout=1.0)[0]

    eventually(status, until=lambda code: code == 200, what=f"{url} to answer 200", timeout=deadline - time.monotonic())


class PrometheusApi:
    def __init__(self, base: str):
        self.base = base

    def _get(self, path: str, **params) -> dict | list:
        status, body = http_get(f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}", timeout=5.0)
        if status != 200:
            raise RuntimeError(f"GET {path} {params}: HTTP {status}: {body[:300]!r}")
        return json.loads(body)["data"]

    def query(self, expr: str) -> list[dict]:
        return self._get("/api/v1/query", query=expr)["result"]

    def label_values(self, label: str, match: str) -> list[str]:
        return self._get(f"/api/v1/label/{label}/values", **{"match[]": match})

    def alerts(self) -> list[dict]:
        return self._get("/api/v1/alerts")["alerts"]

    def targets(self) -> list[dict]:
        return self._get("/api/v1/targets", state="active")["activeTargets"]


def start_prometheus(processes: Processes, workdir: Path, config: dict, deadline: float) -> PrometheusApi:
    prometheus = binary("prometheus")
    if prometheus is None:
        raise RuntimeError("prometheus is not installed")
    config_file = workdir / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    processes.start(
        "prometheus",
        [
            prometheus,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{base}/-/ready", processes, deadline)
    return PrometheusApi(base)


def start_exporter(processes: Processes, name: str, config_text: str, workdir: Path, deadline: float) -> str:
    config_file = workdir / f"{name}.yml"
    config_file.write_text(config_text)
    port = free_port()
    processes.start(
        name,
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
    )
    address = f"127.0.0.1:{port}"
    wait_until_ready(f"http://{address}/-/ready", processes, deadline)
    return address


# --- the shipped files, adapted to a test run ---------------------------------------------------------


def fast_global(config: dict, interval: str = "1s") -> None:
    """Scrape and evaluate every second, so a test sees data (and alerts) within seconds."""
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    for job in config["scrape_configs"]:
        job.pop("scrape_interval", None)
        job.pop("scrape_timeout", None)


def readdress(config: dict, mapping: dict[str, str]) -> None:
    """Replace host:port strings (static targets, relabel replacements, Alertmanager) per ``mapping``."""

    def walk(node):
        if isinstance(node, dict):
            return {key: walk(value) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value) for value in node]
        if isinstance(node, str):
            for old, new in mapping.items():
                node = node.replace(old, new)
        return node

    config.update(walk(config))


def point_file_sd(config: dict, files: list[str]) -> None:
    for job in config["scrape_configs"]:
        for sd in job.get("file_sd_configs", []):
            sd["files"] = files
            sd["refresh_interval"] = "1s"


def rules_with_short_for(destination: Path, duration: str = "1s") -> Path:
    """A copy of the shipped rules with every ``for:`` shortened, so alerts fire within a test."""
    rules = yaml.safe_load(RULES_YML.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = duration
    destination.write_text(yaml.safe_dump(rules, sort_keys=False))
    return destination


# --- the shipped dashboard ----------------------------------------------------------------------------


def dashboard_queries(path: Path = DASHBOARD_JSON) -> list[dict]:
    """Every PromQL expression of the dashboard: {panel, ref, expr (as shipped), promql (substituted)}."""
    dashboard = json.loads(path.read_text())
    out = []

    def visit(panels):
        for panel in panels:
            visit(panel.get("panels", []))
            for target in panel.get("targets", []):
                out.append(
                    {
                        "panel": panel["title"],
                        "ref": target["refId"],
                        "expr": target["expr"],
                        "promql": substitute(target["expr"]),
                    }
                )

    visit(dashboard["panels"])
    return out


def dashboard_variable_queries(path: Path = DASHBOARD_JSON) -> list[dict]:
    """The dashboard's ``label_values(selector, label)`` variables, as {name, label, match}."""
    out = []
    for variable in json.loads(path.read_text())["templating"]["list"]:
        if variable["type"] != "query":
            continue
        query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
        found = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query)
        if found is None:
            raise ValueError(f"variable {variable['name']}: unsupported query {query!r}")
        out.append({"name": variable["name"], "label": found.group(2), "match": substitute(found.group(1))})
    return out


def substitute(expr: str) -> str:
    """Replace Grafana variables by what Grafana sends for "All" and typical ranges; fail on unknown ones."""

    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in DASHBOARD_VARIABLES:
            raise ValueError(f"unknown dashboard variable ${name} in {expr!r}")
        return DASHBOARD_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$([A-Za-z_]\w*)", value, expr)


def needs_smtp(expr: str) -> bool:
    return SMTP_METRIC.search(expr) is not None
