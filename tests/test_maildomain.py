"""Mail domains without a namespace: the domain verdict, the metric families (checked by promtool),
the open-relay check against real loopback servers, and what reaches other processes.

The DNS side (dnsmasq, several real SMTP servers, Exim) is in test_maildomain_netns.py.
"""

from __future__ import annotations

import asyncio
import pickle
import shutil
import subprocess

import pytest

from exporter.core.address import parse_host_port
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult
from exporter.probers.smtp.domain import (
    MAIL_DOMAIN_FAMILIES,
    MailDomainDetails,
    MailDomainState,
    MxHost,
    _finish,
    _verdict,
    _verdict_words,
    probe_mail_domain,
)
from exporter.probers.smtp.domain_details import render_text
from exporter.probers.smtp.replies import Reply
from exporter.probers.smtp.result import SmtpDetails
from exporter.service.exporter import render_single
from tests.helpers import smtp_servers
from tests.helpers.smtp_servers import Script, probe, smtp_config

servers = smtp_servers.servers  # the fixture

RELAY = (
    "{starttls: no, mail_from: probe@example.org, rcpt_to: postmaster@example.test, "
    "relay_check_rcpt_to: relay-test@elsewhere.example}"
)


def host(name: str, preference: int, state: str = "ok", tcp_state: str = "open", **replies: int) -> MxHost:
    details = SmtpDetails(
        replies={stage: Reply(code, (f"{code} text",), (f"{code} text".encode(),)) for stage, code in replies.items()}
    )
    return MxHost(
        name,
        preference,
        ["192.0.2.1"],
        state=state,
        tcp_state=tcp_state,
        success=state == "ok",
        address="192.0.2.1",
        smtp=details,
    )


# --- the verdict ---------------------------------------------------------------------------


def test_primary_accepting_is_ok_even_with_a_backup_down():
    hosts = [host("a", 10), host("b", 20, "connect_failed", "refused")]
    assert _verdict(hosts) is MailDomainState.OK


def test_primary_failing_backup_accepting_is_degraded():
    hosts = [host("a", 10, "banner_rejected", banner=554), host("b", 20)]
    assert _verdict(hosts) is MailDomainState.DEGRADED


def test_an_equally_preferred_host_failing_is_degraded_whatever_the_order():
    for hosts in (
        [host("a", 10), host("b", 10, "recipient_rejected", rcpt=450)],
        [host("b", 10, "recipient_rejected", rcpt=450), host("a", 10)],
    ):
        assert _verdict(hosts) is MailDomainState.DEGRADED


def test_nothing_accepting_is_all_mx_failed_and_not_probed_hosts_do_not_count():
    hosts = [host("a", 10, "connect_failed", "timeout"), MxHost("b", 20)]  # b: beyond the cap
    assert _verdict(hosts) is MailDomainState.ALL_MX_FAILED
    assert _verdict([host("a", 10), MxHost("b", 5)]) is MailDomainState.OK


def test_every_host_answering_521_is_explained_as_a_domain_taking_no_mail():
    details = MailDomainDetails(
        "example.test", mx=[host("a", 10, "banner_rejected", banner=521), host("b", 20, "banner_rejected", banner=521)]
    )
    details.state = _verdict(details.mx)
    assert "every MX host of example.test answers 521" in _verdict_words(details)
    assert "RFC 7504" in _verdict_words(details)


def domain_result(mx: list[MxHost], domain: str = "example.test") -> ProbeResult:
    details = MailDomainDetails(domain, mx_records=len(mx), mx=mx)
    details.state = _verdict(mx)
    details.verdict = _verdict_words(details)
    return _finish(ProbeResult(details=details), details)


def test_top_level_series_follow_the_accepting_host():
    result = domain_result([host("a", 10, "banner_rejected", banner=554), host("b", 20)])
    assert (result.success, result.state, result.tcp_state) == (True, "ok", "open")
    failed = domain_result([host("a", 10, "connect_failed", "refused")])
    assert (failed.success, failed.state, failed.tcp_state) == (False, "connect_failed", "refused")


