"""End-to-end scenarios with real processes: the exporter, Prometheus running the shipped configs and
rules, Alertmanager with the shipped routing, and the shipped webhook logger as its receiver.

    python3 -m tests.scenarios.e2e_prometheus stack WORKDIR [--netns]
    python3 -m tests.scenarios.e2e_prometheus sharding WORKDIR

Prints one JSON report on stdout; tests/test_e2e_prometheus.py asserts on it. With --netns the
scenario must already run inside a private network namespace (``unshare -n``): it brings up ``lo``
and adds nftables rules there so that the states a loopback-only test cannot produce (timeout,
unreachable, dns_error) exist too. All traffic stays on loopback inside that namespace.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
from contextlib import ExitStack
from pathlib import Path

import yaml

from tests.helpers.e2e_stack import (
    ALERTMANAGER_YML,
    PROMETHEUS_YML,
    SHARDED_YML,
    WEBHOOK_LOGGER,
    Processes,
    PrometheusApi,
    binary,
    dashboard_queries,
    dashboard_variable_queries,
    fast_global,
    free_port,
    http_get,
    needs_smtp,
    point_file_sd,
    readdress,
    rules_with_short_for,
    start_exporter,
    start_prometheus,
    wait_until_ready,
)
from tests.helpers.eventually import GaveUp, eventually

STARTUP_SECONDS = 20
SETTLE_SECONDS = 40  # bound on waiting for data and alerts once everything runs
POLL_SECONDS = 0.5

# Inside the namespace: 127.0.0.2:80 silently dropped, 127.0.0.3:80 rejected with an ICMP error.
DROPPED, PROHIBITED = "127.0.0.2:80", "127.0.0.3:80"
NFT_RULES = """
table inet e2e {
  chain output {
    type filter hook output priority 0; policy accept;
    ip daddr 127.0.0.2 tcp dport 80 drop
    ip daddr 127.0.0.3 tcp dport 80 reject with icmp type admin-prohibited
  }
}
"""
UNRESOLVABLE = "no-such-host.invalid:80"  # resolved only inside the namespace, where no resolver is reachable
# TCP case -> the alert that must fire for it (with `state` = the case).
TCP_ALERTS = {
    "refused": "ConnectivityPortRefused",
    "timeout": "ConnectivityPortFiltered",
    "unreachable": "ConnectivityHostUnreachable",
    "dns_error": "ConnectivityDnsFailure",
}


def smtp_prober_available() -> bool:
    from exporter.probers.table import PROBERS

    return "smtp" in PROBERS


def setup_namespace() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    subprocess.run(["nft", "-f", "-"], input=NFT_RULES, text=True, check=True, timeout=10)


def listening_socket(stack: ExitStack, greeting: bytes = b"", read_until_closed: bool = False) -> int:
    """A port in state "open" for the whole run: connections are accepted, sent ``greeting`` and closed at
    once, so the backlog never fills up (a full backlog drops SYNs: the port would turn into "timeout")."""
    sock = stack.enter_context(socket.socket())
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    threading.Thread(target=_accept_and_close, args=(sock, greeting, read_until_closed), daemon=True).start()
    stack.callback(_wake_accept, sock)  # runs before the socket's close (LIFO)
    return sock.getsockname()[1]


def _wake_accept(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)  # a blocked accept() returns on shutdown, not on close
    except OSError:
        pass


def _accept_and_close(sock: socket.socket, greeting: bytes, read_until_closed: bool) -> None:
    while True:
        try:
            connection, _ = sock.accept()
        except OSError:  # the listening socket was shut down: the scenario is over
            return
        with connection:
            try:
                if greeting:
                    connection.sendall(greeting)
                # tcp.mtu_check's data must find the connection open (a server closing at once resets it).
                connection.settimeout(5)
                while read_until_closed and connection.recv(65536):
                    pass
            except OSError:
                pass  # the prober hung up first, or went quiet for 5 s


def closed_port() -> int:
    return free_port()  # bound once, then released: nothing listens there


# --- the stack scenario -------------------------------------------------------------------------------


def stack_scenario(workdir: Path, netns: bool) -> dict:
    report: dict = {"netns": netns, "smtp": smtp_prober_available(), "alertmanager": False}
    started = time.monotonic()
    with ExitStack() as stack:
        if netns:
            setup_namespace()
        open_port = listening_socket(stack)
        reading_port = listening_socket(stack, read_until_closed=True)
        refused_port = closed_port()

        # Pattern (1): targets in the exporter's config, probed on /metrics; `case` names the expectation.
        cases = {
            "open": (f"127.0.0.1:{open_port}", "tcp_connect"),
            "refused": (f"127.0.0.1:{refused_port}", "tcp_connect"),
            "continuous": (f"127.0.0.1:{open_port}", "tcp_every_1s"),  # background probing (docs/continuous.md)
            "mtu": (f"127.0.0.1:{reading_port}", "tcp_mtu"),  # the dashboard's Path MTU table (docs/mtu.md)
        }
        if netns:
            cases |= {
                "timeout": (DROPPED, "tcp_short"),
                "unreachable": (PROHIBITED, "tcp_connect"),
                "dns_error": (UNRESOLVABLE, "tcp_connect"),
            }
        smtp_modules = ""
        if report["smtp"]:
            smtp_cases, smtp_modules = start_smtp_servers(stack, workdir)
            cases |= smtp_cases
        targets = "\n".join(
            f"  - {{target: '{target}', module: {module}, labels: {{case: {case}}}}}"
            for case, (target, module) in cases.items()
        )
        exporter_config = f"""
