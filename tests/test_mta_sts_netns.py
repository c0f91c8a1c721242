"""MTA-STS and TLS-RPT end to end (smtp.mta_sts): a real DNS server (dnsmasq: MX, A, TXT), real HTTPS
policy hosts (aiohttp) and STARTTLS SMTP servers (aiosmtpd) with certificates from a private CA (trustme),
all inside a network namespace of our own; ``check`` runs there too.

The private CA is trusted only inside that namespace's mount view, through the real system trust path:
``ip netns exec`` bind-mounts ``/etc/netns/NAME/ssl`` over ``/etc/ssl``, so OpenSSL's default
``/etc/ssl/certs/ca-certificates.crt`` there holds only the test CA (no SSL_CERT_FILE involved).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.helpers.dns_server import ROOT, MailLab, lab_unavailable_reason

pytestmark = [pytest.mark.netns, pytest.mark.mta]
trustme = pytest.importorskip("trustme")

MX1, MX2, MX_WRONG, MX_NOTLS, MX_WILD = "192.0.2.31", "192.0.2.32", "192.0.2.33", "192.0.2.34", "192.0.2.35"
POLICY, POLICY_BADCERT, POLICY_DOWN = "192.0.2.41", "192.0.2.42", "192.0.2.43"
POLICY_STALL = "192.0.2.44"  # accepts TCP, never answers the TLS handshake
TIMEOUT = 6

CONFIG = textwrap.dedent(f"""\
    modules:
      sts:
        prober: smtp
        timeout: {TIMEOUT}s
        smtp: {{mx: true, mta_sts: true, starttls: no, ehlo: probe.example.org}}
    """)


def policy(mode: str, *mx: str, max_age: int = 604800) -> str:
    return "version: STSv1\r\n" + f"mode: {mode}\r\n" + "".join(f"mx: {m}\r\n" for m in mx) + f"max_age: {max_age}\r\n"


# domain -> (MX records [(host, pref)], policy site or None, TLS-RPT record or None)
GOOD = [("mx1.good.test", 10), ("mx2.good.test", 20)]
DOMAINS: dict[str, tuple[list[tuple[str, int]], dict | None, str | None]] = {
    "enforce-ok.test": (
        GOOD,
        {"kind": "policy", "body": policy("enforce", "mx1.good.test", "mx2.good.test")},
        "v=TLSRPTv1; rua=mailto:tlsrpt@enforce-ok.test",
    ),
    "testing-ok.test": (GOOD[:1], {"kind": "policy", "body": policy("testing", "mx1.good.test")}, None),
    "wildcard.test": ([("a.wild.test", 10)], {"kind": "policy", "body": policy("enforce", "*.wild.test")}, None),
    "wilddeep.test": ([("x.a.wild.test", 10)], {"kind": "policy", "body": policy("enforce", "*.wild.test")}, None),
    "unlisted.test": (GOOD, {"kind": "policy", "body": policy("enforce", "mx1.good.test")}, None),
    "wrongcert.test": (
        [("mx.wrongcert.test", 10)],
        {"kind": "policy", "body": policy("enforce", "mx.wrongcert.test")},
        None,
    ),
    "testing-wrongcert.test": (
        [("mx.wrongcert.test", 10)],
        {"kind": "policy", "body": policy("testing", "mx.wrongcert.test")},
        None,
    ),
    "notls.test": ([("mx.notls.test", 10)], {"kind": "policy", "body": policy("enforce", "mx.notls.test")}, None),
    "none.test": (GOOD[:1], {"kind": "policy", "body": policy("none")}, None),
    "absent.test": (GOOD[:1], None, None),
    "invalid.test": (
        GOOD[:1],
        {"kind": "policy", "body": "version: STSv1\r\nmx: mx1.good.test\r\nmax_age: 86400\r\n"},
        None,
    ),
    "html.test": (
        GOOD[:1],
        {"kind": "policy", "body": policy("enforce", "mx1.good.test"), "content_type": "text/html"},
        None,
    ),
    "notfound.test": (GOOD[:1], {"kind": "status", "status": 404}, None),
    "redirect.test": (GOOD[:1], {"kind": "redirect"}, None),
    "slow.test": (GOOD[:1], {"kind": "slow"}, None),
    "huge.test": (GOOD[:1], {"kind": "huge"}, None),
    "silent.test": (GOOD[:1], {"kind": "silent"}, None),
    "stall.test": (GOOD[:1], {"kind": "policy", "body": ""}, None),  # mta-sts.stall.test: TLS never finishes
    "down.test": (GOOD[:1], {"kind": "policy", "body": ""}, None),  # mta-sts.down.test: nothing listens
    "badcert.test": (GOOD[:1], {"kind": "policy", "body": policy("enforce", "mx1.good.test")}, None),
    "nohost.test": (GOOD[:1], {"kind": "policy", "body": ""}, None),  # mta-sts.nohost.test: no address record
}
MX_ADDRESSES = {
    "mx1.good.test": MX1,
    "mx2.good.test": MX2,
    "a.wild.test": MX_WILD,
    "x.a.wild.test": MX_WILD,
    "mx.wrongcert.test": MX_WRONG,
    "mx.notls.test": MX_NOTLS,
}


def dns_records() -> list[str]:
    records = ["--local=/test/"]
    records += [f"--host-record={name},{address}" for name, address in MX_ADDRESSES.items()]
    for domain, (mx, site, rpt) in DOMAINS.items():
        records += [f"--mx-host={domain},{host},{preference}" for host, preference in mx]
        if site is not None:
            records.append(f"--txt-record=_mta-sts.{domain},v=STSv1; id=20261206T1{len(domain)}")
            address = {"down.test": POLICY_DOWN, "badcert.test": POLICY_BADCERT, "stall.test": POLICY_STALL}.get(
                domain, POLICY
            )
            if domain != "nohost.test":
                records.append(f"--host-record=mta-sts.{domain},{address}")
        if rpt is not None:
            records.append(f"--txt-record=_smtp._tls.{domain},{rpt}")
    # Two v=STSv1 records: senders assume no policy (RFC 8461 §3.1).
    records += ["--mx-host=twotxt.test,mx1.good.test,10", "--txt-record=_mta-sts.twotxt.test,v=STSv1; id=a1"]
    records += ["--txt-record=_mta-sts.twotxt.test,v=STSv1; id=b2", f"--host-record=mta-sts.twotxt.test,{POLICY}"]
    return records


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    tmp = tmp_path_factory.mktemp("mtasts")
    lab = MailLab(tmp)
    lab.name = f"sts{os.getpid()}"
    lab.etc = Path("/etc/netns") / lab.name
    ca = trustme.CA()
    try:
        lab.create([MX1, MX2, MX_WRONG, MX_NOTLS, MX_WILD, POLICY, POLICY_BADCERT, POLICY_DOWN, POLICY_STALL])
        # The namespace's /etc/ssl: the system trust store holds the test CA and nothing else.
        (lab.etc / "ssl" / "certs").mkdir(parents=True)
        shutil.copy("/etc/ssl/openssl.cnf", lab.etc / "ssl" / "openssl.cnf")
        ca.cert_pem.write_to_path(str(lab.etc / "ssl" / "certs" / "ca-certificates.crt"))
        lab.start_dns(*dns_records())

        def cert(*names: str) -> str:
            path = tmp / f"{names[0].replace('*', 'star')}.pem"
            issued = ca.issue_cert(*names)
            with open(path, "wb") as out:
                for blob in issued.cert_chain_pems:
                    out.write(blob.bytes())
                out.write(issued.private_key_pem.bytes())
            return str(path)

        policy_names = [f"mta-sts.{domain}" for domain in DOMAINS if domain != "badcert.test"] + ["mta-sts.twotxt.test"]
        sites = {f"mta-sts.{domain}": site for domain, (_, site, _) in DOMAINS.items() if site is not None}
        spec = {
            "smtp": [
                {"address": MX1, "port": 25, "cert": cert("mx1.good.test")},
                {"address": MX2, "port": 25, "cert": cert("mx2.good.test")},
                {"address": MX_WRONG, "port": 25, "cert": cert("someone-else.test")},
                {"address": MX_NOTLS, "port": 25, "cert": None},
                {"address": MX_WILD, "port": 25, "cert": cert("*.wild.test")},
            ],
            "https": [
                {"address": POLICY, "port": 443, "cert": cert(*policy_names)},
                {"address": POLICY_BADCERT, "port": 443, "cert": cert("www.badcert.test")},
            ],
            "stall": [{"address": POLICY_STALL, "port": 443}],
            "sites": sites,
        }
        # The SMTP servers and the (partly hostile) policy hosts run in two processes, so a policy host
        # busy writing cannot delay an SMTP greeting.
        smtp_spec = {"smtp": spec.pop("smtp")}
        for name, part in (("smtp", smtp_spec), ("https", spec)):
            (tmp / f"{name}.json").write_text(json.dumps(part))
            servers = lab.popen(
                [sys.executable, "-m", "tests.helpers.mail_tls_servers", str(tmp / f"{name}.json")],
                stdout=subprocess.PIPE,
                text=True,
                cwd=ROOT,
                env=dict(os.environ, PYTHONPATH=str(ROOT)),
            )
            assert servers.stdout is not None and servers.stdout.readline().strip() == "ready"
        for address, port in ((MX1, 25), (MX_NOTLS, 25), (POLICY, 443), (POLICY_STALL, 443)):
            lab.wait_for(f"import socket; socket.create_connection(('{address}', {port}), timeout=2).close()")
        (tmp / "config.yml").write_text(CONFIG)
        lab.config = tmp / "config.yml"
        yield lab
    finally:
        lab.close()


def check(lab: MailLab, domain: str) -> tuple[int, dict, float]:
    started = time.monotonic()
    done = lab.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            domain,
            "--module",
            "sts",
            "--config.file",
            str(lab.config),
            "--json",
        ],
        timeout=90,
    )
    elapsed = time.monotonic() - started
    assert done.returncode in (0, 1), done.stderr
    assert '"state": "error"' not in done.stdout, done.stderr[-3000:]
    return done.returncode, json.loads(done.stdout), elapsed


def sts(doc: dict) -> dict:
    return doc["mail_domain"]["mta_sts"]


def test_the_private_ca_is_the_system_trust_store_only_inside_the_namespace(lab):
    inside = lab.run(
        [sys.executable, "-c", "import ssl; print(ssl.create_default_context().cert_store_stats()['x509_ca'])"]
    )
    assert inside.stdout.strip() == "1", inside.stderr


def test_enforce_ok_and_tls_rpt_present(lab):
    code, doc, _ = check(lab, "enforce-ok.test")
    assert code == 0 and doc["mail_domain"]["state"] == "ok", json.dumps(doc, indent=1)[:6000]
    got = sts(doc)
    assert got["state"] == "enforce_ok" and got["mode"] == "enforce" and got["max_age"] == 604800
    assert got["id"] == "20261206T115" and got["mx_patterns"] == ["mx1.good.test", "mx2.good.test"]
    assert got["failing_mx"] == []
    # The contract names (issue 24); more keys (reason, verdict, mx) may follow them.
    assert {"state", "mode", "id", "max_age", "mx_patterns", "failing_mx"} <= set(got)
    assert {"present", "rua"} <= set(doc["mail_domain"]["tls_rpt"])
    assert doc["mail_domain"]["tls_rpt"] == {"present": True, "rua": ["mailto:tlsrpt@enforce-ok.test"], "reason": ""}


def test_testing_ok_none_and_absent(lab):
    assert sts(check(lab, "testing-ok.test")[1])["state"] == "testing_ok"
    _, doc, _ = check(lab, "none.test")
    assert sts(doc)["state"] == "none" and sts(doc)["mode"] == "none"
    code, doc, _ = check(lab, "absent.test")
    assert code == 0 and sts(doc)["state"] == "absent" and sts(doc)["id"] is None
    assert doc["mail_domain"]["tls_rpt"]["present"] is False
    assert "no _smtp._tls TXT record" in doc["mail_domain"]["tls_rpt"]["reason"]


def test_wildcard_matches_exactly_one_label(lab):
    _, doc, _ = check(lab, "wildcard.test")
    assert sts(doc)["state"] == "enforce_ok", sts(doc)
    code, doc, _ = check(lab, "wilddeep.test")
    assert sts(doc)["state"] == "enforce_failing" and sts(doc)["failing_mx"] == ["x.a.wild.test"]
    assert sts(doc)["mx"][0]["state"] == "not_listed"
    assert "x.a.wild.test is not listed in the policy (mx: *.wild.test)" in sts(doc)["mx"][0]["reason"]
    # Its only MX is refused by enforcing senders: the domain takes no mail from them.
    assert code == 1 and doc["mail_domain"]["state"] == "all_mx_failed"


def test_unlisted_backup_is_failing_but_the_primary_takes_the_mail(lab):
    code, doc, _ = check(lab, "unlisted.test")
    assert sts(doc)["state"] == "enforce_failing" and sts(doc)["failing_mx"] == ["mx2.good.test"]
    assert code == 0 and doc["mail_domain"]["state"] == "ok"
    assert "mx2.good.test (refused by senders that enforce MTA-STS" in doc["mail_domain"]["verdict"]


def test_listed_mx_with_a_wrong_certificate_enforce_is_an_outage(lab):
    code, doc, _ = check(lab, "wrongcert.test")
    assert sts(doc)["state"] == "enforce_failing"
    check_mx = sts(doc)["mx"][0]
    assert check_mx["state"] == "certificate_invalid"
    assert check_mx["reason"] == "the certificate is for someone-else.test, not mx.wrongcert.test"
    assert code == 1 and doc["success"] is False and doc["mail_domain"]["state"] == "all_mx_failed"
    verdict = doc["mail_domain"]["verdict"]
    assert verdict == (
        "senders that enforce MTA-STS cannot deliver to wrongcert.test, a delivery outage for them (they defer the "
        "mail and retry; senders that do not apply MTA-STS still deliver): mx.wrongcert.test: the certificate is for "
        "someone-else.test, not mx.wrongcert.test"
    )


def test_testing_mode_reports_but_delivers(lab):
    code, doc, _ = check(lab, "testing-wrongcert.test")
    assert sts(doc)["state"] == "testing_failing" and sts(doc)["failing_mx"] == ["mx.wrongcert.test"]
    assert code == 0 and doc["mail_domain"]["state"] == "ok"
    assert "senders still deliver" in sts(doc)["verdict"]


def test_mx_without_starttls_fails_enforce(lab):
    _, doc, _ = check(lab, "notls.test")
    assert sts(doc)["state"] == "enforce_failing"
    assert sts(doc)["mx"][0]["state"] == "no_starttls"
    assert "does not offer STARTTLS" in sts(doc)["mx"][0]["reason"]


@pytest.mark.parametrize(
    ("domain", "state", "words"),
    [
        ("invalid.test", "policy_invalid", "the policy has no mode"),
        ("html.test", "policy_invalid", "served as text/html, not text/plain"),
        ("notfound.test", "policy_unavailable", "answers HTTP 404, not 200"),
        ("redirect.test", "policy_unavailable", "answers with a redirect (HTTP 301"),
        ("down.test", "policy_unavailable", "no HTTPS connection to mta-sts.down.test (ECONNREFUSED)"),
        ("badcert.test", "policy_unavailable", "the certificate of mta-sts.badcert.test does not verify"),
        ("nohost.test", "policy_unavailable", "mta-sts.nohost.test does not resolve"),
        ("huge.test", "policy_unavailable", "larger than 64 KiB"),
        ("slow.test", "policy_unavailable", "did not send the whole policy before the deadline"),
        (
            "silent.test",
            "policy_unavailable",
            "accepted the HTTPS connection but sent no HTTP answer before the deadline",
        ),
        (
            "stall.test",
            "policy_unavailable",
            "mta-sts.stall.test did not finish the connection (TCP connect or TLS handshake) before the deadline",
        ),
    ],
)
def test_policy_host_failures(lab, domain, state, words):
    code, doc, elapsed = check(lab, domain)
    assert sts(doc)["state"] == state and words in sts(doc)["reason"], sts(doc)
    assert sts(doc)["id"] is not None and sts(doc)["failing_mx"] == []
    # The policy fetch never stalls the probe: the MX host still accepts, inside the deadline.
    assert code == 0 and doc["mail_domain"]["state"] == "ok", (doc["detail"], doc["transcript"][-12:])
    # The slow, silent, stalled and huge hosts would each hold a fetch forever: the deadline ends it. The
    # slack is for a starved event loop on a loaded machine, not for the host.
    assert doc["duration_seconds"] <= TIMEOUT + 2
    assert elapsed < TIMEOUT + 30  # the whole check process, interpreter start-up included


def test_two_sts_records_mean_no_policy(lab):
    _, doc, _ = check(lab, "twotxt.test")
    assert sts(doc)["state"] == "absent" and "2 _mta-sts TXT records" in sts(doc)["reason"]


def test_human_report_explains_the_failure(lab):
    done = lab.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            "wrongcert.test",
            "--module",
            "sts",
            "--config.file",
            str(lab.config),
        ]
    )
    # Every assert keeps the output: a failure here once went undiagnosed for want of it.
    output = done.stdout + "\n--- stderr ---\n" + done.stderr[-3000:]
    assert (
        "MTA-STS: enforce_failing: MTA-STS enforce: senders that enforce MTA-STS refuse to deliver to mx.wrongcert.test"
        in done.stdout
    ), output
    assert "the certificate is for someone-else.test, not mx.wrongcert.test" in done.stdout, output
    # The account is given once, after the MX table; the transcript says only when the policy was judged.
    assert done.stdout.count("MTA-STS: enforce_failing") == 1, output
    assert "MTA-STS policy judged: enforce_failing" in done.stdout, output
    # The host takes mail: the domain's words must not say that no host accepts it.
    assert (
        "Mail domain: all_mx_failed (every MX host tried takes mail, but senders that enforce MTA-STS refuse them all)"
        in done.stdout
    ), output


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_exporter_series(lab):
    from tests.helpers.exporter_process import free_port, start_exporter

    port = free_port()
    exporter = start_exporter(
        "--config.file", str(lab.config), f"--web.listen-address=127.0.0.1:{port}", prefix=tuple(lab.command([]))
    )
    fetch = (
        "import sys, urllib.request\nsys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())"
    )
    try:
        pages = {
            domain: lab.run([sys.executable, "-c", fetch, f"http://127.0.0.1:{port}/probe?module=sts&target={domain}"])
            for domain in ("unlisted.test", "enforce-ok.test", "absent.test")
        }
    finally:
        exporter.stop()
    lines = pages["unlisted.test"].stdout.splitlines()
    assert 'probe_mta_sts_state{state="enforce_failing"} 1' in lines
    assert 'probe_mta_sts_state{state="enforce_ok"} 0' in lines
    assert 'probe_mta_sts_mx_failing{mx="mx1.good.test",preference="10"} 0' in lines
    assert 'probe_mta_sts_mx_failing{mx="mx2.good.test",preference="20"} 1' in lines
    assert 'probe_mta_sts_mx_state{mx="mx2.good.test",preference="20",state="not_listed"} 1' in lines
    assert "probe_mta_sts_max_age_seconds 604800" in lines
    assert 'probe_mta_sts_policy_info{id="20261206T113",mode="enforce"} 1' in lines
    assert "probe_tls_rpt_present 0" in lines
    assert "probe_success 1" in lines  # the primary takes the mail
    assert "probe_tls_rpt_present 1" in pages["enforce-ok.test"].stdout.splitlines()
    absent = pages["absent.test"].stdout.splitlines()
    assert 'probe_mta_sts_state{state="absent"} 1' in absent
    assert not [line for line in absent if line.startswith(("probe_mta_sts_mx", "probe_mta_sts_max_age"))]
    for page in pages.values():
        lint = subprocess.run(["promtool", "check", "metrics"], input=page.stdout, capture_output=True, text=True)
        assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr


@pytest.mark.e2e
def test_dashboard_mta_sts_panel_queries_return_data_in_a_real_prometheus(lab, tmp_path):
    """The Mail TLS policies panel's MTA-STS queries, in a real Prometheus scraping the exporter in the lab
    (the main e2e stack has no DNS or policy host). unlisted.test gives a failing MX."""
    from tests.helpers.lab_prometheus import panel_queries, query_in_lab_prometheus, series_of

    queries = panel_queries("probe_mta_sts_")
    assert {query["panel"] for query in queries} == {"Mail TLS policies (MTA-STS, DANE)"} and len(queries) >= 2
    config = tmp_path / "targets.yml"
    config.write_text(
        CONFIG + "targets:\n  - {target: enforce-ok.test, module: sts}\n  - {target: unlisted.test, module: sts}\n"
    )
    panel = "Mail TLS policies (MTA-STS, DANE)"

    def shown(results: dict) -> tuple[dict, list]:
        states = {series["target"]: series["state"] for series in series_of(results, queries, panel, "A")}
        failing = [(series["target"], series["mx"]) for series in series_of(results, queries, panel, "B")]
        return states, failing

    expected = (
        {"enforce-ok.test": "enforce_ok", "unlisted.test": "enforce_failing"},
        [("unlisted.test", "mx2.good.test")],
    )
    query_in_lab_prometheus(
        lab,
        tmp_path,
        config,
        queries,
        what=f"the MTA-STS panel queries to show {expected}",
        scrape_seconds=5,
        until=lambda results: shown(results) == expected,
    )