# --- metrics ---------------------------------------------------------------------------------


def test_families_are_per_host_and_promtool_clean():
    module = smtp_config("{mx: true}").modules["m"]
    result = domain_result(
        [
            host('mx"1\\.example.test', 10, "banner_rejected", banner=554),
            host("mx2.example.test", 20),
            MxHost("mx3.example.test", 30),
        ]
    )
    text = render_single(result, module)
    lines = text.splitlines()
    assert 'probe_mail_domain_state{state="degraded"} 1' in lines
    assert sum(line.startswith("probe_mail_domain_state{") and line.endswith(" 1") for line in lines) == 1
    assert "probe_mx_records 3" in lines
    # Label values from DNS are escaped; hosts beyond the cap (not probed) get no series.
    assert 'probe_mx_success{mx="mx\\"1\\\\.example.test",preference="10"} 0' in lines
    assert 'probe_mx_reply_code{mx="mx\\"1\\\\.example.test",preference="10",stage="banner"} 554' in lines
    assert 'probe_mx_smtp_state{mx="mx2.example.test",preference="20",state="ok"} 1' in lines
    assert not any('mx="mx3.example.test"' in line for line in lines)
    if shutil.which("promtool") is None:
        pytest.skip("promtool is not installed (Debian package prometheus)")
    lint = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    assert lint.returncode == 0 and not (lint.stdout + lint.stderr).strip(), lint.stdout + lint.stderr


async def test_single_host_smtp_results_carry_no_mail_domain_series(servers):
    result = await probe(await servers.start(Script()), "{starttls: no}")
    text = render_single(result, smtp_config("{}").modules["m"])
    assert "probe_smtp_state" in text and "probe_mail_domain_state" not in text and "probe_mx_" not in text


def test_a_domain_result_survives_the_trip_to_a_probe_worker():
    result = domain_result([host("a", 10), host("b", 20, "connect_failed", "refused")])
    copy = pickle.loads(pickle.dumps(result))
    assert copy.details.contract() == result.details.contract() and copy.details.state is MailDomainState.OK


def test_the_mx_table():
    result = domain_result(
        [
            host("a.example.test", 10, "connect_failed", "refused"),
            host("b.example.test", 20),
            MxHost("c.example.test", 30),
        ]
    )
    lines = render_text(result.details)
    assert lines[0] == "MX hosts of example.test, in the order tried:"
    assert lines[1].split() == ["PREF", "MX", "HOST", "ADDRESSES", "STATE", "GREETING"]
    assert lines[2].split()[:5] == ["10", "a.example.test", "192.0.2.1", "connect_failed", "(refused)"]
    assert lines[4].split() == ["30", "c.example.test", "-", "not_probed", "-"]
    assert SmtpDetails().report_lines() == []  # one host's details: no MX table
    assert render_text(MailDomainDetails("null.test", MailDomainState.NULL_MX)) == []


async def test_an_ip_address_is_not_a_mail_domain():
    module = smtp_config("{mx: true}").modules["m"]
    resolver = Resolver(max_workers=1)
    try:
        result = await probe_mail_domain(
            parse_host_port("127.0.0.1", 25), module, asyncio.get_running_loop().time() + 2, resolver
        )
    finally:
        resolver.close()
    assert result.success is False and result.details.state is MailDomainState.DNS_ERROR
    assert "is an IP address, not a mail domain" in result.detail


# --- the open-relay check (on the smtp prober, one host) -------------------------------------------


def answering_rcpt(*answers: bytes):
    """A scripted server whose successive RCPT replies are ``answers`` (the defaults for other verbs)."""
    replies = iter(answers)

    async def handler(reader, writer):
        writer.write(Script.greeting)
        await writer.drain()
        for _ in range(50):
            line = await reader.readline()
            if not line:
                return
            verb = line.split(b" ")[0].strip().upper().decode()
            writer.write(next(replies) if verb == "RCPT" else Script.DEFAULTS.get(verb, b"500 5.5.1 What\r\n"))
            await writer.drain()
            if verb == "QUIT":
                return

    return handler


