"""Many vantage points, one view, end to end: three sites, each with its own exporter and its own Prometheus in
agent mode remote-writing to a central Prometheus that runs the shipped vantage rules and sends to Alertmanager.

    ip netns exec PREFIXc python3 -m tests.scenarios.vantage PREFIX WORKDIR

Runs inside the central namespace PREFIXc that tests/test_vantage_e2e.py built, with one veth link to each
site namespace PREFIXa, PREFIXb, PREFIXc... (see SITES). The shared targets listen on TARGET_IP inside the
central namespace; nftables there drops one target for every site and another for site "a" only. Then site
"c"'s exporter is killed, and at last the central Prometheus is stopped and started again: the agents must
send what they buffered meanwhile. Prints one JSON report on stdout (tests/test_vantage_e2e.py asserts on it);
every wait is bounded; every process started is stopped on exit.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
import socket
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from typing import TypeVar

import yaml

from tests.helpers.e2e_stack import REPO, Processes, binary, free_port, http_get, readdress, wait_until_ready
from tests.helpers.eventually import eventually

T = TypeVar("T")

VANTAGE = REPO / "deploy" / "vantage"
CONNECTIVITY_RULES = REPO / "deploy" / "prometheus" / "rules" / "connectivity.rules.yml"
SITES = {"a": 1, "b": 2, "c": 3}  # vantage point name -> its link number (10.200.N.0/24)
TARGET_IP = "192.0.2.10"  # on the central namespace's lo; reached by every site through its link
OK, DOWN_EVERYWHERE, DOWN_FROM_A = (f"{TARGET_IP}:{port}" for port in (8001, 8002, 8003))
EXPORTER_PORT, AGENT_PORT = 9816, 9091  # inside each site namespace
# The sites' scrape interval (and timeout). The probes' timeout is 1 s and the exporter answers 1 s before the
# scrape timeout: a loaded machine gets slack before a scrape fails (which would be a SiteBlind of its own).
SCRAPE_SECONDS = 3
FOR_SECONDS = 2
FOR = f"{FOR_SECONDS}s"  # every `for:` of the shipped rules, shortened so alerts fire within seconds
STARTUP_SECONDS = 30
SETTLE_SECONDS = 90  # generous bound on each wait for data or alerts
BUFFERED_SECONDS = 12  # the agents must hold this much unsent data before the central one comes back
POLL_SECONDS = 0.5
CENTRAL_URL = "https://grafana.example/d/connectivity-vantage"


def site_ip(site: str) -> str:
    return f"10.200.{SITES[site]}.2"


def central_ip(site: str) -> str:
    return f"10.200.{SITES[site]}.1"


def nft_rules(table: str) -> str:
    return f"""
table inet {table} {{
  chain input {{
    type filter hook input priority 0; policy accept;
    ip daddr {TARGET_IP} tcp dport 8002 drop
    ip saddr {site_ip("a")} ip daddr {TARGET_IP} tcp dport 8003 drop
  }}
}}
"""


# --- targets ------------------------------------------------------------------------------------------


def serve_targets(stack: ExitStack) -> None:
    """Listeners on every target port: accept and close at once (the firewall, not the server, fails them)."""
    for target in (OK, DOWN_EVERYWHERE, DOWN_FROM_A):
        host, port = target.rsplit(":", 1)
        sock = stack.enter_context(socket.socket())
        sock.bind((host, int(port)))
        sock.listen(64)
        threading.Thread(target=_accept_and_close, args=(sock,), daemon=True).start()
        stack.callback(_shutdown, sock)


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)


def _accept_and_close(sock: socket.socket) -> None:
    while True:
        try:
            connection, _ = sock.accept()
        except OSError:
            return
        connection.close()


# --- the processes ------------------------------------------------------------------------------------


def short_for(source: Path, destination: Path) -> Path:
    """A copy of a shipped rule file evaluated every second with every ``for:`` set to FOR."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        group["interval"] = "1s"
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = FOR
    destination.write_text(yaml.safe_dump(rules, sort_keys=False))
    return destination


