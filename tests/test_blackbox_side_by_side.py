"""Side by side with Debian's prometheus-blackbox-exporter: one config file, the same modules and servers
(real sshd, dovecot and PostgreSQL, plus scripted failure modes), the same probe_success and
probe_failed_due_to_regex from both exporters' /probe.

The config uses only keys blackbox_exporter 0.23 (Debian's) knows: it has no expect_bytes or labels yet.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

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
            eventually(
                lambda: _status(url, blackbox), until=lambda s: s == 200, what=f"{url} to answer", ignoring=(OSError,)
            )
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


def _status(url: str, process: subprocess.Popen) -> int:
    if process.poll() is not None:
        raise AssertionError(f"{url}: the server exited with {process.returncode}")
    return http("GET", url, timeout=2)[0]


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
