"""What a target costs on /metrics: series per target against the budget of issue 23, on a running exporter.

The budget (docs/metrics.md, "What a target costs"): a plain tcp target at most 11 series, a continuous
tcp target at most 25, an SMTP target with STARTTLS at most 45. Counted on the real ``/metrics`` of a real
``python -m exporter`` process, against real listeners on loopback and a real SMTP server (aiosmtpd) with a
test certificate, once with one process and once with the continuous targets on a probe worker.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import smtp_servers
from tests.helpers.aiosmtpd_server import start_aiosmtpd, tls_config
from tests.helpers.exporter_process import free_port, http, start_exporter
from tests.helpers.metrics_text import samples
from tests.helpers.smtp_servers import Pki

servers = smtp_servers.servers  # the fixture

BUDGET = {"plain tcp": 11, "plain tcp by name": 11, "continuous tcp": 25, "continuous tcp by name": 25, "smtp": 45}


def series_per_target(text: str) -> Counter[str]:
    """Series per value of the ``case`` label (each target of the config carries one)."""
    return Counter(dict(labels)["case"] for (_, labels) in samples(text) if "case" in dict(labels))


async def scrape(port: int) -> str:
    status, body, _ = await asyncio.to_thread(http, "GET", f"http://127.0.0.1:{port}/metrics")
    assert status == 200, body
    return body


def config(listener: int, smtp_port: int, pki: Pki) -> str:
    return f"""
modules:
  tcp_connect: {{prober: tcp, timeout: 2s}}
  every_1s: {{prober: tcp, timeout: 2s, interval: 1s}}
  smtp_starttls:
    prober: smtp
    timeout: 5s
    smtp: {{starttls: required, ehlo: probe.example.com, tls_config: {tls_config(pki)}}}
targets:
  - {{target: "127.0.0.1:{listener}", module: tcp_connect, labels: {{case: plain tcp}}}}
  - {{target: "localhost:{listener}", module: tcp_connect, labels: {{case: plain tcp by name}}}}
  - {{target: "127.0.0.1:{listener}", module: every_1s, labels: {{case: continuous tcp}}}}
  - {{target: "localhost:{listener}", module: every_1s, labels: {{case: continuous tcp by name}}}}
  - {{target: "127.0.0.1:{smtp_port}", module: smtp_starttls, labels: {{case: smtp}}}}
"""


async def wait_probed(port: int, limit: float = 30.0) -> str:
    """A scrape once both continuous targets were probed at least twice (their series are all there)."""
    deadline = time.monotonic() + limit
    while True:
        text = await scrape(port)
        found = samples(text)
        done = [
            case
            for case in ("continuous tcp", "continuous tcp by name")
            if sum(v for (n, l), v in found.items() if n == "probe_results_total" and ("case", case) in l) >= 2
        ]
        if len(done) == 2 or time.monotonic() > deadline:
            return text
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("processes", [1, 2])
async def test_series_per_target_within_budget(servers, tmp_path: Path, processes: int) -> None:
    pki = Pki(tmp_path)
    smtp_port = await start_aiosmtpd(servers, pki.valid)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        config_file = tmp_path / "config.yml"
        config_file.write_text(config(listener.getsockname()[1], smtp_port, pki))
        port = free_port()
        exporter = await asyncio.to_thread(
            start_exporter,
            f"--config.file={config_file}",
            f"--web.listen-address=127.0.0.1:{port}",
            f"--runtime.probe-processes={processes}",
        )
        try:
            text = await wait_probed(port)
        finally:
            await asyncio.to_thread(exporter.stop)
    counts = series_per_target(text)
    found = samples(text)
    # The probes did what the cases say, so the counts are those of healthy targets.
    for case in BUDGET:
        assert found[("probe_success", frozenset({("case", case), *labels_of(found, case)}))] == 1, (case, text)
    over = {case: counts[case] for case, budget in BUDGET.items() if counts[case] > budget}
    assert not over, f"series per target over budget {BUDGET}: {dict(counts)}"
    # The continuous targets really carry their counters and histogram (not a budget met by losing them).
    for case in ("continuous tcp", "continuous tcp by name"):
        names = {n for (n, l) in found if ("case", case) in l}
        assert {"probe_results_total", "probe_tcp_connect_time_seconds_bucket", "probe_state_changes_total"} <= names
    states = {dict(l)["state"] for (n, l) in found if n == "probe_results_total" and ("case", "continuous tcp") in l}
    assert states == {"open", "refused", "timeout", "unreachable", "error"}  # no dns_error for an IP literal
    named = {
        dict(l)["state"] for (n, l) in found if n == "probe_results_total" and ("case", "continuous tcp by name") in l
    }
    assert named == states | {"dns_error"}
    # SMTP: STARTTLS kept at 0/1 for alerts; the dialogue's state is the one series at 1.
    smtp = {(n, frozenset(l) - labels_of(found, "smtp") - {("case", "smtp")}): v for (n, l), v in found.items()}
    assert smtp[("probe_smtp_capability", frozenset({("capability", "STARTTLS")}))] == 1
    smtp_states = [dict(l) for (n, l), v in found.items() if n == "probe_smtp_state" and ("case", "smtp") in l]
    assert [s["state"] for s in smtp_states] == ["ok"]


def labels_of(found: dict, case: str) -> frozenset:
    """The target and module labels of the case's probe_success series."""
    for name, labels in found:
        if name == "probe_success" and ("case", case) in labels:
            return frozenset(pair for pair in labels if pair[0] != "case")
    raise AssertionError(f"no probe_success for {case}")