def start_exporter(processes: Processes, prefix: str, site: str, workdir: Path) -> None:
    config = workdir / f"exporter-{site}.yml"
    config.write_text(
        "global: {scrape_timeout_offset: 1s}\nmodules:\n  tcp_connect: {prober: tcp, timeout: 1s}\n"
        "targets:\n"
        + "".join(f"  - {{target: '{target}', module: tcp_connect}}\n" for target in (OK, DOWN_EVERYWHERE, DOWN_FROM_A))
    )
    processes.start(
        f"exporter-{site}",
        [
            "ip",
            "netns",
            "exec",
            f"{prefix}{site}",
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={config}",
            f"--web.listen-address=0.0.0.0:{EXPORTER_PORT}",
            f"--probe.vantage={site}",
            f"--web.central-url={CENTRAL_URL}",
            "--log.level=warn",
        ],
    )


def start_agent(processes: Processes, prefix: str, site: str, central_port: int, workdir: Path) -> None:
    """The shipped site-agent.yml with this site's name, scraping fast, sending to the central namespace."""
    config = yaml.safe_load((VANTAGE / "site-agent.yml").read_text())
    config["global"].update(
        scrape_interval=f"{SCRAPE_SECONDS}s", scrape_timeout=f"{SCRAPE_SECONDS}s", external_labels={"vantage": site}
    )
    readdress(
        config,
        {
            "localhost:9816": f"127.0.0.1:{EXPORTER_PORT}",
            "central-prometheus:9090": f"{central_ip(site)}:{central_port}",
        },
    )
    config["remote_write"][0]["queue_config"].update(batch_send_deadline="1s", min_backoff="100ms", max_backoff="1s")
    path = workdir / f"agent-{site}.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    processes.start(
        f"agent-{site}",
        [
            "ip",
            "netns",
            "exec",
            f"{prefix}{site}",
            binary("prometheus"),
            "--enable-feature=agent",
            f"--config.file={path}",
            f"--storage.agent.path={workdir / f'agent-{site}'}",
            f"--web.listen-address=0.0.0.0:{AGENT_PORT}",
            "--log.level=warn",
        ],
        cwd=workdir,
    )


