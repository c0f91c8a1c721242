"""Side by side with Debian's prometheus-blackbox-exporter: one config file, the same modules and servers
(real sshd, dovecot and PostgreSQL, plus scripted failure modes), the same probe_success and
probe_failed_due_to_regex from both exporters' /probe.

The config uses only keys blackbox_exporter 0.23 (Debian's) knows: it has no expect_bytes or labels yet.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlencode

import pytest
import yaml

from tests.helpers.dialogue import ThreadedServers
from tests.helpers.eventually import eventually
from tests.helpers.exporter_process import free_port, http, start_exporter
from tests.helpers.metrics_text import samples
from tests.helpers.real_servers import dovecot, postgres, sshd
from tests.helpers.smtp_servers import Pki

pytestmark = pytest.mark.mta

BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"

CONFIG = """
modules:
  # blackbox_exporter's own examples, verbatim (Debian's blackbox.yml and example.yml).
  ssh_banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-"
      - send: "SSH-2.0-blackbox-ssh-check"
  irc_banner:
    prober: tcp
    tcp:
      query_response:
      - send: "NICK prober"
      - send: "USER prober prober prober :prober"
      - expect: "PING :([^ ]+)"
        send: "PONG ${1}"
      - expect: "^:[^ ]+ 001"
  imap_starttls:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "OK.*STARTTLS"
        - send: ". STARTTLS"
        - expect: "OK"
        - starttls: true
        - send: ". capability"
        - expect: "CAPABILITY IMAP4rev1"
  # The same, trusting the test CA.
  imap_starttls_ca:
    prober: tcp
    tcp:
      query_response:
        - expect: "OK.*STARTTLS"
        - send: ". STARTTLS"
        - expect: "OK"
        - starttls: true
        - send: ". capability"
        - expect: "CAPABILITY IMAP4rev1"
      tls_config: {ca_file: CA_FILE, server_name: mx.test}
  imap_starttls_wrong_name:
    prober: tcp
    tcp:
      query_response:
        - expect: "OK.*STARTTLS"
        - send: ". STARTTLS"
        - expect: "OK"
        - starttls: true
      tls_config: {ca_file: CA_FILE, server_name: other.test}
  pg_sslrequest:
    prober: tcp
    tcp:
      query_response:
        - send: !!binary AAAACATSFi8=
        - expect: "^S"
  tls_banner:
    prober: tcp
    tcp:
      tls: true
      tls_config: {ca_file: CA_FILE, server_name: mx.test}
      query_response: [{expect: "^[+]OK"}]
  pop3s_banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^+OK"
      tls: true
      tls_config:
        insecure_skip_verify: true
  tcp_connect:
    prober: tcp
  http_2xx:
    prober: http
