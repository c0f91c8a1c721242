"""Every address of a name, end to end, run INSIDE the addresses lab's namespace (tests/test_addresses_netns.py):
``ip netns exec LAB python -m tests.scenarios.addresses WORKDIR [--prometheus]``.

The lab (made by the test) has dnsmasq serving the names below and nftables dropping or refusing chosen
addresses. This script starts the servers on every address (a line-greeting TCP server on port 8080, aiosmtpd on
2525, both families), the real exporter, runs ``check`` (JSON and the human report) and ``/probe`` for every case,
and with ``--prometheus`` a real Prometheus evaluating deploy/prometheus/rules/addresses.rules.yml; it prints one
JSON report on its last line. Every wait is bounded.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

import yaml
from aiosmtpd.smtp import SMTP

from tests.helpers.aiosmtpd_server import Mailbox
from tests.helpers.e2e_stack import (
    DEPLOY,
    Processes,
    dashboard_queries,
    free_port,
    http_get,
    start_exporter,
    start_prometheus,
    wait_until_ready,
)
from tests.helpers.eventually import GaveUp, eventually

TCP_PORT, SMTP_PORT = 8080, 2525
RULES = DEPLOY / "prometheus" / "rules" / "addresses.rules.yml"

CONFIG = f"""
modules:
  tcp_all: {{prober: tcp, timeout: 2s, tcp: {{probe_addresses: all}}}}
  tcp_one: {{prober: tcp, timeout: 2s}}
  tcp_all_max2: {{prober: tcp, timeout: 2s, tcp: {{probe_addresses: all, probe_addresses_max: 2}}}}
  hello_all:
    prober: tcp
    timeout: 2s
    tcp: {{probe_addresses: all, query_response: [{{expect: "^hello"}}]}}
  smtp_all: {{prober: smtp, timeout: 3s, tcp: {{probe_addresses: all}}, smtp: {{starttls: "no"}}}}
  mx_all: {{prober: smtp, timeout: 4s, tcp: {{probe_addresses: all}}, smtp: {{mx: true, starttls: "no"}}}}
  mx_one: {{prober: smtp, timeout: 4s, smtp: {{mx: true, starttls: "no"}}}}
  tcp_all_diagnose: {{prober: tcp, timeout: 2s, tcp: {{probe_addresses: all, diagnose: on_failure}}}}
targets:
  - {{target: "dual-ok.test:{TCP_PORT}", module: tcp_all}}
  - {{target: "v6-drop.test:{TCP_PORT}", module: tcp_all}}
  - {{target: "pool.test:{TCP_PORT}", module: tcp_all}}
