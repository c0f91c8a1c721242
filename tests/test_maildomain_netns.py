"""Mail domains end to end: a real DNS server (dnsmasq) and real SMTP servers (aiosmtpd, a scripted
554 server, two Exim MTAs) on distinct addresses inside a network namespace of our own; ``check``
and the exporter run as subprocesses in that namespace and find everything through its resolv.conf.

All traffic stays inside the namespace (192.0.2.0/24 and 2001:db8::/32 exist only there).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from tests.helpers.dns_server import ROOT, MailLab, lab_unavailable_reason
from tests.helpers.exim import exim_command, exim_root, exim_workdir
from tests.helpers.exporter_process import start_exporter

pytestmark = [pytest.mark.netns, pytest.mark.mta]

MX_A, MX_DOWN, MX_BLOCK, MX_GREY, MX_SILENT = "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15"
EXIM_OPEN, EXIM_CLOSED = "192.0.2.21", "192.0.2.22"
DNS_SERVFAIL, DNS_SILENT = "192.0.2.97", "192.0.2.98"
MX_A6, MX_DOWN6 = "2001:db8::11", "2001:db8::12"

ENVELOPE = "starttls: no, ehlo: probe.example.org, mail_from: probe@example.org, rcpt_to: postmaster@example.test"
CONFIG = textwrap.dedent(f"""\
    modules:
      mx:
        prober: smtp
        timeout: 10s
        smtp: {{mx: true, {ENVELOPE}}}
      mx_cap2:
        prober: smtp
        timeout: 10s
        smtp: {{mx: true, mx_max_hosts: 2, {ENVELOPE}}}
      mx_relay:
        prober: smtp
        timeout: 10s
        smtp: {{mx: true, relay_check_rcpt_to: relay-test@elsewhere.example, {ENVELOPE}}}
      mx_ip6:
        prober: smtp
        timeout: 10s
        tcp: {{preferred_ip_protocol: ip6}}
        smtp: {{mx: true, {ENVELOPE}}}
      mx_short:
        prober: smtp
        timeout: 3s
        smtp: {{mx: true, {ENVELOPE}}}
    """)

DNS_RECORDS = [
    "--local=/test/",  # every other name under .test: NXDOMAIN
    f"--host-record=mx-a.example.test,{MX_A},{MX_A6}",
    f"--host-record=mx-down.example.test,{MX_DOWN}",
    f"--host-record=mx-block.example.test,{MX_BLOCK}",
    f"--host-record=mx-grey.example.test,{MX_GREY}",
    f"--host-record=mx-silent.example.test,{MX_SILENT}",
    f"--host-record=mx-dual.example.test,{MX_A},{MX_DOWN6}",  # IPv6: nothing listens; IPv4: accepts
    f"--host-record=exim-open.example.test,{EXIM_OPEN}",
    f"--host-record=exim-closed.example.test,{EXIM_CLOSED}",
    # primary accepts, backup down
    "--mx-host=primary-ok.test,mx-a.example.test,10",
    "--mx-host=primary-ok.test,mx-down.example.test,20",
    # primary rejects (554), backup (Exim) accepts
    "--mx-host=degraded.test,mx-block.example.test,10",
    "--mx-host=degraded.test,exim-closed.example.test,20",
    # equal preferences: one greylists, one accepts
    "--mx-host=equal.test,mx-grey.example.test,10",
    "--mx-host=equal.test,mx-a.example.test,10",
    # equal preferences, both accept (aiosmtpd and Exim)
    "--mx-host=pair.test,mx-a.example.test,5",
    "--mx-host=pair.test,exim-closed.example.test,5",
    # nothing accepts: down, greylisted, blocked
    "--mx-host=allfail.test,mx-down.example.test,10",
    "--mx-host=allfail.test,mx-grey.example.test,20",
    "--mx-host=allfail.test,mx-block.example.test,30",
    # nothing accepts, but only temporarily: down and greylisted
    "--mx-host=retry.test,mx-down.example.test,10",
    "--mx-host=retry.test,mx-grey.example.test,20",
    # the primary hangs without a greeting: its share of the deadline runs out, the backup still gets its own
    "--mx-host=stall.test,mx-silent.example.test,10",
    "--mx-host=stall.test,mx-a.example.test,20",
    # four hosts, for the cap
    "--mx-host=many.test,mx-a.example.test,10",
    "--mx-host=many.test,exim-closed.example.test,20",
    "--mx-host=many.test,mx-grey.example.test,30",
    "--mx-host=many.test,mx-block.example.test,40",
    "--mx-host=dual.test,mx-dual.example.test,10",
    "--mx-host=twice.test,mx-a.example.test,20",
    "--mx-host=twice.test,mx-a.example.test,10",
    "--mx-host=null.test,.,0",  # RFC 7505 null MX
    f"--host-record=implicit.test,{MX_A}",  # no MX: the implicit MX
    "--txt-record=nomail.test,no mail here",  # exists, neither MX nor address
    "--mx-host=openrelay.test,exim-open.example.test,10",
    "--mx-host=closedrelay.test,exim-closed.example.test,10",
    f"--server=/servfail.test/{DNS_SERVFAIL}",  # upstream answers SERVFAIL
    f"--server=/slow.test/{DNS_SILENT}",  # upstream never answers
]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    reason = lab_unavailable_reason()
    if reason:
        pytest.skip(reason)
    root, why = exim_root()
    if root is None:
        pytest.skip(f"Exim (the real MTA of these tests) is unavailable: {why}")
    tmp = tmp_path_factory.mktemp("maillab")
    lab = MailLab(tmp)
    exim_dir = exim_workdir()
    try:
        lab.create(
            [
                MX_A,
                MX_DOWN,
                MX_BLOCK,
                MX_GREY,
                MX_SILENT,
                EXIM_OPEN,
                EXIM_CLOSED,
                DNS_SERVFAIL,
                DNS_SILENT,
                MX_A6,
                MX_DOWN6,
            ]
        )
        lab.start_dns(*DNS_RECORDS)
        spec = [
            ["accept", MX_A, 25],
            ["block554", MX_BLOCK, 25],
            ["greylist", MX_GREY, 25],
            ["silent", MX_SILENT, 25],
            ["dns_servfail", DNS_SERVFAIL, 53],
            ["dns_silent", DNS_SILENT, 53],
        ]
        servers = lab.popen(
            [sys.executable, "-m", "tests.scenarios.maildomain_servers", json.dumps(spec)],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        assert servers.stdout is not None and servers.stdout.readline().strip() == "ready"
        for address, name, open_relay in (
            (EXIM_OPEN, "exim-open.example.test", True),
            (EXIM_CLOSED, "exim-closed.example.test", False),
        ):
            with open(tmp / f"{name}.out", "w") as out:
                lab.popen(
                    exim_command(root, exim_dir / name, address, name, "example.test", open_relay),
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        for address in (MX_A, MX_BLOCK, MX_GREY, MX_SILENT, EXIM_OPEN, EXIM_CLOSED):
            lab.wait_for(f"import socket; socket.create_connection(('{address}', 25), timeout=2).close()")
        (tmp / "config.yml").write_text(CONFIG)
        lab.config = tmp / "config.yml"
        yield lab
    finally:
        lab.close()
        shutil.rmtree(exim_dir, ignore_errors=True)


def check(lab: MailLab, domain: str, module: str = "mx") -> tuple[int, dict]:
    done = lab.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            domain,
            "--module",
            module,
            "--config.file",
            str(lab.config),
            "--json",
        ],
        timeout=90,
    )
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def hosts(document: dict) -> list[tuple]:
    return [(mx["preference"], mx["host"], mx["state"]) for mx in document["mail_domain"]["mx"]]


def test_primary_accepts_backup_down_is_ok(lab):
    code, doc = check(lab, "primary-ok.test")
    assert code == 0 and doc["success"] is True
    assert doc["mail_domain"]["state"] == "ok"
    assert hosts(doc) == [(10, "mx-a.example.test", "ok"), (20, "mx-down.example.test", "connect_failed")]
    first, backup = doc["mail_domain"]["mx"]
    assert first["addresses"] == [MX_A, MX_A6]  # ip4 preferred, ip6 as fallback
    assert first["greeting"].startswith("220 aiosmtpd-192.0.2.11")
    assert backup["tcp_state"] == "refused" and backup["addresses"] == [MX_DOWN]
    assert "backup host(s) fail: mx-down.example.test" in doc["mail_domain"]["verdict"]


def test_primary_rejects_554_backup_exim_accepts_is_degraded(lab):
    code, doc = check(lab, "degraded.test")
    assert code == 0 and doc["success"] is True
    assert doc["mail_domain"]["state"] == "degraded"
    assert hosts(doc) == [(10, "mx-block.example.test", "banner_rejected"), (20, "exim-closed.example.test", "ok")]
    assert doc["mail_domain"]["mx"][0]["reply_codes"]["banner"] == "554 5.7.1"
    exim = doc["mail_domain"]["mx"][1]
    assert "Exim" in exim["greeting"] and exim["reply_codes"]["rcpt"].startswith("250")
    assert "delayed, not lost" in doc["mail_domain"]["verdict"]


def test_equal_preferences_are_tried_in_stable_name_order(lab):
    code, doc = check(lab, "equal.test")
    assert hosts(doc) == [(10, "mx-a.example.test", "ok"), (10, "mx-grey.example.test", "recipient_rejected")]
    # An equally preferred host that greylists delays the senders that pick it first.
    assert doc["mail_domain"]["state"] == "degraded" and code == 0
    assert doc["mail_domain"]["mx"][1]["reply_codes"]["rcpt"] == "450 4.2.0"
    code, doc = check(lab, "pair.test")
    assert hosts(doc) == [(5, "exim-closed.example.test", "ok"), (5, "mx-a.example.test", "ok")]
    assert doc["mail_domain"]["state"] == "ok" and code == 0


def test_no_host_accepts(lab):
    code, doc = check(lab, "allfail.test")
    assert code == 1 and doc["success"] is False
    assert doc["mail_domain"]["state"] == "all_mx_failed"
    assert hosts(doc) == [
        (10, "mx-down.example.test", "connect_failed"),
        (20, "mx-grey.example.test", "recipient_rejected"),
        (30, "mx-block.example.test", "banner_rejected"),
    ]
    verdict = doc["mail_domain"]["verdict"]
    assert verdict.startswith("no MX host of allfail.test accepts mail (3 MX host(s) tried)")  # 554: not temporary
    assert (
        "mx-down.example.test: connect_failed (refused); mx-grey.example.test: recipient_rejected "
        "(450 4.2.0, temporary); mx-block.example.test: banner_rejected (554 5.7.1, permanent)"
    ) in verdict


def test_only_temporary_failures_are_called_temporary(lab):
    code, doc = check(lab, "retry.test")
    assert code == 1 and doc["mail_domain"]["state"] == "all_mx_failed"
    assert "every failure is temporary (senders queue and retry" in doc["mail_domain"]["verdict"]


def test_hung_primary_gets_its_share_and_the_backup_still_answers(lab):
    # mx_short: 3 s for two hosts. The silent primary may use its half; the backup is probed after it.
    code, doc = check(lab, "stall.test", "mx_short")
    assert hosts(doc) == [(10, "mx-silent.example.test", "banner_timeout"), (20, "mx-a.example.test", "ok")]
    assert code == 0 and doc["mail_domain"]["state"] == "degraded"
    # Without the fair share the primary would have used all 3 s and the backup would be "not_probed".


def test_cap_on_hosts_probed(lab):
    code, doc = check(lab, "many.test", "mx_cap2")
    assert code == 0 and doc["mail_domain"]["mx_records"] == 4
    assert [mx["state"] for mx in doc["mail_domain"]["mx"]] == ["ok", "ok", "not_probed", "not_probed"]


def test_preferred_family_first_then_the_other_address(lab):
    code, doc = check(lab, "dual.test", "mx_ip6")
    assert code == 0 and hosts(doc) == [(10, "mx-dual.example.test", "ok")]
    mx = doc["mail_domain"]["mx"][0]
    assert mx["addresses"] == [MX_DOWN6, MX_A] and mx["address"] == MX_A
    assert "ECONNREFUSED" in "\n".join(doc["transcript"]) and doc["ip_protocol"] == 4
    code, doc = check(lab, "dual.test")  # ip4 preferred: the IPv4 address answers at once
    assert doc["mail_domain"]["mx"][0]["addresses"] == [MX_A, MX_DOWN6]
    assert "ECONNREFUSED" not in "\n".join(doc["transcript"])


def test_no_resolver_configured_is_a_dns_error_not_a_crash(lab):
    script = (
        f"mount --bind /dev/null /etc/resolv.conf && exec {sys.executable} -m exporter check primary-ok.test "
        f"--module mx --config.file {lab.config} --json"
    )
    done = lab.run(["unshare", "-m", "sh", "-c", script], timeout=90)
    assert done.returncode == 1, done.stderr
    doc = json.loads(done.stdout)
    assert doc["mail_domain"]["state"] == "dns_error"
    assert doc["verdict"].startswith("no DNS resolver to ask for the MX records")


def test_a_host_listed_twice_is_probed_once_at_its_better_preference(lab):
    code, doc = check(lab, "twice.test")
    assert code == 0 and doc["mail_domain"]["mx_records"] == 2
    assert hosts(doc) == [(10, "mx-a.example.test", "ok")]


def test_null_mx(lab):
    code, doc = check(lab, "null.test")
    assert code == 1 and doc["mail_domain"] == {**doc["mail_domain"], "state": "null_mx", "mx": [], "mx_records": 1}
    assert "RFC 7505" in doc["mail_domain"]["verdict"]


def test_implicit_mx_when_no_mx_record(lab):
    code, doc = check(lab, "implicit.test")
    assert code == 0 and doc["mail_domain"]["state"] == "ok" and doc["mail_domain"]["implicit_mx"] is True
    assert hosts(doc) == [(0, "implicit.test", "ok")] and doc["mail_domain"]["mx_records"] == 0


def test_domain_without_mx_or_address_takes_no_mail(lab):
    code, doc = check(lab, "nomail.test")
    assert code == 1 and doc["mail_domain"]["state"] == "no_mail_host" and doc["mail_domain"]["mx"] == []


def test_nxdomain(lab):
    code, doc = check(lab, "missing.test")
    assert code == 1 and doc["mail_domain"]["state"] == "no_such_domain"
    assert "NXDOMAIN" in doc["mail_domain"]["verdict"]
    assert (doc["state"], doc["tcp_state"]) == ("connect_failed", "dns_error")


def test_servfail_and_silent_resolver_are_temporary_dns_errors(lab):
    code, doc = check(lab, "servfail.test")
    assert code == 1 and doc["mail_domain"]["state"] == "dns_error" and doc["mail_domain"]["mx_records"] is None
    assert "temporary" in doc["mail_domain"]["verdict"]
    code, doc = check(lab, "slow.test", "mx_short")
    assert code == 1 and doc["mail_domain"]["state"] == "dns_error"
    assert "no DNS answer" in doc["mail_domain"]["verdict"]


def test_relay_check_tells_open_exim_from_closed_exim(lab):
    code, doc = check(lab, "openrelay.test", "mx_relay")
    assert code == 1 and doc["mail_domain"]["state"] == "all_mx_failed"
    assert hosts(doc) == [(10, "exim-open.example.test", "open_relay")]
    assert doc["mail_domain"]["mx"][0]["reply_codes"]["relay_rcpt"].startswith("250")
    assert "open relay" in doc["mail_domain"]["mx"][0]["detail"]
    assert "open relay (accepted a foreign recipient)" in doc["mail_domain"]["verdict"]
    assert "temporary" not in doc["mail_domain"]["verdict"]
    code, doc = check(lab, "closedrelay.test", "mx_relay")
    assert code == 0 and hosts(doc) == [(10, "exim-closed.example.test", "ok")]
    assert doc["mail_domain"]["mx"][0]["reply_codes"]["relay_rcpt"] == "550"
    assert any("Open-relay check passed" in line for line in doc["transcript"])


def test_check_prints_the_mx_table_and_verdict(lab):
    done = lab.run(
        [
            sys.executable,
            "-m",
            "exporter",
            "check",
            "degraded.test",
            "--module",
            "mx",
            "--config.file",
            str(lab.config),
        ],
        timeout=90,
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Mail domain: degraded (a preferred MX host fails, a backup accepts: mail is delayed, not lost)" in out
    assert "MX hosts of degraded.test, in the order tried:" in out
    table = out[out.index("PREF  MX HOST") :].splitlines()
    assert table[1].split()[:4] == ["10", "mx-block.example.test", MX_BLOCK, "banner_rejected"]
    assert "554 Service unavailable" in table[1] or "554 5.7.1 Service unavailable" in table[1]
    assert table[2].split()[:4] == ["20", "exim-closed.example.test", EXIM_CLOSED, "ok"]
    assert "Mail to degraded.test is delayed, not lost: mx-block.example.test (preference 10) fails" in out


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_exporter_probe_metrics_and_debug_page(lab, tmp_path):
    from tests.helpers.exporter_process import free_port

    port = free_port()
    exporter = start_exporter(
        "--config.file", str(lab.config), f"--web.listen-address=127.0.0.1:{port}", prefix=tuple(lab.command([]))
    )
    try:
        fetch = (
            "import sys, urllib.request\n"
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())"
        )
        url = f"http://127.0.0.1:{port}/probe?module=mx&target=primary-ok.test"
        metrics = lab.run([sys.executable, "-c", fetch, url]).stdout
        debug = lab.run([sys.executable, "-c", fetch, url + "&debug=true"]).stdout
    finally:
        exporter.stop()
    lines = metrics.splitlines()
    assert "probe_success 1" in lines
    assert 'probe_mail_domain_state{state="ok"} 1' in lines
    assert 'probe_mail_domain_state{state="degraded"} 0' in lines
    assert "probe_mx_records 2" in lines
    assert 'probe_mx_success{mx="mx-a.example.test",preference="10"} 1' in lines
    assert 'probe_mx_success{mx="mx-down.example.test",preference="20"} 0' in lines
    assert 'probe_mx_smtp_state{mx="mx-down.example.test",preference="20",state="connect_failed"} 1' in lines
    assert 'probe_mx_tcp_state{mx="mx-down.example.test",preference="20",state="refused"} 1' in lines
    assert 'probe_mx_reply_code{mx="mx-a.example.test",preference="10",stage="rcpt"} 250' in lines
    assert 'probe_smtp_state{state="ok"} 1' in lines  # the top-level series: the accepting host's dialogue
    (tmp_path / "metrics.txt").write_text(metrics)
    lint = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not lint.stdout.strip() and not lint.stderr.strip(), lint.stdout + lint.stderr
    assert "Mail domain: ok (mail to the domain is accepted now)" in debug
    assert "MX hosts of primary-ok.test, in the order tried:" in debug
    assert "mx-down.example.test" in debug
    assert "PREF  MX HOST" in debug


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed (Debian package prometheus)")
def test_metrics_scrape_of_domain_targets_through_probe_workers(lab, tmp_path):
    """Configured domain targets on /metrics, probed in a worker process (results cross a pipe)."""
    from tests.helpers.exporter_process import free_port

    config = tmp_path / "targets.yml"
    config.write_text(
        CONFIG
        + textwrap.dedent("""\
        targets:
          - {target: primary-ok.test, module: mx, labels: {site: lab}}
          - {target: degraded.test, module: mx}
          - {target: null.test, module: mx}
        """)
    )
    port = free_port()
    exporter = start_exporter(
        "--config.file",
        str(config),
        f"--web.listen-address=127.0.0.1:{port}",
        "--runtime.probe-processes=2",
        prefix=tuple(lab.command([])),
    )
    try:
        fetch = (
            "import sys, urllib.request\n"
            "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=60).read().decode())"
        )
        metrics = lab.run([sys.executable, "-c", fetch, f"http://127.0.0.1:{port}/metrics"]).stdout
    finally:
        exporter.stop()
    lines = metrics.splitlines()
    # The target label is the domain as configured (issue 21: it was "primary-ok.test:25").
    assert 'probe_mail_domain_state{target="primary-ok.test",module="mx",site="lab",state="ok"} 1' in lines
    assert 'probe_mail_domain_state{target="degraded.test",module="mx",state="degraded"} 1' in lines
    assert 'probe_mail_domain_state{target="null.test",module="mx",state="null_mx"} 1' in lines
    assert (
        'probe_mx_success{target="degraded.test",module="mx",mx="exim-closed.example.test",preference="20"} 1'
    ) in lines
    assert 'probe_success{target="null.test",module="mx"} 0' in lines
    lint = subprocess.run(["promtool", "check", "metrics"], input=metrics, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0, lint.stdout + lint.stderr


@pytest.mark.e2e
def test_dashboard_mail_domain_panels_return_data_in_a_real_prometheus(lab, tmp_path):
    """The dashboard's Mail domains row, queried in a real Prometheus scraping the exporter in the lab."""
    from tests.helpers.lab_prometheus import panel_queries, query_in_lab_prometheus, series_of

    queries = panel_queries("probe_mx_", "probe_mail_domain_")
    assert len(queries) >= 4
    config = tmp_path / "targets.yml"
    config.write_text(
        CONFIG + "targets:\n  - {target: primary-ok.test, module: mx}\n  - {target: degraded.test, module: mx}\n"
    )
    results = query_in_lab_prometheus(
        lab, tmp_path, config, queries, what="every mail-domain panel's query to return data"
    )
    verdicts = {series["target"]: series["state"] for series in series_of(results, queries, "Mail domain verdict")}
    assert verdicts == {"primary-ok.test": "ok", "degraded.test": "degraded"}