"""


def scripted_handlers(pki: Pki):
    async def closes_without_match(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    async def trickle(reader, writer):
        for _ in range(400):  # bounded; the probes give up after a few seconds
            writer.write(b"S")
            await writer.drain()
            await asyncio.sleep(0.05)

    async def oversized(reader, writer):
        writer.write(b"SSH-" + b"x" * (70 * 1024) + b"\r\n")
        await writer.drain()
        await reader.read()

    async def garbage(reader, writer):
        writer.write(bytes(range(256)) * 4)
        await writer.drain()

    async def irc(reader, writer):
        await reader.readline()
        await reader.readline()
        writer.write(b"PING :tok123\r\n")
        await writer.drain()
        if (await reader.readline()).strip() == b"PONG tok123":
            writer.write(b":irc.test 001 prober :Welcome\r\n")
        else:
            writer.write(b":irc.test 464 prober :wrong pong\r\n")
        await writer.drain()

    async def irc_refuses(reader, writer):
        await reader.readline()
        await reader.readline()  # read all the client sent, so the close is a FIN, not a reset
        writer.write(b"ERROR :Closing link: access denied\r\n")
        await writer.drain()

    async def pop3(reader, writer):
        writer.write(b"+OK POP3 ready\r\n")
        await writer.drain()
        await reader.read()

    async def pop3_tls_handshake_then_garbage(reader, writer):
        await reader.read(1)
        writer.write(b"not TLS\r\n" * 8)
        await writer.drain()

    return {
        "closes_without_match": (closes_without_match, None),
        "trickle": (trickle, None),
        "oversized": (oversized, None),
        "garbage": (garbage, None),
        "irc": (irc, None),
        "irc_refuses": (irc_refuses, None),
        "pop3s": (pop3, Pki.server_context(pki.valid)),
        "pop3_plain": (pop3, None),
        "not_tls": (pop3_tls_handshake_then_garbage, None),
    }


# (module, server): the servers by name; "closed" is a port nothing listens on.
CASES = [
    ("ssh_banner", "sshd"),
    ("ssh_banner", "dovecot"),  # an IMAP greeting: no match before the deadline
    ("ssh_banner", "closes_without_match"),
    ("ssh_banner", "trickle"),
    ("ssh_banner", "oversized"),
    ("ssh_banner", "garbage"),
    ("ssh_banner", "closed"),
    ("irc_banner", "irc"),
    ("irc_banner", "irc_refuses"),
    ("imap_starttls", "dovecot"),  # the system trust store does not know the test CA
    ("imap_starttls_ca", "dovecot"),
    ("imap_starttls_wrong_name", "dovecot"),
    ("imap_starttls_ca", "sshd"),
    ("pg_sslrequest", "postgres"),  # "S" has no newline: a line-based expect waits in vain
    ("tls_banner", "pop3s"),
    ("tls_banner", "pop3_plain"),
    ("tls_banner", "not_tls"),
    ("pop3s_banner", "pop3s"),  # "^+OK" in Go is "^OK": Debian's example never matches "+OK"
    ("tcp_connect", "sshd"),
    ("tcp_connect", "closed"),
]


@pytest.fixture(scope="module")
def both_exporters(tmp_path_factory):
    if not shutil.which(BLACKBOX):
        pytest.skip(f"{BLACKBOX} missing: apt-get install prometheus-blackbox-exporter")
    tmp_path = tmp_path_factory.mktemp("side_by_side")
    pki = Pki(tmp_path)
    config = tmp_path / "blackbox.yml"
    config.write_text(CONFIG.replace("CA_FILE", str(pki.ca_file)))
    servers = ThreadedServers()
    ports = {name: servers.start(handler, ssl) for name, (handler, ssl) in scripted_handlers(pki).items()}
    ports["closed"] = free_port()
    blackbox_port = free_port()
    blackbox_log = open(tmp_path / "blackbox.log", "wb")
    blackbox = subprocess.Popen(
        [BLACKBOX, f"--config.file={config}", f"--web.listen-address=127.0.0.1:{blackbox_port}"],
        stdout=blackbox_log,
        stderr=subprocess.STDOUT,
    )
    ours = None
    try:
        with (
            sshd(_mkdir(tmp_path / "sshd")) as ports["sshd"],
            dovecot(_mkdir(tmp_path / "dovecot"), pki) as ports["dovecot"],
            postgres(_mkdir(tmp_path / "pg"), pki) as ports["postgres"],
        ):
            our_port = free_port()
            ours = start_exporter(f"--config.file={config}", f"--web.listen-address=127.0.0.1:{our_port}")
            url = f"http://127.0.0.1:{blackbox_port}/metrics"
            _wait_http(url, blackbox)
            yield {"blackbox": blackbox_port, "ours": our_port, "ports": ports, "log": ours}
    finally:
        if ours is not None:
            ours.stop()
        blackbox.terminate()
        blackbox.wait(20)
        blackbox_log.close()
        servers.close()


def _mkdir(path):
    path.mkdir()
    return path


def _wait_http(url: str, process: subprocess.Popen | None = None) -> None:
    """Until ``url`` answers 200; a ``process`` (the server behind it) that exits meanwhile ends the wait."""

    def status() -> int:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{url}: the server exited with {process.returncode}")
        return http("GET", url, timeout=2)[0]

    eventually(status, until=lambda code: code == 200, what=f"{url} to answer 200", ignoring=(OSError,))


def probe_both(env, module: str, port: int) -> dict[str, dict[str, float]]:
    query = urlencode({"module": module, "target": f"127.0.0.1:{port}"})
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "4"}

    def one(name: str) -> dict[str, float]:
        status, body, _ = http("GET", f"http://127.0.0.1:{env[name]}/probe?{query}", headers=headers, timeout=30)
        assert status == 200, (name, status, body)
        return {n: v for (n, labels), v in samples(body).items() if not labels}

    with ThreadPoolExecutor(2) as pool:
        blackbox, ours = pool.map(one, ("blackbox", "ours"))
    return {"blackbox": blackbox, "ours": ours}


# The outcomes both must agree on (so the comparison cannot pass by both failing everything).
EXPECTED_SUCCESS = {
    ("ssh_banner", "sshd"),
    ("irc_banner", "irc"),
    ("imap_starttls_ca", "dovecot"),
    ("tls_banner", "pop3s"),
    ("tcp_connect", "sshd"),
}
EXPECTED_REGEX_FLAG = {("ssh_banner", "closes_without_match"), ("ssh_banner", "garbage"), ("irc_banner", "irc_refuses")}


@pytest.mark.parametrize("module, server", CASES, ids=[f"{m}-{s}" for m, s in CASES])
def test_same_success_and_regex_flag_as_blackbox_exporter(both_exporters, module, server):
    got = probe_both(both_exporters, module, both_exporters["ports"][server])
    blackbox, ours = got["blackbox"], got["ours"]
    assert ours["probe_success"] == blackbox["probe_success"] == ((module, server) in EXPECTED_SUCCESS), got
    if module == "tcp_connect":
        # Deliberate: no dialogue, so no flag that could only be 0 (blackbox_exporter 0.23 writes 0).
        assert "probe_failed_due_to_regex" not in ours and blackbox["probe_failed_due_to_regex"] == 0, got
        return
    assert (
        ours["probe_failed_due_to_regex"]
        == blackbox["probe_failed_due_to_regex"]
        == ((module, server) in EXPECTED_REGEX_FLAG)
    ), got


def test_unsupported_prober_module_is_a_400_with_one_line(both_exporters):
    status, body, _ = http("GET", f"http://127.0.0.1:{both_exporters['ours']}/probe?module=http_2xx&target=x:1")
    assert status == 400
    assert body.strip().count("\n") == 0 and "http prober" in body
    assert sum("modules.http_2xx" in line for line in both_exporters["log"].lines) == 1


# --- Real blackbox configurations, loaded unchanged (tests/configs/blackbox/) -------------------------------
# Every tcp module of each file, probed by both exporters against real local servers. Both run in a mount
# namespace whose /etc/hosts gives dual.test an A (127.0.0.1) and an AAAA (::1) record, and with
# SSL_CERT_FILE naming the test CA, so "the system trust store" knows it and TLS modules can succeed.
# blackbox_exporter 0.23 rejects keys newer than itself (upstream example.yml's http modules), so it gets
# the file's tcp modules only, byte-for-byte the same mappings; ours loads the file itself.

FIXTURES = Path(__file__).parent / "configs" / "blackbox"
FIXTURE_FILES = ("example.yml", "kube-prometheus.yml", "debian-blackbox.yml")  # the Helm chart's has no tcp module
HOSTS = "127.0.0.1 localhost\n127.0.0.1 dual.test\n::1 dual.test\n"
IN_MOUNT_NS = ("unshare", "-m", "--propagation", "private", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"')


def tcp_modules_only(path: Path) -> str:
    raw = yaml.safe_load(path.read_text())
    return yaml.safe_dump({"modules": {n: m for n, m in raw["modules"].items() if m.get("prober") == "tcp"}})


def fixture_handlers(pki: Pki):
    context = Pki.server_context(pki.valid)

    async def smtp_starttls(reader, writer):  # what upstream's smtp_starttls module expects of a server
        writer.write(b"220 mx.test ESMTP test\r\n")
        await writer.drain()
        await reader.readline()  # EHLO
        writer.write(b"250-mx.test\r\n250-STARTTLS\r\n250 8BITMIME\r\n")
        await writer.drain()
        await reader.readline()  # STARTTLS
        writer.write(b"220 2.0.0 ready\r\n")
        await writer.drain()
        await writer.start_tls(context)
        await reader.readline()  # EHLO
        writer.write(b"250-mx.test\r\n250-AUTH PLAIN\r\n250 8BITMIME\r\n")
        await writer.drain()
        await reader.readline()  # QUIT
        writer.write(b"221 2.0.0 bye\r\n")
        await writer.drain()

    async def smtp_without_starttls(reader, writer):
        writer.write(b"220 mx.test ESMTP test\r\n")
        await writer.drain()
        await reader.readline()  # EHLO, then nothing more is sent: the close is a FIN
        writer.write(b"250-mx.test\r\n250 8BITMIME\r\n")
        await writer.drain()

    async def amqp(reader, writer):  # RabbitMQ's answer to a bad protocol header
        for _ in range(4):
            await reader.readline()
        writer.write(b"AMQP\x00\x00\x09\x01")
        await writer.drain()

    return {
        "smtp_starttls": (smtp_starttls, None),
        "smtp_without_starttls": (smtp_without_starttls, None),
        "amqps": (amqp, context),
    }


def _listen(family: int, host: str, port: int, listen: bool) -> socket.socket:
    sock = socket.socket(family)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind((host, port))
    if listen:
        sock.listen(64)  # the kernel completes handshakes from the backlog
    return sock


def dual_stack_ports(sockets: list[socket.socket]) -> dict[str, int]:
    """dual.test ports: answered on both families, on IPv4 only, on IPv6 only. The other family's port is
    bound without listening (a reset), so no other test's listener can answer in its place."""
    ports = {}
    for name, v4, v6 in (("dual_both", True, True), ("dual_v4_only", True, False), ("dual_v6_only", False, True)):
        for _ in range(50):  # bounded: a free port on both families
            first = _listen(socket.AF_INET, "127.0.0.1", 0, v4)
            port = first.getsockname()[1]
            try:
                second = _listen(socket.AF_INET6, "::1", port, v6)
            except OSError:
                first.close()
                continue
            sockets += [first, second]
            ports[name] = port
            break
        else:
            raise AssertionError("no port free on both 127.0.0.1 and ::1")
    return ports


