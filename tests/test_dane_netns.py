"""DANE end to end (smtp.dane) with a real validating resolver: Debian's unbound serves a zone signed in
the test by ``ldns-signzone`` (auth-zone, validated against the test's own KSK as trust anchor) and is the
namespace's only resolver (``/etc/netns/NAME/resolv.conf``). STARTTLS servers are aiosmtpd with trustme
certificates. Per MX host: DANE-EE valid, DANE-TA valid (an intermediate CA as trust anchor), mismatch,
unsigned (a real insecure delegation: NS without DS), absent (a validated denial) and bogus (a TLSA
record altered after signing).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.helpers.dns_server import DNS_ADDRESS, ROOT, MailLab

pytestmark = [pytest.mark.netns, pytest.mark.mta]
trustme = pytest.importorskip("trustme")
x509 = pytest.importorskip("cryptography.x509")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")

HOSTS = {  # MX host -> address, in preference order
    "mx-ee.test": "192.0.2.61",
    "mx-ta.test": "192.0.2.62",
    "mx-mismatch.test": "192.0.2.63",
    "mx.unsigned.test": "192.0.2.64",
    "mx-none.test": "192.0.2.65",
    "mx-bogus.test": "192.0.2.66",
}
CONFIG = textwrap.dedent("""\
    modules:
      dane:
        prober: smtp
        timeout: 10s
        smtp: {mx: true, dane: true, mx_max_hosts: 10, starttls: no, ehlo: probe.example.org}
    """)


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns) and run unbound on port 53"
    for tool, package in (("ip", "iproute2"), ("unbound", "unbound"), ("ldns-signzone", "ldnsutils")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
    return None


def spki_sha256(pem: bytes) -> str:
    cert = x509.load_pem_x509_certificate(pem)
    der = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def cert_sha256(pem: bytes) -> str:
    return hashlib.sha256(x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)).hexdigest()


def sign(tmp: Path, zone: str) -> Path:
    (tmp / "zone").write_text(zone)
    keys = []
    for flags in (["-k"], []):
        done = subprocess.run(
            ["ldns-keygen", "-a", "ECDSAP256SHA256", *flags, "-r", "/dev/urandom", "test."],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=True,
        )
        keys.append(done.stdout.strip())
    subprocess.run(["ldns-signzone", "-n", "zone", *keys], cwd=tmp, check=True, capture_output=True)
    signed = (tmp / "zone.signed").read_text()
    # Alter the bogus host's TLSA data after signing: its signature no longer verifies.
    lines = signed.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("_25._tcp.mx-bogus.test.") and "\tTLSA\t" in line:
            lines[index] = line[:-4] + ("0000" if not line.endswith("0000") else "1111")
    (tmp / "zone.signed").write_text("\n".join(lines) + "\n")
    return tmp / f"{keys[0]}.key"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("dane")
    lab = MailLab(tmp)
    lab.name = f"dane{os.getpid()}"
    lab.etc = Path("/etc/netns") / lab.name
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    try:
        lab.create(list(HOSTS.values()))
        pems: dict[str, bytes] = {}
        servers = []
        for host, address in HOSTS.items():
            issued = (intermediate if host == "mx-ta.test" else ca).issue_cert(host)
            path = tmp / f"{host}.pem"
            pem = b"".join(blob.bytes() for blob in issued.cert_chain_pems)
            path.write_bytes(pem + issued.private_key_pem.bytes())
            pems[host] = issued.cert_chain_pems[0].bytes()
            servers.append({"address": address, "port": 25, "cert": str(path)})
        zone = [
            "$ORIGIN test.",
            "$TTL 300",
            "@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300",
            "@ IN NS ns.test.",
            f"ns IN A {DNS_ADDRESS}",
            "unsigned IN NS ns.test.",  # an insecure delegation: no DS
            *(f"dane.test. IN MX {10 * n} {host}." for n, host in enumerate(HOSTS, 1)),
            "dane-ok.test. IN MX 10 mx-ee.test.",
            "dane-ok.test. IN MX 20 mx-ta.test.",
            *(f"{host}. IN A {address}" for host, address in HOSTS.items() if host != "mx.unsigned.test"),
            f"_25._tcp.mx-ee.test. IN TLSA 3 1 1 {spki_sha256(pems['mx-ee.test'])}",
            f"_25._tcp.mx-ta.test. IN TLSA 2 0 1 {cert_sha256(intermediate.cert_pem.bytes())}",
            f"_25._tcp.mx-mismatch.test. IN TLSA 3 1 1 {spki_sha256(pems['mx-ee.test'])}",
            f"_25._tcp.mx-bogus.test. IN TLSA 3 1 1 {spki_sha256(pems['mx-bogus.test'])}",
        ]
        anchor = sign(tmp, "\n".join(zone) + "\n")
        (tmp / "unsigned.zone").write_text(
            "$ORIGIN unsigned.test.\n$TTL 300\n@ IN SOA ns.test. hostmaster.test. 1 3600 600 86400 300\n"
            f"@ IN NS ns.test.\nmx IN A {HOSTS['mx.unsigned.test']}\n"
            f"_25._tcp.mx IN TLSA 3 1 1 {spki_sha256(pems['mx.unsigned.test'])}\n"
        )
        auth = "".join(
            f'auth-zone:\n  name: "{name}"\n  zonefile: "{path}"\n  for-upstream: yes\n  for-downstream: no\n'
            "  fallback-enabled: no\n"
            for name, path in (("test.", tmp / "zone.signed"), ("unsigned.test.", tmp / "unsigned.zone"))
        )
        (tmp / "unbound.conf").write_text(
            f'server:\n  interface: {DNS_ADDRESS}\n  port: 53\n  do-daemonize: no\n  username: ""\n  chroot: ""\n'
            f'  directory: "{tmp}"\n  pidfile: ""\n  use-syslog: no\n  verbosity: 1\n  do-ip6: no\n'
            '  access-control: 0.0.0.0/0 allow\n  module-config: "validator iterator"\n'
            f'  local-zone: "test." nodefault\n  trust-anchor-file: "{anchor}"\n{auth}'
            "remote-control:\n  control-enable: no\n"
        )
        with open(tmp / "unbound.log", "w") as log:
            lab.popen(["unbound", "-d", "-c", str(tmp / "unbound.conf")], stdout=log, stderr=subprocess.STDOUT)
        lab.wait_for(
            "import dns.message, dns.query, dns.flags\n"
            f"r = dns.query.udp(dns.message.make_query('dane.test', 'MX', want_dnssec=True), '{DNS_ADDRESS}', timeout=1)\n"
            "assert r.flags & dns.flags.AD and r.answer"
        )
        (tmp / "smtp.json").write_text(json.dumps({"smtp": servers}))
        process = lab.popen(
            [sys.executable, "-m", "tests.helpers.mail_tls_servers", str(tmp / "smtp.json")],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert process.stdout is not None and process.stdout.readline().strip() == "ready"
        (tmp / "config.yml").write_text(CONFIG)
        lab.config = tmp / "config.yml"
        yield lab
    finally:
        lab.close()


def check(lab: MailLab, domain: str) -> dict:
    done = lab.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            domain,
            "--module",
            "dane",
            "--config.file",
            str(lab.config),
            "--json",
        ],
        timeout=90,
    )
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def test_every_dane_state_per_mx(lab):
    doc = check(lab, "dane.test")
    dane = doc["mail_domain"]["dane"]
    assert [(mx["host"], mx["state"]) for mx in dane["mx"]] == [
        ("mx-ee.test", "valid"),
        ("mx-ta.test", "valid"),
        ("mx-mismatch.test", "mismatch"),
        ("mx.unsigned.test", "unsigned"),
        ("mx-none.test", "absent"),
        ("mx-bogus.test", "bogus"),
    ], dane
    reasons = {mx["host"]: mx["reason"] for mx in dane["mx"]}
    assert "DANE-EE" in reasons["mx-ee.test"] and "DANE-TA" in reasons["mx-ta.test"]
    assert "DANE senders do not deliver to it" in reasons["mx-mismatch.test"]
    assert "not DNSSEC-validated" in reasons["mx.unsigned.test"]
    assert "a validated denial" in reasons["mx-none.test"]
    assert "bogus" in reasons["mx-bogus.test"]
    assert dane["state"] == "bogus"  # the summary is the worst host
    assert doc["mail_domain"]["mta_sts"] is None  # not asked for


def test_a_domain_whose_mx_hosts_all_match(lab):
    doc = check(lab, "dane-ok.test")
    assert doc["mail_domain"]["dane"]["state"] == "valid"
    assert doc["mail_domain"]["state"] == "ok" and doc["success"] is True


def test_human_report_names_each_failure(lab):
    done = lab.run(
        [sys.executable, "-m", "exporter", "check", "dane.test", "--module", "dane", "--config.file", str(lab.config)],
        timeout=90,
    )
    assert "DANE: bogus" in done.stdout
    assert "mx-mismatch.test: mismatch: none of mx-mismatch.test's 1 validated TLSA record(s)" in done.stdout


@pytest.mark.e2e
def test_dashboard_dane_panel_query_returns_data_in_a_real_prometheus(lab, tmp_path):
    """The Mail TLS policies panel's DANE query, in a real Prometheus scraping the exporter in the lab (the
    main e2e stack has no signed zone or validating resolver)."""
    from tests.helpers.lab_prometheus import panel_queries, query_in_lab_prometheus, series_of

    queries = panel_queries("probe_dane_")
    assert {query["panel"] for query in queries} == {"Mail TLS policies (MTA-STS, DANE)"} and queries
    config = tmp_path / "targets.yml"
    config.write_text(CONFIG + "targets:\n  - {target: dane.test, module: dane}\n")
    expected = {
        "mx-ee.test": "valid",
        "mx-ta.test": "valid",
        "mx-mismatch.test": "mismatch",
        "mx.unsigned.test": "unsigned",
        "mx-none.test": "absent",
        "mx-bogus.test": "bogus",
    }

    def states(results: dict) -> dict:
        return {series["mx"]: series["state"] for series in series_of(results, queries, queries[0]["panel"])}

    # Six MX hosts, each a TLSA lookup and a handshake: a 5 s scrape gives the probe room on a busy machine.
    query_in_lab_prometheus(
        lab,
        tmp_path,
        config,
        queries,
        what=f"the DANE panel to show {expected}",
        scrape_seconds=5,
        until=lambda results: states(results) == expected,
    )