def start_central(
    processes: Processes, name: str, port: int, alertmanager_port: int, workdir: Path, deadline: float
) -> str:
    """The shipped central.yml and rules (fast), with the remote-write receiver, listening on every link."""
    config = yaml.safe_load((VANTAGE / "central.yml").read_text())
    config["global"].update(evaluation_interval="1s", scrape_interval="1s")
    config["rule_files"] = [
        str(short_for(VANTAGE / "rules" / "vantage.rules.yml", workdir / "vantage.rules.yml")),
        str(short_for(CONNECTIVITY_RULES, workdir / "connectivity.rules.yml")),
    ]
    readdress(config, {"alertmanager:9093": f"127.0.0.1:{alertmanager_port}", "localhost:9090": f"127.0.0.1:{port}"})
    path = workdir / "central.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    processes.start(
        name,
        [
            binary("prometheus"),
            f"--config.file={path}",
            f"--storage.tsdb.path={workdir / 'central'}",
            f"--web.listen-address=0.0.0.0:{port}",
            "--web.enable-remote-write-receiver",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{base}/-/ready", processes, deadline)
    return base


def start_alertmanager(processes: Processes, port: int, workdir: Path, deadline: float) -> str:
    """The shipped vantage alertmanager.yml; its webhooks point at a closed loopback port (nothing is sent out)."""
    config = yaml.safe_load((VANTAGE / "alertmanager.yml").read_text())
    readdress(config, {"alert-receiver:5001": f"127.0.0.1:{free_port()}"})
    config["route"]["group_wait"] = "0s"
    path = workdir / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    processes.start(
        "alertmanager",
        [
            binary("prometheus-alertmanager", "alertmanager"),
            f"--config.file={path}",
            f"--storage.path={workdir / 'am'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ],
        cwd=workdir,
    )
    base = f"http://127.0.0.1:{port}"
    wait_until_ready(f"{base}/-/ready", processes, deadline)
    return base


# --- reading the central Prometheus, Alertmanager and the agents --------------------------------------


def get_json(url: str) -> dict | list:
    status, body = http_get(url, timeout=5.0)
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}: {body[:300]!r}")
    return json.loads(body)


def query(base: str, expr: str, at: float | None = None) -> list[dict]:
    params = {"query": expr, **({"time": f"{at:.3f}"} if at is not None else {})}
    return get_json(f"{base}/api/v1/query?{urllib.parse.urlencode(params)}")["data"]["result"]


def rules_evaluated_at(base: str) -> float:
    """When the least recently evaluated rule group of a Prometheus was last evaluated (Unix seconds)."""
    groups = get_json(f"{base}/api/v1/rules")["data"]["groups"]
    if not groups:
        raise RuntimeError("no rule groups loaded yet")
    return min(rfc3339_seconds(group["lastEvaluation"]) for group in groups)


def rfc3339_seconds(stamp: str) -> float:
    """Prometheus' RFC 3339 UTC time stamps (nanoseconds; Python parses at most microseconds) in seconds."""
    whole, fraction = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?Z", stamp).groups()
    parsed = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return parsed.timestamp() + float(fraction or 0)


def firing(base: str) -> list[list]:
    """The central Prometheus' firing alerts as sorted [alertname, target, vantage] triples."""
    alerts = get_json(f"{base}/api/v1/alerts")["data"]["alerts"]
    return sorted(
        [a["labels"]["alertname"], a["labels"].get("target", ""), a["labels"].get("vantage", "")]
        for a in alerts
        if a["state"] == "firing"
    )


def alertmanager_view(base: str) -> dict:
    """{"active": [...], "suppressed": [...]} triples: what would notify, and what is inhibited."""
    out: dict = {"active": [], "suppressed": []}
    for alert in get_json(f"{base}/api/v2/alerts"):
        labels = alert["labels"]
        triple = [labels["alertname"], labels.get("target", ""), labels.get("vantage", "")]
        state = alert["status"]["state"]
        if state == "suppressed" and not alert["status"]["inhibitedBy"]:
            state = "silenced"
        out.setdefault(state, []).append(triple)
    return {key: sorted(value) for key, value in out.items()}


def metric_values(url: str) -> dict[str, float]:
    """{sample name with labels: value} of a /metrics page (for the agents' own metrics)."""
    status, body = http_get(url, timeout=5.0)
    if status != 200:
        raise RuntimeError(f"GET {url}: HTTP {status}")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def agent_metric(site: str, name: str) -> float:
    return agent_metric_at(f"http://{site_ip(site)}:{AGENT_PORT}", name)


def agent_metric_at(base: str, name: str) -> float:
    """A Prometheus' own metric, summed over its label sets (e.g. over remote-write queues)."""
    values = metric_values(f"{base}/metrics")
    return sum(value for key, value in values.items() if re.fullmatch(rf"{name}(\{{.*\}})?", key))


def wait_for(what: str, probe: Callable[[], T], done: Callable[[T], object], processes: Processes) -> T:
    """``eventually`` with this scenario's limits: a component not answering yet (RuntimeError: the central
    Prometheus restarting) is "not yet"; a process of the stack that exited ends the wait at once."""
    return eventually(
        processes.watching(probe),
        until=done,
        what=what,
        timeout=SETTLE_SECONDS,
        interval=POLL_SECONDS,
        ignoring=(RuntimeError,),
    )


# --- the scenario -------------------------------------------------------------------------------------


def expected_firing(blind_c: bool) -> list[list]:
    everywhere = ["a", "b"] if blind_c else ["a", "b", "c"]
    alerts = [
        ["TargetDownEverywhere", DOWN_EVERYWHERE, ""],
        ["TargetDownFromSite", DOWN_FROM_A, "a"],
        ["ConnectivityPortFiltered", DOWN_FROM_A, "a"],
        *(["ConnectivityPortFiltered", DOWN_EVERYWHERE, site] for site in everywhere),
    ]
    if blind_c:
        alerts += [["SiteBlind", "", "c"], ["ConnectivityExporterDown", "", "c"]]
    return sorted(alerts)


def expected_pages(blind_c: bool) -> list[list]:
    pages = [["TargetDownEverywhere", DOWN_EVERYWHERE, ""], ["TargetDownFromSite", DOWN_FROM_A, "a"]]
    return sorted(pages + ([["SiteBlind", "", "c"]] if blind_c else []))


def matrix(base: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for series in query(base, "target_vantage:probe_success:max"):
        out.setdefault(series["metric"]["target"], {})[series["metric"]["vantage"]] = float(series["value"][1])
    return out


def by_target(base: str, expr: str) -> dict[str, float]:
    return {series["metric"]["target"]: float(series["value"][1]) for series in query(base, expr)}


def dashboard_cells(base: str) -> dict[str, dict[str, str]]:
    """The dashboard's matrix query (variables at "All") as {row: {vantage: cell}}."""
    dashboard = json.loads((VANTAGE / "grafana" / "vantage.json").read_text())
    panel = next(p for p in dashboard["panels"] if p["title"].startswith("Reachability matrix"))
    expr = re.sub(r"\$(vantage|target)\b", ".*", panel["targets"][0]["expr"])
    cells: dict[str, dict[str, str]] = {}
    for series in query(base, expr):
        cells.setdefault(series["metric"]["row"], {})[series["metric"]["vantage"]] = series["metric"]["cell"]
    return cells


def dashboard_results(base: str) -> dict[str, int]:
    """Every query of the dashboard (variables at "All") -> how many series it returns now; and each
    ``label_values(selector, label)`` variable -> how many values it offers."""
    dashboard = json.loads((VANTAGE / "grafana" / "vantage.json").read_text())
    out = {}
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = re.sub(r"\$(vantage|target)\b", ".*", target["expr"])
            out[f"{panel['title']} / {target['refId']}"] = len(query(base, expr))
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]["query"]).groups()
            selector = re.sub(r"\$(vantage|target)\b", ".*", selector)
            values = get_json(f"{base}/api/v1/label/{label}/values?{urllib.parse.urlencode({'match[]': selector})}")
            out[f"variable {variable['name']}"] = len(values["data"])
    return out