@pytest.fixture(scope="module")
def fixture_pairs(tmp_path_factory):
    if not shutil.which(BLACKBOX):
        pytest.skip(f"{BLACKBOX} missing: apt-get install prometheus-blackbox-exporter")
    if os.geteuid() != 0:
        pytest.skip("needs root for a mount namespace with its own /etc/hosts (unshare -m)")
    tmp_path = tmp_path_factory.mktemp("fixtures_side_by_side")
    pki = Pki(tmp_path)
    hosts = tmp_path / "hosts"
    hosts.write_text(HOSTS)
    prefix = (*IN_MOUNT_NS, str(hosts))
    env = {**os.environ, "SSL_CERT_FILE": str(pki.ca_file)}
    servers = ThreadedServers()
    handlers = {**scripted_handlers(pki), **fixture_handlers(pki)}
    ports = {name: servers.start(handler, ssl) for name, (handler, ssl) in handlers.items()}
    ports["closed"] = free_port()
    sockets: list[socket.socket] = []
    ports.update(dual_stack_ports(sockets))
    pairs, running = {}, []
    try:
        with (
            sshd(_mkdir(tmp_path / "sshd")) as ports["sshd"],
            dovecot(_mkdir(tmp_path / "dovecot"), pki) as ports["dovecot"],
        ):
            for name in FIXTURE_FILES:
                theirs = tmp_path / f"blackbox-{name}"
                theirs.write_text(tcp_modules_only(FIXTURES / name))
                blackbox_port, our_port = free_port(), free_port()
                log = open(tmp_path / f"blackbox-{name}.log", "wb")
                blackbox = subprocess.Popen(
                    [*prefix, BLACKBOX, f"--config.file={theirs}", f"--web.listen-address=127.0.0.1:{blackbox_port}"],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
                running.append((blackbox, log))
                ours = start_exporter(
                    f"--config.file={FIXTURES / name}",
                    f"--web.listen-address=127.0.0.1:{our_port}",
                    prefix=prefix,
                    env={"SSL_CERT_FILE": str(pki.ca_file)},
                )
                running.append((ours, None))
                pairs[name] = {"blackbox": blackbox_port, "ours": our_port}
            for pair in pairs.values():
                _wait_http(f"http://127.0.0.1:{pair['blackbox']}/metrics")
                _wait_http(f"http://127.0.0.1:{pair['ours']}/metrics")
            yield {"pairs": pairs, "ports": ports}
    finally:
        for process, log in running:
            if log is None:
                process.stop()
            else:
                process.terminate()
                process.wait(20)
                log.close()
        for sock in sockets:
            sock.close()
        servers.close()


# (fixture file, module, server, host): every tcp module of every file at least once.
FIXTURE_CASES = [
    ("example.yml", "tls_connect", "pop3s", "127.0.0.1"),
    ("example.yml", "tls_connect", "pop3_plain", "127.0.0.1"),
    ("example.yml", "tcp_connect_example", "sshd", "127.0.0.1"),
    ("example.yml", "tcp_connect_example", "closed", "127.0.0.1"),
    ("example.yml", "imap_starttls", "dovecot", "127.0.0.1"),
    ("example.yml", "imap_starttls", "sshd", "127.0.0.1"),
    ("example.yml", "smtp_starttls", "smtp_starttls", "127.0.0.1"),
    ("example.yml", "smtp_starttls", "smtp_without_starttls", "127.0.0.1"),
    ("example.yml", "irc_banner_example", "irc", "127.0.0.1"),
    ("example.yml", "irc_banner_example", "irc_refuses", "127.0.0.1"),
    ("example.yml", "rabbitmq", "amqps", "127.0.0.1"),  # its CA file exists only on the example's machine
    ("example.yml", "rabbitmq_insecure", "amqps", "127.0.0.1"),
    ("example.yml", "tcp_connect_example", "dual_both", "dual.test"),
    ("example.yml", "tcp_connect_example", "dual_v4_only", "dual.test"),  # default ip6: ::1 refuses
    ("example.yml", "tcp_connect_example", "dual_v6_only", "dual.test"),
    ("kube-prometheus.yml", "irc_banner", "irc", "127.0.0.1"),
    ("kube-prometheus.yml", "pop3s_banner", "pop3s", "127.0.0.1"),  # Go's "^+OK" is "^OK"
    ("kube-prometheus.yml", "ssh_banner", "sshd", "127.0.0.1"),
    ("kube-prometheus.yml", "ssh_banner", "dovecot", "127.0.0.1"),
    ("kube-prometheus.yml", "tcp_connect", "sshd", "127.0.0.1"),
    ("kube-prometheus.yml", "tcp_connect", "closed", "127.0.0.1"),
    ("kube-prometheus.yml", "tcp_connect", "dual_both", "dual.test"),
    ("kube-prometheus.yml", "tcp_connect", "dual_v4_only", "dual.test"),  # preferred_ip_protocol: ip4
    ("kube-prometheus.yml", "tcp_connect", "dual_v6_only", "dual.test"),
    ("debian-blackbox.yml", "irc_banner", "irc", "127.0.0.1"),
    ("debian-blackbox.yml", "pop3s_banner", "pop3s", "127.0.0.1"),
    ("debian-blackbox.yml", "ssh_banner", "sshd", "127.0.0.1"),
    ("debian-blackbox.yml", "tcp_connect", "sshd", "127.0.0.1"),
    ("debian-blackbox.yml", "tcp_connect", "dual_v4_only", "dual.test"),
    ("debian-blackbox.yml", "tcp_connect", "dual_v6_only", "dual.test"),
]
FIXTURE_SUCCESS = {
    ("example.yml", "tls_connect", "pop3s"),
    ("example.yml", "tcp_connect_example", "sshd"),
    ("example.yml", "imap_starttls", "dovecot"),
    ("example.yml", "smtp_starttls", "smtp_starttls"),
    ("example.yml", "irc_banner_example", "irc"),
    ("example.yml", "tcp_connect_example", "dual_both"),
    ("example.yml", "tcp_connect_example", "dual_v6_only"),
    ("kube-prometheus.yml", "irc_banner", "irc"),
    ("kube-prometheus.yml", "ssh_banner", "sshd"),
    ("kube-prometheus.yml", "tcp_connect", "sshd"),
    ("kube-prometheus.yml", "tcp_connect", "dual_both"),
    ("kube-prometheus.yml", "tcp_connect", "dual_v4_only"),
    ("debian-blackbox.yml", "irc_banner", "irc"),
    ("debian-blackbox.yml", "ssh_banner", "sshd"),
    ("debian-blackbox.yml", "tcp_connect", "sshd"),
    ("debian-blackbox.yml", "tcp_connect", "dual_v6_only"),
}


def probe_pair(pair: dict[str, int], module: str, target: str) -> dict[str, dict[str, float]]:
    query = urlencode({"module": module, "target": target})
    headers = {"X-Prometheus-Scrape-Timeout-Seconds": "4"}

    def one(name: str) -> dict[str, float]:
        status, body, _ = http("GET", f"http://127.0.0.1:{pair[name]}/probe?{query}", headers=headers, timeout=30)
        assert status == 200, (name, status, body)
        return {n: v for (n, labels), v in samples(body).items() if not labels}

    with ThreadPoolExecutor(2) as pool:
        blackbox, ours = pool.map(one, ("blackbox", "ours"))
    return {"blackbox": blackbox, "ours": ours}


@pytest.mark.netns
@pytest.mark.parametrize(
    "fixture, module, server, host", FIXTURE_CASES, ids=[f"{f.split('.')[0]}-{m}-{s}" for f, m, s, _ in FIXTURE_CASES]
)
def test_real_blackbox_configs_answer_like_blackbox_exporter(fixture_pairs, fixture, module, server, host):
    port = fixture_pairs["ports"][server]
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    got = probe_pair(fixture_pairs["pairs"][fixture], module, target)
    blackbox, ours = got["blackbox"], got["ours"]
    assert ours["probe_success"] == blackbox["probe_success"] == ((fixture, module, server) in FIXTURE_SUCCESS), got
    if "probe_failed_due_to_regex" in ours:
        assert ours["probe_failed_due_to_regex"] == blackbox["probe_failed_due_to_regex"], got
    if blackbox["probe_success"] and host == "dual.test":  # the family each connected over
        assert ours["probe_ip_protocol"] == blackbox["probe_ip_protocol"], got
