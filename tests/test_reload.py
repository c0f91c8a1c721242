"""Config reload on SIGHUP and POST /-/reload, against a real exporter process and real config edits."""

from __future__ import annotations

import signal

import pytest

from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import free_port, http, start_exporter
from tests.helpers.metrics_text import state_of, value

RELOAD_OK = "connectivity_exporter_config_last_reload_successful"
RELOAD_TIME = "connectivity_exporter_config_last_reload_success_timestamp_seconds"


def config_text(*targets: str) -> str:
    lines = "".join(f"  - {{target: '{t}', module: tcp_connect}}\n" for t in targets)
    return f"modules:\n  tcp_connect: {{prober: tcp, timeout: 2s}}\ntargets:\n{lines}"


@pytest.fixture
def server(tmp_path, listener, closed_port):
    config = tmp_path / "config.yml"
    config.write_text(config_text(f"127.0.0.1:{listener}"))
    port = free_port()
    process = start_exporter(f"--config.file={config}", f"--web.listen-address=127.0.0.1:{port}")
    try:
        yield process, config, f"http://127.0.0.1:{port}"
    finally:
        process.stop()


def metrics(base: str) -> str:
    status, body, _ = http("GET", base + "/metrics")
    assert status == 200, body
    return body


def wait_for_metric(base: str, name: str, expected: float) -> str:
    """SIGHUP is handled asynchronously: /metrics once the gauge shows the outcome."""
    return eventually(
        lambda: metrics(base), until=lambda text: value(text, name) == expected, what=f"{name} == {expected:g}"
    )


def test_sighup_applies_a_valid_config_and_keeps_the_old_one_on_errors(server, listener, closed_port):
    process, config, base = server
    before = metrics(base)
    assert value(before, RELOAD_OK) == 1
    loaded_at = value(before, RELOAD_TIME)
    assert state_of(before, target=f"127.0.0.1:{listener}") == "open"

    # A valid edit: a second target appears after SIGHUP.
    config.write_text(config_text(f"127.0.0.1:{listener}", f"127.0.0.1:{closed_port}"))
    process.signal(signal.SIGHUP)
    process.wait_for_log("configuration reloaded: 1 modules, 2 targets")
    text = metrics(base)
    assert state_of(text, target=f"127.0.0.1:{closed_port}") == "refused"
    assert value(text, "connectivity_exporter_config_targets") == 2
    reloaded_at = value(text, RELOAD_TIME)
    assert reloaded_at >= loaded_at

    # An invalid edit: errors in the log, the gauge drops to 0, both old targets keep being probed.
    config.write_text(config_text("127.0.0.1:99999") + "bogus: 1\n")
    process.signal(signal.SIGHUP)
    process.wait_for_log("configuration reload failed")
    process.wait_for_log("port 99999 is out of range 1-65535")
    process.wait_for_log("bogus: unknown key")
    text = wait_for_metric(base, RELOAD_OK, 0)
    assert value(text, RELOAD_OK) == 0
    assert value(text, RELOAD_TIME) == reloaded_at
    assert state_of(text, target=f"127.0.0.1:{listener}") == "open"
    assert state_of(text, target=f"127.0.0.1:{closed_port}") == "refused"

    # Fixing the file brings the gauge back.
    config.write_text(config_text(f"127.0.0.1:{closed_port}"))
    process.signal(signal.SIGHUP)
    text = wait_for_metric(base, RELOAD_OK, 1)
    assert value(text, RELOAD_OK) == 1
    assert value(text, "connectivity_exporter_config_targets") == 1
    assert process.proc.poll() is None


def test_post_reload_reports_errors_in_the_reply_and_the_log(server, listener, closed_port):
    process, config, base = server
    config.write_text("modules:\n  tcp_connect: {prober: tcp, timeout: 1y}\n")
    status, body, _ = http("POST", base + "/-/reload")
    assert status == 400
    assert body.startswith("reload failed, the previous configuration stays in use:\n")
    assert f"{config}: modules.tcp_connect.timeout: invalid duration '1y'" in body
    # The reply can arrive before the log line is read from the process's stderr: wait for it.
    process.wait_for_log("invalid duration '1y'")
    text = metrics(base)
    assert value(text, RELOAD_OK) == 0
    assert state_of(text, target=f"127.0.0.1:{listener}") == "open"

    config.write_text(config_text(f"127.0.0.1:{closed_port}"))
    status, body, _ = http("POST", base + "/-/reload")
    assert (status, body) == (200, "config reloaded: 1 modules, 1 targets\n")
    text = metrics(base)
    assert value(text, RELOAD_OK) == 1
    assert state_of(text, target=f"127.0.0.1:{closed_port}") == "refused"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_reload_only_accepts_post(server, method):
    _, _, base = server
    status, _, headers = http(method, base + "/-/reload")
    assert status == 405
    assert headers["Allow"] == "POST"


def test_a_deleted_config_file_is_a_failed_reload_not_a_crash(server, listener):
    process, config, base = server
    config.unlink()
    status, body, _ = http("POST", base + "/-/reload")
    assert status == 400
    assert f"{config}: cannot read the config file: No such file or directory" in body
    assert state_of(metrics(base), target=f"127.0.0.1:{listener}") == "open"
    assert process.proc.poll() is None