def phase(report: dict, name: str, central: str, alertmanager: str, blind_c: bool, processes: Processes) -> None:
    report[name] = {}
    want = expected_firing(blind_c)
    wait_for(
        f"{name}: the central Prometheus' firing alerts to be {want}",
        lambda: firing(central),
        lambda got: got == want,
        processes,
    )
    pages = expected_pages(blind_c)
    suppressed = sorted(alert for alert in want if alert not in pages)
    report[name]["alertmanager"] = wait_for(
        f"{name}: Alertmanager to notify {pages} and inhibit the rest",
        lambda: alertmanager_view(alertmanager),
        lambda got: got.get("active") == pages and got.get("suppressed") == suppressed,
        processes,
    )
    # Only them: once every rule group has been evaluated again a whole `for:` later, an alert that was merely
    # pending a moment ago would be firing now; the set must still (or again) be exactly that.
    seen = time.time()
    wait_for(
        f"{name}: every central rule group evaluated {FOR} after {seen:.3f}",
        lambda: rules_evaluated_at(central),
        lambda evaluated: evaluated >= seen + FOR_SECONDS,
        processes,
    )
    report[name]["firing"] = wait_for(
        f"{name}: the firing alerts to stay {want}", lambda: firing(central), lambda got: got == want, processes
    )
    report[name]["matrix"] = matrix(central)
    report[name]["failing"] = by_target(central, "target:probe_vantage_points_failing:count")
    report[name]["reporting"] = by_target(central, "target:probe_vantage_points:count")
    report[name]["cells"] = dashboard_cells(central)
    report[name]["dashboard"] = dashboard_results(central)


def measure(report: dict, central: str) -> None:
    """Series per target per site, and what a sample costs on the wire (the agents' own counters)."""
    # What the agents send (not the central recording rules' series, whose names hold a colon).
    per_target = query(central, f'count by (vantage) ({{target="{OK}", vantage!="", __name__!~".*:.*"}})')
    per_site = query(central, 'count by (vantage) ({job="connectivity", vantage!="", __name__!~"ALERTS.*"})')
    report["series_per_target"] = {s["metric"]["vantage"]: int(s["value"][1]) for s in per_target}
    report["series_per_site"] = {s["metric"]["vantage"]: int(s["value"][1]) for s in per_site}
    report["targets_per_site"] = 3
    report["remote_write"] = {}
    for site in SITES:
        sent_bytes = agent_metric(site, "prometheus_remote_storage_bytes_total")
        samples = agent_metric(site, "prometheus_remote_storage_samples_total")
        report["remote_write"][site] = {"bytes": sent_bytes, "samples": samples}