async def test_relay_check_accepting_a_foreign_recipient_is_an_open_relay(servers):
    server = Script()
    result = await probe(await servers.start(server), RELAY)
    assert (result.state, result.success) == ("open_relay", False)
    assert result.detail.startswith("open relay: RCPT TO:<relay-test@elsewhere.example> was answered 250 2.1.5")
    sent = [line.strip().decode() for line in server.received]
    # The configured envelope, then the relay check in its own transaction: nothing is ever sent.
    assert sent[0].startswith("EHLO ")
    assert sent[1:] == [
        "MAIL FROM:<probe@example.org>",
        "RCPT TO:<postmaster@example.test>",
        "RSET",
        "MAIL FROM:<probe@example.org>",
        "RCPT TO:<relay-test@elsewhere.example>",
        "RSET",
        "QUIT",
    ]


async def test_relay_check_refused_with_550_passes(servers):
    port = await servers.start(answering_rcpt(b"250 2.1.5 OK\r\n", b"550 5.7.1 Relaying denied\r\n"))
    result = await probe(port, RELAY)
    assert (result.state, result.success) == ("ok", True), result.detail
    assert result.details.replies["relay_rcpt"].code == 550
    assert any("Open-relay check passed" in line for line in result.transcript)


async def test_relay_check_refused_for_now_is_inconclusive_not_a_failure(servers):
    port = await servers.start(answering_rcpt(b"250 2.1.5 OK\r\n", b"451 4.7.1 Try again later\r\n"))
    result = await probe(port, RELAY)
    assert (result.state, result.success) == ("ok", True)
    assert any("Open-relay check inconclusive" in line and "451 4.7.1" in line for line in result.transcript)


async def test_no_relay_check_unless_configured(servers):
    server = Script()
    result = await probe(await servers.start(server), "{starttls: no, mail_from: probe@example.org}")
    assert result.state == "ok" and b"RCPT" not in b"".join(server.received)


def test_replies_are_explained_per_host_with_rfc_7504_domain_wording():
    smtp = SmtpDetails(
        reply_explanations=[
            ("banner 220", "the server is ready"),
            ("rcpt 556 5.1.10", "the recipient's domain does not accept mail"),
        ]
    )
    details = MailDomainDetails(
        "example.test", mx=[MxHost("mx1.example.test", 10, state="recipient_rejected", smtp=smtp)]
    )
    explained = dict(details.explanations())
    assert explained["mx1.example.test: banner 220"] == "the server is ready"
    assert explained["mx1.example.test: rcpt 556 5.1.10"].startswith(
        "556 (RFC 7504): the recipient's domain does not accept mail"
    )
    assert "must not retry" in explained["mx1.example.test: rcpt 556 5.1.10"]


async def test_the_smtp_plugin_serves_both_kinds_of_result(servers):
    from exporter.probers.table import PROBERS

    smtp = PROBERS["smtp"]
    domain = domain_result([host("a", 10), host("b", 20, "connect_failed", "refused")])
    assert domain.details.json_sections() == {"mail_domain": domain.details.contract()}
    assert [(fact.label, fact.text) for fact in domain.details.facts(str(domain.state), 0.0)] == [
        ("Mail domain", "ok (mail to the domain is accepted now)")
    ]
    assert domain.details.report_lines()[0] == "MX hosts of example.test, in the order tried:"
    assert set(MAIL_DOMAIN_FAMILIES) <= smtp.family_set
    single = await probe(await servers.start(Script()), "{starttls: no}")
    assert single.details.json_sections() == {} and single.details.contract()["encrypted"] is False
    assert [fact.label for fact in single.details.facts(str(single.state), 0.0)][:1] == ["Banner after"]
