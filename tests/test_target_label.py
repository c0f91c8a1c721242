"""The ``target`` label is the configured string, byte for byte, everywhere a person or a query reads it:
/metrics (scraped and continuous series, with a vantage label), the status page, the history, ``check --json``
(the port connected to has its own key), and after a reload. One test per prober; the mail-domain (mx) mode
is tested in its lab (tests/test_maildomain_netns.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import pytest

from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import REPO, free_port, http, start_exporter
from tests.helpers.html_tables import Tables

TARGET_LABEL = re.compile(r'[{,]target="((?:[^"\\]|\\.)*)"')


def targets_in(metrics: str) -> dict[str, int]:
    """Each target label value and the number of probe_success series carrying it."""
    found: dict[str, int] = {}
    for line in metrics.splitlines():
        for value in TARGET_LABEL.findall(line):
            found.setdefault(value, 0)
            if line.startswith("probe_success{"):
                found[value] += 1
    return found


def run_exporter(tmp_path, config_text: str):
    config = tmp_path / "config.yml"
    config.write_text(config_text)
    port = free_port()
    process = start_exporter(
        f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}", "--probe.vantage=site-a"
    )
    return process, f"http://127.0.0.1:{port}"


def assert_everywhere(process, base: str, configured: list[str], continuous: str) -> None:

    def scraped() -> str:
        status, metrics, _ = http("GET", base + "/metrics")
        assert status == 200, metrics
        return metrics

    metrics = eventually(
        scraped,
        until=lambda metrics: f'probe_success{{target="{continuous}",' in metrics,
        what=f"the continuous target {continuous!r}'s first background probe",
    )
    # Every series names the configured strings, one probe_success each (the continuous one included).
    assert targets_in(metrics) == dict.fromkeys(configured, 1), metrics
    assert f'probe_success{{target="{continuous}",' in metrics
    page = Tables(http("GET", base + "/")[1])
    shown = [row["Target"] for table in ("targets", "continuous") for row in page.rows(table)]
    assert set(shown) == set(configured)  # continuous targets are listed in both tables
    history = next(link for link in page.links if link.startswith("/history?id="))
    assert re.search(r"of (\S+) with module", http("GET", base + history)[1]).group(1) in configured

    # A reload of the same file creates no second series for an unchanged target.
    process.signal(signal.SIGHUP)
    process.wait_for_log("configuration reloaded")
    assert targets_in(http("GET", base + "/metrics")[1]) == dict.fromkeys(configured, 1)


def test_tcp_target_label_is_the_configured_string(tmp_path, listener):
    # tcp needs a port; the host is kept as written (a name, an IPv6 literal in a non-canonical spelling).
    configured = [f"localhost:{listener}", f"[0:0::0001]:{listener}", f"127.0.0.1:{listener}"]
    process, base = run_exporter(
        tmp_path,
        "modules:\n  tcp_connect: {prober: tcp, timeout: 2s}\n  tcp_bg: {prober: tcp, timeout: 2s, interval: 1s}\n"
        "targets:\n"
        + "".join(f"  - {{target: '{t}', module: tcp_connect}}\n" for t in configured[:2])
        + f"  - {{target: '{configured[2]}', module: tcp_bg}}\n",
    )
    try:
        assert_everywhere(process, base, configured, continuous=configured[2])
    finally:
        process.stop()


def test_smtp_target_without_a_port_keeps_its_label(tmp_path):
    # "127.0.0.1" is probed on port 25 (whatever answers there, if anything), exported as written.
    configured = ["127.0.0.1", "localhost"]
    process, base = run_exporter(
        tmp_path,
        "modules:\n  smtp_banner: {prober: smtp, timeout: 2s, smtp: {ehlo: probe.example.net}}\n"
        "  smtp_bg: {prober: smtp, timeout: 2s, interval: 1s, smtp: {ehlo: probe.example.net}}\n"
        "targets:\n  - {target: '127.0.0.1', module: smtp_banner}\n  - {target: localhost, module: smtp_bg}\n",
    )
    try:
        assert_everywhere(process, base, configured, continuous="localhost")
    finally:
        process.stop()


@pytest.mark.parametrize("target, port", [("127.0.0.1", 25), ("127.0.0.1:2525", 2525), ("[::1]", 25)])
def test_check_json_target_is_as_written_and_the_port_has_its_own_key(target, port):
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check", target, "--module", "smtp_banner", "--json", "--no-diagnose"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert (report["target"], report["port"]) == (target, port)