def backfill(report: dict, workdir: Path, central_port: int, alertmanager_port: int, processes: Processes) -> None:
    """Stop the central Prometheus, let the agents buffer, start it again: the gap must fill in."""
    central_process = processes.started.pop("central")[0]
    central_process.terminate()
    central_process.wait(timeout=30)
    stopped = time.time()

    def unsent_seconds() -> float:
        return min(
            agent_metric(site, "prometheus_remote_storage_highest_timestamp_in_seconds")
            - agent_metric(site, "prometheus_remote_storage_queue_highest_sent_timestamp_seconds")
            for site in ("a", "b")
        )

    report["buffered_seconds"] = wait_for(
        f"the agents to buffer {BUFFERED_SECONDS}s of samples",
        unsent_seconds,
        lambda s: s >= BUFFERED_SECONDS and time.time() - stopped >= BUFFERED_SECONDS,
        processes,
    )
    restarted = time.time()
    central = start_central(
        processes, "central-again", central_port, alertmanager_port, workdir, time.monotonic() + STARTUP_SECONDS
    )
    report["samples_retried"] = {
        site: agent_metric(site, "prometheus_remote_storage_samples_retried_total") for site in ("a", "b")
    }
    window = max(1, int(restarted - stopped))
    # Samples of the OK target with timestamps inside the outage, per site that kept running.
    expr = f'count_over_time(probe_success{{target="{OK}"}}[{window}s])'
    expected = max(2, window // SCRAPE_SECONDS - 1)  # the agents scraped all along; one spare (generous)

    def gap_samples() -> dict[str, float]:
        return {s["metric"]["vantage"]: float(s["value"][1]) for s in query(central, expr, at=restarted)}

    report["backfill"] = {
        "window_seconds": window,
        "samples_needed": expected,
        "samples": wait_for(
            "the central Prometheus to hold the buffered samples of the outage",
            gap_samples,
            lambda got: all(got.get(site, 0) >= expected for site in ("a", "b")),
            processes,
        ),
    }


def scenario(prefix: str, workdir: Path) -> dict:
    report: dict = {"prefix": prefix}
    with ExitStack() as stack:
        subprocess.run(["nft", "-f", "-"], input=nft_rules(f"{prefix}t"), text=True, check=True, timeout=10)
        stack.callback(
            subprocess.run, ["nft", "delete", "table", "inet", f"{prefix}t"], capture_output=True, timeout=10
        )
        serve_targets(stack)
        processes = stack.enter_context(Processes(workdir))
        deadline = time.monotonic() + STARTUP_SECONDS
        alertmanager_port, central_port = free_port(), free_port()
        alertmanager = start_alertmanager(processes, alertmanager_port, workdir, deadline)
        central = start_central(processes, "central", central_port, alertmanager_port, workdir, deadline)
        for site in SITES:
            start_exporter(processes, prefix, site, workdir)
            start_agent(processes, prefix, site, central_port, workdir)
        for site in SITES:
            wait_until_ready(f"http://{site_ip(site)}:{EXPORTER_PORT}/-/ready", processes, deadline)
            wait_until_ready(f"http://{site_ip(site)}:{AGENT_PORT}/-/ready", processes, deadline)
        status, page = http_get(f"http://{site_ip('a')}:{EXPORTER_PORT}/")
        report["status_page_links_central"] = status == 200 and f'href="{CENTRAL_URL}"' in page.decode()

        phase(report, "three_sites", central, alertmanager, blind_c=False, processes=processes)

        exporter_c = processes.started.pop("exporter-c")[0]  # killed on purpose: not a failure
        exporter_c.kill()
        exporter_c.wait(timeout=30)
        phase(report, "site_c_blind", central, alertmanager, blind_c=True, processes=processes)

        start_exporter(processes, prefix, "c", workdir)  # the site comes back: SiteBlind resolves
        phase(report, "site_c_back", central, alertmanager, blind_c=False, processes=processes)

        measure(report, central)
        backfill(report, workdir, central_port, alertmanager_port, processes)
    return report


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("prefix")
    parser.add_argument("workdir", type=Path)
    args = parser.parse_args()
    try:
        report = scenario(args.prefix, args.workdir)
    except Exception as exc:  # the report carries the reason; the logs stay in workdir
        report = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
