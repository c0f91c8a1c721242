"""``connectivity-exporter check``: the real command against loopback listeners, closed ports and
(in a private netns) a firewall that drops packets and a resolver that is not there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from exporter.core.transcript import printable
from tests.helpers.exporter_process import REPO

DROPPED_PORT = 9001


def check(*args: str, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "exporter", "check", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )


def test_an_open_port_exits_0_with_a_transcript(listener):
    done = check(f"127.0.0.1:{listener}")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"Probing 127.0.0.1:{listener} with module tcp_connect (prober tcp, timeout 5s)"
    assert lines[2] == f"Trying 127.0.0.1:{listener}..."
    assert lines[3].startswith(f"Connected to 127.0.0.1:{listener} in ")
    assert "SUCCESS: open" in lines
    assert "The port accepted the connection" in lines
    timings = next(line for line in lines if line.startswith("Timings: "))  # the path diagnosis follows it
    assert timings.startswith("Timings: connect ") and ", total " in timings
    assert done.stderr == ""


def test_a_closed_port_exits_1_and_says_why(closed_port):
    done = check(f"127.0.0.1:{closed_port}")
    assert done.returncode == 1
    assert "FAILURE: refused" in done.stdout
    assert (
        "The host (or a firewall rejecting with a TCP reset) refused the connection: nothing listens on this "
        "port or access is rejected (ECONNREFUSED (Connection refused) connecting to 127.0.0.1:"
    ) in done.stdout


def test_json_has_the_full_result(listener):
    done = check(f"127.0.0.1:{listener}", "--json")
    assert done.returncode == 0
    result = json.loads(done.stdout)
    assert result["target"] == f"127.0.0.1:{listener}"
    assert (result["module"], result["prober"], result["timeout_seconds"]) == ("tcp_connect", "tcp", 5.0)
    assert (result["success"], result["state"], result["tcp_state"], result["ip_protocol"]) == (True, "open", "open", 4)
    assert 0 < result["connect_seconds"] <= result["duration_seconds"]
    assert result["transcript"][0] == f"Trying 127.0.0.1:{listener}..."
    assert result["verdict"] == "the port accepted the connection"
    assert result["details"] is None


def test_ipv6_literal(tmp_path):
    import socket

    sock = socket.socket(socket.AF_INET6)
    try:
        sock.bind(("::1", 0))
    except OSError:
        pytest.skip("IPv6 loopback (::1) is not available on this machine")
    with sock:
        sock.listen(1)
        done = check(f"[::1]:{sock.getsockname()[1]}", "--json")
    assert json.loads(done.stdout)["ip_protocol"] == 6


def test_modules_come_from_the_config_file(tmp_path, closed_port):
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  quick: {prober: tcp, timeout: 250ms}\n")
    done = check(f"127.0.0.1:{closed_port}", "--module", "quick", "--config.file", str(config))
    assert done.returncode == 1
    assert "with module quick (prober tcp, timeout 250ms)" in done.stdout
    # Built-in modules stay available next to the file's.
    builtin = check(f"127.0.0.1:{closed_port}", "--config.file", str(config))
    assert builtin.returncode == 1, builtin.stderr
    assert "with module tcp_connect (prober tcp" in builtin.stdout and "FAILURE: refused" in builtin.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "the following arguments are required: TARGET"),
        (["127.0.0.1"], "connectivity-exporter check: target '127.0.0.1': missing port (expected host:port)"),
        (
            ["127.0.0.1:1", "--module", "nope"],
            "connectivity-exporter check: unknown module 'nope' (available: smtp_banner, tcp_connect)",
        ),
        (
            ["127.0.0.1:1", "--config.file", "/nonexistent/config.yml"],
            "/nonexistent/config.yml: cannot read the config file: No such file or directory",
        ),
        (["127.0.0.1:1", "--bogus"], "unrecognized arguments: --bogus"),
    ],
)
def test_usage_and_config_errors_exit_2(args, message):
    done = check(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert done.stdout == "" and "Traceback" not in done.stderr


def test_smtp_banner_is_built_in(closed_port):
    done = check(f"127.0.0.1:{closed_port}", "--module", "smtp_banner")
    assert done.returncode == 1
    assert "with module smtp_banner (prober smtp, timeout 10s)" in done.stdout
    assert "refused the connection" in done.stdout


def test_control_characters_from_a_server_are_made_visible():
    assert printable("220 mx ESMTP") == "220 mx ESMTP"
    assert printable("220 \x1b[2J\x1b]0;pwned\x07 hi\r") == "220 \\x1b[2J\\x1b]0;pwned\\x07 hi\\r"


def in_netns(script: str) -> tuple[str, ...]:
    if os.geteuid() != 0:
        pytest.skip("needs root to create a network namespace with nftables rules")
    for binary in ("unshare", "nft", "ip"):
        if shutil.which(binary) is None:
            pytest.skip(f"{binary} is not installed (packages util-linux, nftables, iproute2)")
    return ("unshare", "-n", "sh", "-c", f'ip link set lo up && {script} && exec "$@"', "netns")


@pytest.mark.netns
def test_a_dropped_port_is_a_timeout_with_its_likely_causes(tmp_path):
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  tcp_connect: {prober: tcp, timeout: 300ms}\n")
    rule = (
        f"nft add table inet t && nft add chain inet t input '{{ type filter hook input priority 0; }}' && "
        f"nft add rule inet t input tcp dport {DROPPED_PORT} drop"
    )
    done = check(f"127.0.0.1:{DROPPED_PORT}", "--config.file", str(config), prefix=in_netns(rule))
    assert done.returncode == 1, done.stderr
    assert "FAILURE: timeout" in done.stdout
    assert (
        "Nothing answered within 300ms: a firewall is probably dropping packets, or the host is down, or the "
        "network path is broken"
    ) in done.stdout


@pytest.mark.netns
def test_a_name_that_does_not_resolve_is_a_dns_error():
    # Inside a netns with only lo, no resolver is reachable: the lookup fails at once, no traffic leaves.
    done = check("mail.example.invalid:25", prefix=in_netns("true"))
    assert done.returncode == 1, done.stderr
    assert "Resolving mail.example.invalid (ip4 preferred)..." in done.stdout
    assert "FAILURE: dns_error" in done.stdout
    assert "The name could not be resolved to an address: mail.example.invalid does not resolve" in done.stdout


def test_one_escaper_for_every_server_text():
    """check, the SMTP transcript and the dialogue transcript escape the same way (one function),
    bidi overrides included: a server cannot reorder what a person reads."""
    from exporter.probers.smtp import session as smtp
    from exporter.probers.tcp import dialogue

    assert smtp.printable is printable
    assert printable("mx \u202eevil") == "mx \\u202eevil"
    assert dialogue.printable("220 \u202e\r\n".encode()) == "220 \\u202e\\r\\n"
