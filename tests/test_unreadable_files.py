"""A module naming a file that cannot be read (CA, certificate, key, password) loads with one warning line;
only its probes fail, with that reason everywhere a person looks. ``--config.check`` reports each such file
as an error (exit 1). One small config per rule in tests/configs/unreadable/, each with its exact lines."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config.loader import load_config
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.probers.connect.resolve import Resolver
from exporter.probing.runner import ProbeRunner
from tests.helpers.exporter_process import REPO, free_port, http, start_exporter
from tests.helpers.html_tables import Tables
from tests.helpers.metrics_text import value

UNREADABLE = sorted((Path(__file__).parent / "configs" / "unreadable").glob("*.yml"))
EXAMPLE = Path(__file__).parent / "configs" / "blackbox" / "example.yml"


def expected(path: Path, kind: str) -> list[str]:
    prefix = f"# {kind}: "
    return [
        line.removeprefix(prefix).replace("{file}", str(path))
        for line in path.read_text().splitlines()
        if line.startswith(prefix)
    ]


async def probe_each(config, target: str = "127.0.0.1:9") -> dict:
    """Probe every module once through the real runner (nothing listens on port 9 of loopback)."""
    resolver = Resolver(max_workers=1)
    try:
        runner = ProbeRunner(resolver, max_concurrency=4)
        return {
            name: await runner.probe(parse_host_port(target), module, Deadline.after(2.0))
            for name, module in config.modules.items()
        }
    finally:
        resolver.close()


@pytest.mark.parametrize("path", UNREADABLE, ids=[p.stem for p in UNREADABLE])
def test_unreadable_file_is_one_warning_per_module_and_one_check_error_per_file(path: Path):
    warnings, checks = expected(path, "warning"), expected(path, "check")
    assert warnings and checks, f"{path.name} needs '# warning:' and '# check:' lines"
    config = load_config(str(path))
    assert list(config.warnings) == warnings
    assert list(config.unreadable_files) == checks
    unusable = {name for name, module in config.modules.items() if module.unusable}
    assert len(unusable) == len(warnings)

    results = asyncio.run(probe_each(config))
    for name in config.modules:
        result = results[name]
        if name in unusable:
            assert not result.success and result.state == "error" and result.tcp_state == "error"
            reason = warnings[0].split("reload the configuration): ", 1)[1]
            fix = "make the file readable, then reload the configuration"
            assert result.detail == f"module {name!r} cannot be used: {reason} ({fix})"
        else:  # the other modules of the file are probed as usual: port 9 refuses
            assert result.tcp_state == "refused", result.detail


def test_config_check_names_each_unreadable_file_and_exits_1():
    done = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={EXAMPLE}", "--config.check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if not line.startswith("warning: ")]
    missing = "cannot read CA file '/etc/blackbox_exporter/CA_cert.crt': No such file or directory"
    assert errors == [
        f"{EXAMPLE}: modules.rabbitmq.tcp.tls_config.ca_file: {missing}",
        f"{EXAMPLE}: modules.rabbitmq_insecure.tcp.tls_config.ca_file: {missing}",
    ]
    # The per-module warning is not repeated beside the error; the skipped http/icmp/dns modules still warn.
    assert not any("rabbitmq" in line for line in done.stderr.splitlines() if line.startswith("warning: "))


def config_with_ca(ca_file: str, port: int) -> str:
    return f"""modules:
  tcp_connect: {{prober: tcp, timeout: 2s}}
  tls_ca: {{prober: tcp, timeout: 2s, tcp: {{tls: true, tls_config: {{ca_file: "{ca_file}"}}}}}}
targets:
  - {{target: "127.0.0.1:{port}", module: tcp_connect}}
  - {{target: "127.0.0.1:{port}", module: tls_ca}}
"""


def test_server_starts_and_reloads_with_an_unreadable_file_but_not_with_a_syntax_error(tmp_path, closed_port):
    config = tmp_path / "config.yml"
    missing = tmp_path / "missing-ca.pem"
    config.write_text(config_with_ca(str(missing), closed_port))
    port = free_port()
    process = start_exporter(f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    reason = f"tcp.tls_config.ca_file: cannot read CA file '{missing}': No such file or directory"
    try:
        process.wait_for_log("modules.tls_ca: its probes fail until a file it names can be read")
        status, text, _ = http("GET", base + "/metrics")
        assert status == 200
        assert value(text, "probe_success", target=f"127.0.0.1:{closed_port}", module="tls_ca") == 0
        assert value(text, "probe_tcp_state", target=f"127.0.0.1:{closed_port}", module="tls_ca", state="error") == 1
        # The refused connect of the other module shows it was probed; the broken module sent nothing.
        assert value(text, "probe_tcp_state", target=f"127.0.0.1:{closed_port}", module="tcp_connect", state="refused")

        status, debug, _ = http("GET", f"{base}/probe?target=127.0.0.1:{closed_port}&module=tls_ca&debug=true")
        assert status == 200 and f"module 'tls_ca' cannot be used: {reason}" in debug
        page = Tables(http("GET", base + "/")[1])
        row = next(row for row in page.rows("targets") if row["Module"] == "tls_ca")
        assert row["State"] == "error" and reason in row["Detail"]

        # A reload with the same problem loads (a warning, not an error) ...
        config.write_text(config_with_ca(str(missing), closed_port) + "  - {target: 'localhost:1', module: tls_ca}\n")
        process.signal(signal.SIGHUP)
        process.wait_for_log("configuration reloaded: 2 modules, 3 targets")
        assert process.log.count("modules.tls_ca: its probes fail until a file it names can be read") == 2
        text = http("GET", base + "/metrics")[1]
        assert value(text, "connectivity_exporter_config_last_reload_successful") == 1
        # ... but a syntax error keeps the configuration that was loaded.
        config.write_text(config_with_ca(str(missing), closed_port) + "  - {target: [\n")
        process.signal(signal.SIGHUP)
        process.wait_for_log("configuration reload failed")
        text = http("GET", base + "/metrics")[1]
        assert value(text, "connectivity_exporter_config_last_reload_successful") == 0
        assert value(text, "connectivity_exporter_config_targets") == 3
    finally:
        process.stop()


def test_check_command_explains_the_unreadable_file():
    done = subprocess.run(
        [sys.executable, "-m", "exporter", "check", f"--config.file={EXAMPLE}", "--module", "rabbitmq", "127.0.0.1:9"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert (
        "Module 'rabbitmq' cannot be used: tcp.tls_config.ca_file: cannot read CA file "
        "'/etc/blackbox_exporter/CA_cert.crt': No such file or directory" in done.stdout
    )
