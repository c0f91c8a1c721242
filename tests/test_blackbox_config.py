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


# Each real configuration, loaded unchanged: (its tcp modules, those naming a file missing here).
REAL_FILES = {
    "example": (
        {
            "tls_connect",
            "tcp_connect_example",
            "imap_starttls",
            "smtp_starttls",
            "irc_banner_example",
            "rabbitmq",
            "rabbitmq_insecure",
        },
        {"rabbitmq", "rabbitmq_insecure"},
    ),
    "debian-blackbox": ({"irc_banner", "pop3s_banner", "ssh_banner", "tcp_connect"}, set()),
    "kube-prometheus": ({"irc_banner", "pop3s_banner", "ssh_banner", "tcp_connect"}, set()),
    "helm-chart-default": (set(), set()),
}


# Each real configuration's modules of other probers, skipped with a warning: {module: prober}, exactly.
SKIPPED = {
    "example": {
        **dict.fromkeys(
            ["http_2xx_example", "http_with_proxy", "http_with_proxy_and_headers", "http_post_2xx"], "http"
        ),
        **dict.fromkeys(["http_any_response_example", "http_post_body_file", "http_basic_auth_example"], "http"),
        **dict.fromkeys(["http_json_cel_match", "http_2xx_oauth_client_credentials", "http_custom_ca_example"], "http"),
        **dict.fromkeys(["http_gzip", "http_gzip_with_accept_encoding"], "http"),
        "icmp_example": "icmp",
        **dict.fromkeys(["dns_udp_example", "dns_soa", "dns_tcp_example"], "dns"),
    },
    "debian-blackbox": {"http_2xx": "http", "http_post_2xx": "http", "grpc": "grpc", "grpc_plain": "grpc"}
    | {"icmp": "icmp", "icmp_ttl5": "icmp"},
    "kube-prometheus": {"http_2xx": "http", "http_post_2xx": "http"},
    "helm-chart-default": {"http_2xx": "http"},
}


def test_every_real_configuration_is_listed():
    assert {path.stem for path in BLACKBOX_FILES} == set(REAL_FILES) == set(SKIPPED)
    for path in BLACKBOX_FILES:
        if path.stem != "debian-blackbox":  # Debian's own file, as the package installs it
            header = path.read_text().split("\nmodules:")[0].split('\n"modules":')[0]
            assert header.startswith("# Origin: ") and re.search(r"commit [0-9a-f]{40}", header), path.name


@pytest.mark.parametrize("path", BLACKBOX_FILES, ids=[p.stem for p in BLACKBOX_FILES])
def test_blackbox_example_files_load(path):
    tcp_modules, unusable = REAL_FILES[path.stem]
    config = load_config(str(path))
    assert set(config.modules) == tcp_modules and all(m.prober == "tcp" for m in config.modules.values())
    assert {name for name, module in config.modules.items() if module.unusable} == unusable
    assert dict(config.unsupported_modules) == SKIPPED[path.stem]
    no_module = [f"{path}: modules: no module uses a supported prober (tcp, smtp): this configuration probes nothing"]
    assert len(config.warnings) == len(config.unsupported_modules) + len(unusable) + len(no_module * (not tcp_modules))
    skipped = [w for w in config.warnings if ": skipped: " in w]
    for name, warning in zip(config.unsupported_modules, skipped, strict=True):
        assert warning.startswith(f"{path}: modules.{name}: skipped") and "\n" not in warning
    if not tcp_modules:
        assert config.warnings[-1:] == tuple(no_module)


def test_blackbox_yml_modules_keep_blackbox_defaults_and_our_format_keeps_ip4():
    """blackbox_exporter's default preferred_ip_protocol is ip6 (config.go DefaultTCPProbe); a file with only
    `modules:` is a blackbox.yml. Our own format (targets, global or probe_access present) keeps ip4."""
    modules = "modules:\n  plain: {prober: tcp}\n  v4: {prober: tcp, tcp: {preferred_ip_protocol: ip4}}\n"
    modules += "  mx: {prober: smtp, smtp: {ehlo: probe.example.net}}\n"
    blackbox = parse_config(modules, "blackbox.yml").modules
    assert [blackbox[n].tcp.preferred_ip_protocol for n in ("plain", "v4", "mx")] == ["ip6", "ip4", "ip4"]
    assert blackbox["plain"].tcp.ip_protocol_fallback is True
    for extra in ("targets: []\n", "global: {max_concurrency: 8}\n", "probe_access: {allowed_modules: [plain]}\n"):
        ours = parse_config(modules + extra, "config.yml").modules
        assert [ours[n].tcp.preferred_ip_protocol for n in ("plain", "v4", "mx")] == ["ip4", "ip4", "ip4"], extra
    kube = load_config(str(Path(__file__).parent / "configs" / "blackbox" / "kube-prometheus.yml"))
    assert {m.tcp.preferred_ip_protocol for m in kube.modules.values()} == {"ip4"}  # written explicitly there
    example = load_config(str(Path(__file__).parent / "configs" / "blackbox" / "example.yml"))
    assert {m.tcp.preferred_ip_protocol for m in example.modules.values()} == {"ip6"}


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


def test_a_config_of_other_probers_only_serves(tmp_path):
    """The Helm chart's default (one http module) starts: the exporter's own metrics, /probe answers 400."""
    from tests.helpers.exporter_process import free_port, http, start_exporter

    path = Path(__file__).parent / "configs" / "blackbox" / "helm-chart-default.yml"
    port = free_port()
    process = start_exporter(f"--config.file={path}", f"--web.listen-address=127.0.0.1:{port}")
    try:
        process.wait_for_log(
            "modules: no module uses a supported prober (tcp, smtp): this configuration probes nothing"
        )
        status, body, _ = http("GET", f"http://127.0.0.1:{port}/metrics")
        assert status == 200 and "connectivity_exporter_config_targets 0" in body
        status, body, _ = http("GET", f"http://127.0.0.1:{port}/probe?module=http_2xx&target=127.0.0.1:1")
        assert status == 400 and "blackbox_exporter's http prober" in body
    finally:
        process.stop()
