"""blackbox_exporter's own configuration files load unchanged: tcp modules work, other probers' modules
are skipped with one warning line each; Go regular expressions keep their meaning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from exporter.config.loader import load_config, parse_config
from exporter.probers.tcp.goregex import translate
from tests.helpers.exporter_process import REPO

BLACKBOX_FILES = sorted((Path(__file__).parent / "configs" / "blackbox").glob("*.yml"))


# Per file: the modules kept (all tcp) and the other probers' modules skipped, exactly.
BLACKBOX_EXPECTED = {
    "debian-blackbox": (
        ["irc_banner", "pop3s_banner", "ssh_banner", "tcp_connect"],
        {"http_2xx": "http", "http_post_2xx": "http", "grpc": "grpc", "grpc_plain": "grpc", "icmp": "icmp"}
        | {"icmp_ttl5": "icmp"},
    ),
    "example": (
        ["imap_starttls", "irc_banner_example", "smtp_starttls", "tcp_connect_example", "tls_connect"],
        {
            **dict.fromkeys(
                ["http_2xx_example", "http_with_proxy", "http_post_2xx", "http_basic_auth_example"], "http"
            ),
            **dict.fromkeys(["http_custom_ca_example", "http_gzip", "http_gzip_with_accept_encoding"], "http"),
            "icmp_example": "icmp",
            **dict.fromkeys(["dns_udp_example", "dns_soa", "dns_tcp_example"], "dns"),
        },
    ),
}


def test_every_blackbox_file_has_its_expectation():
    assert sorted(p.stem for p in BLACKBOX_FILES) == sorted(BLACKBOX_EXPECTED)


@pytest.mark.parametrize("path", BLACKBOX_FILES, ids=[p.stem for p in BLACKBOX_FILES])
def test_blackbox_example_files_load(path):
    config = load_config(str(path))
    kept, skipped = BLACKBOX_EXPECTED[path.stem]
    assert sorted(config.modules) == kept
    assert all(module.prober == "tcp" for module in config.modules.values())
    assert dict(config.unsupported_modules) == skipped
    assert len(config.warnings) == len(config.unsupported_modules)
    for name, warning in zip(config.unsupported_modules, config.warnings, strict=False):
        assert f"modules.{name}: skipped" in warning and "\n" not in warning


def test_debian_blackbox_yml_modules():
    config = load_config(str(Path(__file__).parent / "configs" / "blackbox" / "debian-blackbox.yml"))
    assert sorted(config.modules) == ["irc_banner", "pop3s_banner", "ssh_banner", "tcp_connect"]
    assert dict(config.unsupported_modules) == {
        "http_2xx": "http",
        "http_post_2xx": "http",
        "grpc": "grpc",
        "grpc_plain": "grpc",
        "icmp": "icmp",
        "icmp_ttl5": "icmp",
    }
    irc = config.modules["irc_banner"].tcp.query_response
    assert [step.send for step in irc] == [b"NICK prober", b"USER prober prober prober :prober", b"PONG ${1}", None]
    pop3s = config.modules["pop3s_banner"].tcp
    assert pop3s.tls and not pop3s.tls_config.insecure_skip_verify


def test_config_check_warns_and_passes():
    path = Path(__file__).parent / "configs" / "blackbox" / "debian-blackbox.yml"
    done = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={path}", "--config.check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "config OK\n"
    warnings = done.stderr.splitlines()
    assert len(warnings) == 6 and all(line.startswith("warning: ") for line in warnings)
    assert any(
        "modules.icmp_ttl5: skipped: module 'icmp_ttl5' uses blackbox_exporter's icmp prober" in line
        for line in warnings
    )


@pytest.mark.parametrize(
    "go, line, matches",
    [
        (rb"^+OK", b"+OK POP3", False),  # Go reads ^+ as a repeated start-of-text: "^OK"
        (rb"^+OK", b"OK", True),
        (rb"^SSH-2\.0-", b"SSH-2.0-OpenSSH", True),
        (rb"done\z", b"all done", True),
        (rb"^[[:digit:]]{3} ", b"220 mx", True),
        (rb"^[[:digit:]]{3} ", b"22x mx", False),
        (rb"(?<code>\d+) OK", b"a 42 OK", True),
        (rb"\Q1.5+\E", b"v1.5+", True),
        (rb"\Q1.5+\E", b"v1x5", False),
        (rb"\w+", "é".encode(), False),  # ASCII classes, as in Go
    ],
)
def test_go_regex_translation(go, line, matches):
    assert bool(re.compile(translate(go)).search(line)) is matches


def test_binary_payloads_and_numbers_as_strings():
    config = parse_config("""
modules:
  m:
    prober: tcp
    tcp:
      query_response:
        - send: !!binary AAAACATSFi8=
        - expect_bytes: !!binary Tg==
        - send: 42
""")
    steps = config.modules["m"].tcp.query_response
    assert steps[0].send == b"\x00\x00\x00\x08\x04\xd2\x16\x2f"
    assert steps[1].expect_bytes == b"N"
    assert steps[2].send == b"42"


def test_exporter_serves_an_unchanged_blackbox_yml():
    from tests.helpers.exporter_process import free_port, http, start_exporter

    path = Path(__file__).parent / "configs" / "blackbox" / "debian-blackbox.yml"
    port = free_port()
    exporter = start_exporter(f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}")
    try:
        status, body, _ = http("GET", f"http://127.0.0.1:{port}/probe?module=icmp&target=127.0.0.1:1")
        assert status == 400 and body.count("\n") == 1
        assert "module 'icmp' uses blackbox_exporter's icmp prober" in body
        status, body, _ = http("GET", f"http://127.0.0.1:{port}/probe?module=ssh_banner&target=127.0.0.1:{free_port()}")
        assert status == 200 and "probe_success 0" in body and 'probe_tcp_state{state="refused"} 1' in body
    finally:
        exporter.stop()
    for name in ("http_2xx", "http_post_2xx", "grpc", "grpc_plain", "icmp", "icmp_ttl5"):
        assert sum(f"modules.{name}: skipped" in line for line in exporter.lines) == 1, exporter.log
