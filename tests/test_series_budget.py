"""What a target costs on /metrics: series per target against the budget of issue 23, on a running exporter.

The budget (docs/metrics.md, "What a target costs"): a plain tcp target at most 11 series, a continuous
tcp target at most 25, an SMTP target with STARTTLS at most 45. Counted on the real ``/metrics`` of a real
``python -m exporter`` process, against real listeners on loopback and a real SMTP server (aiosmtpd) with a
test certificate, once with one process and once with the continuous targets on a probe worker.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import pytest

from tests.helpers import smtp_servers
from tests.helpers.aiosmtpd_server import start_aiosmtpd, tls_config
from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import free_port, http, start_exporter
from tests.helpers.metrics_text import samples
from tests.helpers.smtp_servers import Pki

servers = smtp_servers.servers  # the fixture

BUDGET = {"plain tcp": 11, "plain tcp by name": 11, "continuous tcp": 25, "continuous tcp by name": 25, "smtp": 45}


Sample = tuple[str, dict[str, str], float]


def by_case(text: str) -> dict[str, list[Sample]]:
    """Every series of the scrape that belongs to a target, grouped by the target's ``case`` label."""
    out: dict[str, list[Sample]] = {}
    for (name, pairs), value in samples(text).items():
        labels = dict(pairs)
        if "case" in labels:
            out.setdefault(labels["case"], []).append((name, labels, value))
    return out


def of(series: list[Sample], name: str) -> list[tuple[dict[str, str], float]]:
    return [(labels, value) for family, labels, value in series if family == name]


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


async def wait_probed(port: int) -> str:
    """A scrape once both continuous targets were probed at least twice (their series are all there)."""

    def probed_twice(text: str) -> bool:
        cases = by_case(text)
        return all(
            sum(value for _, value in of(cases.get(case, []), "probe_results_total")) >= 2
            for case in ("continuous tcp", "continuous tcp by name")
        )

    return await eventually(
        lambda: scrape(port), until=probed_twice, what="two probes of each continuous target", interval=0.2
    )


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
    cases = by_case(text)
    counts = {case: len(series) for case, series in cases.items()}
    # The probes did what the cases say, so the counts are those of healthy targets.
    for case in BUDGET:
        assert of(cases[case], "probe_success")[0][1] == 1, (case, text)
    over = {case: counts[case] for case, budget in BUDGET.items() if counts[case] > budget}
    assert not over, f"series per target over budget {BUDGET}: {counts}"
    # The continuous targets really carry their counters and histogram (not a budget met by losing them).
    for case in ("continuous tcp", "continuous tcp by name"):
        names = {name for name, _, _ in cases[case]}
        assert {"probe_results_total", "probe_tcp_connect_time_seconds_bucket", "probe_state_changes_total"} <= names
    literal = {labels["state"] for labels, _ in of(cases["continuous tcp"], "probe_results_total")}
    assert literal == {"open", "refused", "timeout", "unreachable", "error"}  # no dns_error for an IP literal
    named = {labels["state"] for labels, _ in of(cases["continuous tcp by name"], "probe_results_total")}
    assert named == literal | {"dns_error"}
    # SMTP: STARTTLS kept at 0/1 for alerts; the dialogue's state is the one series, at 1.
    capabilities = {labels["capability"]: value for labels, value in of(cases["smtp"], "probe_smtp_capability")}
    assert capabilities["STARTTLS"] == 1 and 0 not in capabilities.values()
    assert [(labels["state"], value) for labels, value in of(cases["smtp"], "probe_smtp_state")] == [("ok", 1)]
    versions = of(cases["smtp"], "probe_tls_version_info")
    assert len(versions) == 1 and versions[0][1] == 1