"""

# (case, target, module): probed with check --json and /probe.
CASES = [
    ("all_ok", f"dual-ok.test:{TCP_PORT}", "tcp_all"),
    ("ipv6_drop", f"v6-drop.test:{TCP_PORT}", "tcp_all"),
    ("ipv6_refuse", f"v6-refuse.test:{TCP_PORT}", "tcp_all"),
    ("ipv6_prohibited", f"v6-prohibit.test:{TCP_PORT}", "tcp_all"),
    ("ipv4_drop", f"v4-drop.test:{TCP_PORT}", "tcp_all"),
    ("some_failing", f"pool.test:{TCP_PORT}", "tcp_all"),
    ("all_failing", f"all-fail.test:{TCP_PORT}", "tcp_all"),
    ("dns_error", f"missing.test:{TCP_PORT}", "tcp_all"),
    ("no_ipv6_route", f"noroute6.test:{TCP_PORT}", "tcp_all"),
    ("no_ipv6_route_again", f"noroute6-b.test:{TCP_PORT}", "tcp_all"),
    ("one", f"v6-drop.test:{TCP_PORT}", "tcp_one"),
    ("cap", f"pool.test:{TCP_PORT}", "tcp_all_max2"),
    ("dialogue", f"v6-drop.test:{TCP_PORT}", "hello_all"),
    ("smtp", f"v6-drop.test:{SMTP_PORT}", "smtp_all"),
    ("mail_domain", f"mail.test:{SMTP_PORT}", "mx_all"),
    ("mail_domain_one", f"mail.test:{SMTP_PORT}", "mx_one"),
]


# --- servers on every address of the namespace ---------------------------------------------------------


async def _greet(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello from the addresses lab\r\n")
    try:
        await writer.drain()
    finally:
        writer.close()


def serve_forever(ready: threading.Event) -> None:
    async def main() -> None:
        # host=None: one listener per family (0.0.0.0 and ::), so every address of the namespace answers.
        await asyncio.start_server(_greet, host=None, port=TCP_PORT)
        loop = asyncio.get_running_loop()
        await loop.create_server(lambda: SMTP(Mailbox(), hostname="mx.test"), host=None, port=SMTP_PORT)
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


# --- the cases ----------------------------------------------------------------------------------------------


def check(target: str, module: str, config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "check", target, "--module", module, "--config.file", str(config), *extra],
        capture_output=True,
        text=True,
        timeout=60,
    )


def run(workdir: Path, with_prometheus: bool) -> dict[str, object]:
    ready = threading.Event()
    threading.Thread(target=serve_forever, args=(ready,), daemon=True).start()
    if not ready.wait(20):
        raise RuntimeError("the lab's servers did not start")
    report: dict[str, object] = {"cases": {}}
    cases: dict[str, object] = {}
    with Processes(workdir) as processes:
        deadline = time.monotonic() + 30
        exporter = start_exporter(processes, "exporter", CONFIG, workdir, deadline)
        config = workdir / "exporter.yml"
        for name, target, module in CASES:
            as_json = check(target, module, config, "--json", "--no-diagnose")
            human = check(target, module, config, "--no-diagnose")
            query = urllib.parse.urlencode({"target": target, "module": module})
            status, body = http_get(f"http://{exporter}/probe?{query}", timeout=15)
            cases[name] = {
                "exit": as_json.returncode,
                "json": json.loads(as_json.stdout) if as_json.stdout.startswith("{") else as_json.stderr,
                "human": human.stdout,
                "probe_status": status,
                "probe": body.decode(errors="replace"),
            }
        http_get(f"http://{exporter}/metrics", timeout=30)  # the status page shows the latest scrape
        status_page = http_get(f"http://{exporter}/", timeout=10)[1].decode(errors="replace")
        report["status_page"] = status_page
        # "this exporter cannot reach IPv6: no route" is logged once per process, however many names say it.
        log_text = (workdir / "exporter.log").read_text(errors="replace")
        report["no_route_log_lines"] = log_text.count("cannot reach IPv6: no route")
        # The same configured targets probed by worker processes: results (per-address outcomes included) cross
        # a process boundary.
        port = free_port()
        processes.start(
            "exporter-workers",
            [
                sys.executable,
                "-m",
                "exporter",
                f"--config.file={config}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--runtime.probe-processes=2",
                "--log.level=warn",
            ],
        )
        wait_until_ready(f"http://127.0.0.1:{port}/-/ready", processes, time.monotonic() + 30)
        try:  # until the workers are up and the scrape has every target; reported, not raised
            workers_metrics = eventually(
                processes.watching(
                    lambda: http_get(f"http://127.0.0.1:{port}/metrics", timeout=30)[1].decode(errors="replace")
                ),
                until=lambda text: text.count("probe_addresses_state{") >= 18,
                what="every target's address states through the probe workers",
                interval=0.25,
            )
        except GaveUp as gave_up:
            workers_metrics = gave_up.last
        report["workers_metrics"] = workers_metrics
        diagnosed = check(f"v6-drop.test:{TCP_PORT}", "tcp_all_diagnose", config, "--json")
        cases["diagnose"] = {"exit": diagnosed.returncode, "json": json.loads(diagnosed.stdout)}
        # Both addresses fail: each is traced (at once), each with its hop table.
        both = check(f"all-fail.test:{TCP_PORT}", "tcp_all_diagnose", config, "--json")
        both_human = check(f"all-fail.test:{TCP_PORT}", "tcp_all_diagnose", config)
        cases["diagnose_all_failing"] = {
            "exit": both.returncode,
            "json": json.loads(both.stdout),
            "human": both_human.stdout,
        }
        report["cases"] = cases
        if with_prometheus:
            report["prometheus"] = prometheus_part(processes, workdir, exporter)
    return report


def prometheus_part(processes: Processes, workdir: Path, exporter: str) -> dict[str, object]:
    """A real Prometheus scrapes /metrics (the configured targets) and evaluates the shipped rules."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            rule["for"] = "1s"
    (workdir / "addresses.rules.yml").write_text(yaml.safe_dump(rules, sort_keys=False))
    config = {
        "global": {"scrape_interval": "3s", "scrape_timeout": "3s", "evaluation_interval": "1s"},
        "rule_files": [str(workdir / "addresses.rules.yml")],
        "scrape_configs": [{"job_name": "connectivity", "static_configs": [{"targets": [exporter]}]}],
    }
    api = start_prometheus(processes, workdir, config, time.monotonic() + 30)
    wanted = {("ConnectivityIPv6Broken", "v6-drop.test:8080"), ("ConnectivityAddressesFailing", "pool.test:8080")}
    try:  # reported, not raised: the test names the alerts that did not fire
        firing = eventually(
            processes.watching(lambda: [a for a in api.alerts() if a["state"] == "firing"]),
            until=lambda firing: wanted <= {(a["labels"]["alertname"], a["labels"]["target"]) for a in firing},
            what=f"alerts {sorted(wanted)} firing",
            interval=0.5,
        )
    except GaveUp as gave_up:
        firing = gave_up.last
    panels = [q for q in dashboard_queries() if re.search(r"\bprobe_(address_|addresses|happy_eyeballs_)", q["expr"])]
    dashboard = []
    for query in panels:
        try:
            count = len(api.query(query["promql"]))
        except RuntimeError as exc:
            dashboard.append({**query, "count": 0, "error": str(exc)})
        else:
            dashboard.append({**query, "count": count})
    return {
        "dashboard": dashboard,
        "alerts": firing,
        "happy_eyeballs": api.query("probe_happy_eyeballs_seconds"),
        "states": api.query("probe_addresses_state == 1"),
        "address_success": api.query("probe_address_success"),
    }


def main() -> int:
    workdir = Path(sys.argv[1])
    try:
        report = run(workdir, "--prometheus" in sys.argv[2:])
    except Exception as exc:  # reported to the test as JSON, with the logs left in workdir
        report = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