global: {{scrape_timeout_offset: 500ms}}
modules:
  tcp_connect: {{prober: tcp, timeout: 2s, tcp: {{diagnose: on_failure}}}}  # the dashboard's path columns
  tcp_short: {{prober: tcp, timeout: 300ms}}
  tcp_every_1s: {{prober: tcp, timeout: 2s, interval: 1s}}
  tcp_mtu: {{prober: tcp, timeout: 2s, tcp: {{mtu_check: true}}}}
{smtp_modules}
targets:
{targets}
"""
        # Pattern (2): targets for /probe in a file_sd file; the second has no module label (default).
        file_sd = workdir / "targets.yml"
        file_sd.write_text(
            yaml.safe_dump(
                [
                    {"targets": [f"127.0.0.1:{open_port}"], "labels": {"module": "tcp_connect", "case": "probe_open"}},
                    {"targets": [f"127.0.0.1:{refused_port}"], "labels": {"case": "probe_refused"}},
                ]
            )
        )
        report["cases"] = {case: target for case, (target, _) in cases.items()}
        report["probe_cases"] = {"probe_open": f"127.0.0.1:{open_port}", "probe_refused": f"127.0.0.1:{refused_port}"}

        processes = stack.enter_context(Processes(workdir))
        deadline = time.monotonic() + STARTUP_SECONDS
        exporter = start_exporter(processes, "exporter", exporter_config, workdir, deadline)
        report["exporter"] = exporter

        addresses = {"exporter:9816": exporter}
        alertmanager = start_alertmanager(processes, workdir, deadline)
        if alertmanager:
            report["alertmanager"] = True
            addresses["alertmanager:9093"] = alertmanager
        config = yaml.safe_load(PROMETHEUS_YML.read_text())
        fast_global(config)
        readdress(config, addresses)
        if not alertmanager:
            config.pop("alerting", None)
        config["rule_files"] = [str(rules_with_short_for(workdir / "rules.yml"))]
        point_file_sd(config, [str(file_sd)])
        api = start_prometheus(processes, workdir, config, deadline)
        report["startup_seconds"] = round(time.monotonic() - started, 2)

        # Mail-domain panels need MX records from a DNS server: tests/test_maildomain_netns.py runs those; the
        # every-address panels names with several addresses: tests/test_addresses_netns.py runs those; the router
        # that reports a smaller path MTU needs routers: tests/test_mtu_paths.py checks that series.
        queries = [query for query in dashboard_queries() if not re.search(NEEDS_ANOTHER_NETWORK, query["expr"])]
        variables = dashboard_variable_queries()
        # Until everything the tests look at is there; if it never is, the report holds the last snapshot and each
        # test says what is missing from it.
        try:
            snapshot = eventually(
                processes.watching(lambda: stack_snapshot(api, queries, variables, alertmanager, processes)),
                until=lambda snapshot: stack_complete(snapshot, report),
                what="every case's series, alerts, dashboard data and notifications",
                timeout=SETTLE_SECONDS,
                interval=POLL_SECONDS,
            )
        except GaveUp as gave_up:
            snapshot = gave_up.last
        report.update(snapshot)
        report["settle_seconds"] = round(time.monotonic() - started - report["startup_seconds"], 2)
        report["prometheus_targets"] = [
            {
                "job": t["labels"].get("job"),
                "target": t["labels"].get("target"),
                "health": t["health"],
                "error": t["lastError"],
            }
            for t in api.targets()
        ]
    report["total_seconds"] = round(time.monotonic() - started, 2)
    return report


SMTP_SERVER_NAME = "mx.e2e.test"
ADDRESS_OR_MAIL_DOMAIN = r"\bprobe_(mx_|mail_domain_|address_|addresses|happy_eyeballs_)"
# MTA-STS, TLS-RPT and DANE need DNS, an HTTPS policy host and a signed zone: their panels are queried in a real
# Prometheus inside the mail TLS labs (tests/test_mta_sts_netns.py, tests/test_dane_netns.py).
MAIL_TLS_POLICY = r"\bprobe_(mta_sts_|dane_|tls_rpt_)"
NEEDS_ANOTHER_NETWORK = ADDRESS_OR_MAIL_DOMAIN + "|" + MAIL_TLS_POLICY + r"|\bprobe_path_mtu_reported_by_info\b"
BLOCKED_GREETING = b"554 5.7.1 Service unavailable; client host blocked using a test block list\r\n"


def start_smtp_servers(stack: ExitStack, workdir: Path) -> tuple[dict, str]:
    """aiosmtpd with STARTTLS and a certificate from a test CA (state ok, every SMTP/TLS family has data),
    and a server that greets with 554 (state banner_rejected: the SmtpGreetingRejected alert)."""
    import ssl

    import trustme
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Sink

    ca = trustme.CA()
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(SMTP_SERVER_NAME).configure_cert(context)
    port = free_port()
    controller = Controller(
        Sink(), hostname="127.0.0.1", port=port, server_hostname=SMTP_SERVER_NAME, tls_context=context
    )
    controller.start()
    stack.callback(controller.stop)
    blocked_port = listening_socket(stack, greeting=BLOCKED_GREETING)
    modules = f"""  smtp_starttls:
    prober: smtp
    timeout: 3s
    smtp:
      ehlo: probe.e2e.test
      starttls: required
      tls_config: {{ca_file: '{ca_file}', server_name: {SMTP_SERVER_NAME}}}
      mail_from: probe@e2e.test
      rcpt_to: postmaster@e2e.test
