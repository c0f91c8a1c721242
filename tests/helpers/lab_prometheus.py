"""Dashboard panels queried in a real Prometheus inside a lab's network namespace.

Some panels need a network the main e2e stack (tests/scenarios/e2e_prometheus.py) does not have: DNS for
mail domains, an HTTPS policy host for MTA-STS, a signed zone for DANE. Their tests run the exporter and a
real Prometheus (Debian package ``prometheus``) inside the lab, scraping every second, and ask Prometheus
each panel's query until every one returns data (``eventually``). The query client runs in the namespace
too (Prometheus listens on the namespace's loopback), as a small stdlib program.

    queries = panel_queries("probe_mta_sts_", "probe_dane_")
    results = query_in_lab_prometheus(lab, tmp_path, config, queries, what="every mail TLS panel")
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers.e2e_stack import binary, dashboard_queries
from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import free_port, start_exporter

_ASK = (
    "import json, sys, urllib.parse, urllib.request\n"
    "base = sys.argv[1]\n"
    "out = {}\n"
    "for expr in sys.argv[2:]:\n"
    "    url = base + '/api/v1/query?' + urllib.parse.urlencode({'query': expr})\n"
    "    out[expr] = json.load(urllib.request.urlopen(url, timeout=10))['data']['result']\n"
    "print(json.dumps(out))\n"
)


def panel_queries(*metric_prefixes: str) -> list[dict]:
    """The dashboard's queries that read a metric starting with one of ``metric_prefixes``."""
    return [query for query in dashboard_queries() if any(prefix in query["expr"] for prefix in metric_prefixes)]


def query_in_lab_prometheus(
    lab: Any,
    tmp_path: Path,
    config: Path,
    queries: list[dict],
    what: str,
    scrape_seconds: int = 1,
    until: Callable[[dict[str, list]], bool] = lambda results: True,
) -> dict[str, list]:
    """Run the exporter (``config``) and Prometheus inside ``lab`` (a ``MailLab``) until every query in
    ``queries`` returns data and ``until(results)`` holds; return {promql: result}. Skips when Prometheus
    is not installed.

    A scrape of configured targets probes them within the scrape timeout (here ``scrape_seconds``, also the
    interval): a mail domain with several MX hosts, TLS handshakes and DNSSEC lookups needs more than 1 s."""
    prometheus = binary("prometheus")
    if prometheus is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    port, prometheus_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text(
        yaml.safe_dump(
            {
                "global": {
                    "scrape_interval": f"{scrape_seconds}s",
                    "scrape_timeout": f"{scrape_seconds}s",
                    "evaluation_interval": "1s",
                },
                "scrape_configs": [
                    {"job_name": "connectivity", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
                ],
            }
        )
    )
    exporter = start_exporter(
        "--config.file", str(config), f"--web.listen-address=127.0.0.1:{port}", prefix=tuple(lab.command([]))
    )
    server = lab.popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prometheus_port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    promql = [query["promql"] for query in queries]

    def answers() -> dict[str, list]:
        done = lab.run([sys.executable, "-c", _ASK, f"http://127.0.0.1:{prometheus_port}", *promql])
        if done.returncode != 0:
            raise OSError(f"Prometheus not answering yet: {done.stderr[-300:]}")
        result: dict[str, list] = json.loads(done.stdout)
        return result

    def empty(results: dict[str, list]) -> list[str]:
        return [f"{query['panel']} ({query['ref']})" for query in queries if not results.get(query["promql"])]

    try:
        # Prometheus starts and scrapes; each panel's query must return data (and the caller's condition hold).
        results = eventually(
            answers,
            until=lambda results: not empty(results) and until(results),
            what=what,
            interval=0.5,
            ignoring=(OSError,),
        )
    finally:
        exporter.stop()
        server.terminate()
        server.wait(timeout=20)
    assert not empty(results), f"panels without data: {empty(results)}"
    return results


def series_of(results: dict[str, list], queries: list[dict], panel: str, ref: str | None = None) -> list[dict]:
    """The series (their labels) that a panel's queries returned."""
    return [
        series["metric"]
        for query in queries
        if query["panel"] == panel and ref in (None, query["ref"])
        for series in results[query["promql"]]
    ]