"""
    cases = {
        "smtp_ok": (f"127.0.0.1:{port}", "smtp_starttls"),
        "smtp_blocked": (f"127.0.0.1:{blocked_port}", "smtp_starttls"),
    }
    return cases, modules


def start_alertmanager(processes: Processes, workdir: Path, deadline: float) -> str | None:
    """Alertmanager with the shipped routing, its webhooks pointed at the shipped logger on loopback."""
    alertmanager = binary("prometheus-alertmanager", "alertmanager")
    if alertmanager is None:
        return None
    webhook_port = free_port()
    processes.start("webhook", [sys.executable, "-u", str(WEBHOOK_LOGGER), f"127.0.0.1:{webhook_port}"])
    config = yaml.safe_load(ALERTMANAGER_YML.read_text())
    readdress(config, {"alert-receiver:5001": f"127.0.0.1:{webhook_port}"})
    config["route"]["group_wait"] = "0s"  # notify at once: the test waits seconds, not the shipped 30 s
    config_file = workdir / "alertmanager.yml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    processes.start(
        "alertmanager",
        [
            alertmanager,
            f"--config.file={config_file}",
            f"--storage.path={workdir / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    wait_until_ready(f"http://127.0.0.1:{port}/-/ready", processes, deadline)
    return f"127.0.0.1:{port}"


def stack_snapshot(
    api: PrometheusApi, queries: list[dict], variables: list[dict], alertmanager: str | None, processes: Processes
) -> dict:
    snapshot: dict = {
        "states": [series["metric"] for series in api.query("probe_tcp_state == 1")],
        "smtp_states": [series["metric"] for series in api.query("probe_smtp_state == 1")],
        "dashboard": [],
        "variables": {},
        "alerts": [
            {"labels": alert["labels"], "state": alert["state"], "annotations": alert["annotations"]}
            for alert in api.alerts()
        ],
        "alertmanager_alerts": [],
        "notifications": [],
    }
    for query in queries:
        entry = dict(query)
        try:
            result = api.query(query["promql"])
            entry["count"] = len(result)
        except RuntimeError as exc:
            entry["count"], entry["error"] = 0, str(exc)
        snapshot["dashboard"].append(entry)
    for variable in variables:
        snapshot["variables"][variable["name"]] = api.label_values(variable["label"], variable["match"])
    if alertmanager:
        status, body = http_get(f"http://{alertmanager}/api/v2/alerts", timeout=5.0)
        if status == 200:
            snapshot["alertmanager_alerts"] = [
                {
                    "labels": alert["labels"],
                    "state": alert["status"]["state"],
                    "receivers": [receiver["name"] for receiver in alert["receivers"]],
                }
                for alert in json.loads(body)
            ]
        # Only complete lines: the logger may be writing the next one right now.
        complete = processes.log_text("webhook").rpartition("\n")[0]
        snapshot["notifications"] = [json.loads(line) for line in complete.splitlines() if '"alertname"' in line]
    return snapshot


def stack_complete(snapshot: dict, report: dict) -> bool:
    seen_cases = {series.get("case") for series in snapshot["states"]}
    if not set(report["cases"]) | set(report["probe_cases"]) <= seen_cases:
        return False
    firing = {
        (alert["labels"]["alertname"], alert["labels"].get("case"))
        for alert in snapshot["alerts"]
        if alert["state"] == "firing"
    }
    if not all((alert, case) in firing for case, alert in TCP_ALERTS.items() if case in report["cases"]):
        return False
    if report["smtp"]:
        smtp_cases = {series.get("case") for series in snapshot["smtp_states"]}
        if not {"smtp_ok", "smtp_blocked"} <= smtp_cases or ("SmtpGreetingRejected", "smtp_blocked") not in firing:
            return False
    if any(entry["count"] == 0 for entry in snapshot["dashboard"] if report["smtp"] or not needs_smtp(entry["expr"])):
        return False
    if not all(snapshot["variables"].values()):
        return False
    if report["alertmanager"]:
        delivered = {(note["alertname"], note["target"]) for note in snapshot["notifications"]}
        if ("ConnectivityPortRefused", report["cases"]["refused"]) not in delivered:
            return False
    return True


# --- the sharding scenario ----------------------------------------------------------------------------

SHARD_TARGETS = [f"127.0.0.{host}:1" for host in range(1, 21)]  # fixed names: the split is reproducible


def sharding_scenario(workdir: Path) -> dict:
    """Two exporters behind the shipped hashmod config, one shared file_sd list of 20 targets."""
    report: dict = {"targets": SHARD_TARGETS}
    started = time.monotonic()
    with ExitStack() as stack:
        processes = stack.enter_context(Processes(workdir))
        deadline = time.monotonic() + STARTUP_SECONDS
        exporter_config = "modules:\n  tcp_connect: {prober: tcp, timeout: 1s}\n"
        exporters = [
            start_exporter(processes, f"exporter-{shard}", exporter_config, workdir, deadline) for shard in range(2)
        ]
        report["exporters"] = exporters
        file_sd = workdir / "targets.yml"
        file_sd.write_text(yaml.safe_dump([{"targets": SHARD_TARGETS, "labels": {"module": "tcp_connect"}}]))

        config = yaml.safe_load(SHARDED_YML.read_text())
        fast_global(config)
        config.pop("alerting", None)
        config.pop("rule_files", None)
        readdress(config, {"exporter-0:9816": exporters[0], "exporter-1:9816": exporters[1]})
        point_file_sd(config, [str(file_sd)])
        report["modulus"] = next(
            rule["modulus"]
            for job in config["scrape_configs"]
            for rule in job.get("relabel_configs", [])
            if rule.get("action") == "hashmod"
        )
        api = start_prometheus(processes, workdir, copy.deepcopy(config), deadline)

        def sharded() -> tuple[list, dict]:
            # One series per (target, exporter) that ever probed it in this run: a target probed by both
            # exporters, even once, shows up twice.
            series = [item["metric"] for item in api.query("count_over_time(probe_success[10m])")]
            probes = {
                item["metric"]["instance"]: float(item["value"][1])
                for item in api.query("sum by (instance) (connectivity_exporter_probes_total)")
            }
            return series, probes

        def complete(seen: tuple[list, dict]) -> bool:
            series, probes = seen
            return (
                len({s["target"] for s in series}) == len(SHARD_TARGETS) and len(probes) == 2 and all(probes.values())
            )

        try:  # if it never completes, the tests say what is missing from the last look
            series, probes = eventually(
                processes.watching(sharded),
                until=complete,
                what="every target probed by both exporters",
                timeout=SETTLE_SECONDS,
                interval=POLL_SECONDS,
            )
        except GaveUp as gave_up:
            series, probes = gave_up.last
        report["series"] = series
        report["probes_by_exporter"] = probes
        report["prometheus_targets"] = [
            {
                "job": t["labels"].get("job"),
                "instance": t["labels"].get("instance"),
                "target": t["labels"].get("target"),
                "health": t["health"],
                "error": t["lastError"],
            }
            for t in api.targets()
        ]
    report["total_seconds"] = round(time.monotonic() - started, 2)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario", choices=["stack", "sharding"])
    parser.add_argument("workdir", type=Path)
    parser.add_argument("--netns", action="store_true", help="running inside a private network namespace")
    args = parser.parse_args()
    try:
        if args.scenario == "stack":
            report = stack_scenario(args.workdir, args.netns)
        else:
            report = sharding_scenario(args.workdir)
    except Exception:
        report = {"error": traceback.format_exc()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
