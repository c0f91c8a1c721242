"""MTA-STS, TLS-RPT and DANE pieces without a network: the TXT records, the policy text, MX patterns (RFC 8461),
the TLS-RPT record (RFC 8460), TLSA matching (RFC 6698/7671/7672) and the words each state gives."""

from __future__ import annotations

import hashlib

import pytest

from exporter.probers.smtp import dane
from exporter.probers.smtp.dane import DaneState
from exporter.probers.smtp.mta_sts import (
    MtaStsResult,
    MtaStsState,
    MxPolicyState,
    Policy,
    check_mx,
    classify,
    matches,
    parse_policy,
    parse_txt,
    state_words,
)
from exporter.probers.smtp.mx_certificate import MxTls, TlsOutcome
from exporter.probers.smtp.policy_dns import Lookup, Tlsa, TlsaAnswer
from exporter.probers.smtp.tls_rpt import parse_tls_rpt

trustme = pytest.importorskip("trustme")
x509 = pytest.importorskip("cryptography.x509")
serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")


@pytest.mark.parametrize(
    ("records", "expected", "why"),
    [
        (["v=STSv1; id=20190429T010101;"], "20190429T010101", ""),
        (["v=STSv1;id=abc"], "abc", ""),
        (["v=spf1 -all", "v=STSv1; id=x1"], "x1", ""),  # other TXT records are discarded
        ([], None, "no _mta-sts TXT record beginning with v=STSv1;"),
        (["v=STSv1; id=a", "v=STSv1; id=b"], None, "2 _mta-sts TXT records"),
        (["v=STSv1"], None, "lacks the ';'"),
        (["v=STSv1; foo=bar"], None, "has no id= field"),
        (["v=STSv1; id=" + "a" * 33], None, "is not 1 to 32 letters and digits"),
        (["v=STSv1; id=not-alnum"], None, "is not 1 to 32 letters and digits"),
    ],
)
def test_txt_record(records, expected, why):
    policy_id, reason = parse_txt(records)
    assert policy_id == expected and why in reason


def test_policy_parses_crlf_lf_and_ignores_unknown_keys():
    text = "version: STSv1\r\nmode: enforce\nmx: MX1.example.com\r\nmx: *.example.net\nmax_age: 86400\r\nfuture: x\r\n"
    assert parse_policy(text) == Policy("enforce", 86400, ("mx1.example.com", "*.example.net"))
    assert parse_policy("version: STSv1\nmode: none\nmax_age: 0\n") == Policy("none", 0, ())


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("mode: enforce\nmx: a.example\nmax_age: 1\n", "no 'version: STSv1' line"),
        ("version: STSv1\nmx: a.example\nmax_age: 1\n", "the policy has no mode"),
        ("version: STSv1\nmode: strict\nmx: a.example\nmax_age: 1\n", "mode is 'strict'"),
        ("version: STSv1\nmode: enforce\nmx: a.example\n", "no max_age"),
        ("version: STSv1\nmode: enforce\nmx: a.example\nmax_age: 31557601\n", "above the maximum of 31557600"),
        ("version: STSv1\nmode: testing\nmax_age: 60\n", "lists no mx pattern"),
        ("version: STSv1\nmode: enforce\nmx: mx*.example\nmax_age: 60\n", "is not a host name"),
        ("version: STSv1\nmode enforce\n", "line 2 of the policy is not 'key: value'"),
    ],
)
def test_invalid_policies_say_why(text, why):
    reason = parse_policy(text)
    assert isinstance(reason, str) and why in reason


@pytest.mark.parametrize(
    ("pattern", "host", "expected"),
    [
        ("mail.example.com", "mail.example.com", True),
        ("mail.example.com", "MAIL.Example.com.", True),
        ("*.example.com", "mail.example.com", True),
        ("*.example.com", "example.com", False),  # the wildcard is one label, not zero
        ("*.example.com", "a.b.example.com", False),  # ... and not two (RFC 8461 §4.1)
        ("*.example.com", "mail.example.net", False),
        ("mail.example.com", "mail2.example.com", False),
    ],
)
def test_mx_patterns(pattern, host, expected):
    assert matches(pattern, host) is expected


ENFORCE = Policy("enforce", 86400, ("mx1.example.com", "*.example.net"))


def test_mx_checks_and_their_words():
    wrong = MxTls(TlsOutcome.NOT_VERIFIED, "192.0.2.1", verify_code=62, names=["someone-else.test"])
    assert check_mx(ENFORCE, "mx1.example.com", 10, wrong).reason == (
        "the certificate is for someone-else.test, not mx1.example.com"
    )
    expired = MxTls(TlsOutcome.NOT_VERIFIED, "192.0.2.1", verify_code=10, names=["mx1.example.com"])
    assert check_mx(ENFORCE, "mx1.example.com", 10, expired).reason == (
        "the certificate (for mx1.example.com) has expired"
    )
    unlisted = check_mx(ENFORCE, "mx9.example.org", 20, MxTls(TlsOutcome.VERIFIED))
    assert unlisted.state is MxPolicyState.NOT_LISTED and unlisted.failing
    assert unlisted.reason == "mx9.example.org is not listed in the policy (mx: mx1.example.com, *.example.net)"
    assert check_mx(ENFORCE, "a.example.net", 10, MxTls(TlsOutcome.VERIFIED)).state is MxPolicyState.OK
    unreached = check_mx(ENFORCE, "a.example.net", 10, MxTls(TlsOutcome.UNREACHED, reason="connect failed"))
    assert unreached.state is MxPolicyState.UNCHECKED and not unreached.failing


@pytest.mark.parametrize(
    ("mode", "failing", "state", "words"),
    [
        (
            "enforce",
            True,
            MtaStsState.ENFORCE_FAILING,
            "senders that enforce MTA-STS refuse to deliver to mx9.example.org",
        ),
        ("enforce", False, MtaStsState.ENFORCE_OK, "every MX host checked is listed"),
        ("testing", True, MtaStsState.TESTING_FAILING, "senders still deliver and report the failure (TLS-RPT)"),
        ("testing", False, MtaStsState.TESTING_OK, "MTA-STS testing: every MX host checked"),
        ("none", False, MtaStsState.NONE, "mode none"),
    ],
)
def test_domain_state(mode, failing, state, words):
    policy = Policy(mode, 86400, ("mx1.example.com",))
    result = MtaStsResult(policy=policy, id="x")
    host = "mx9.example.org" if failing else "mx1.example.com"
    result.mx = [check_mx(policy, host, 10, MxTls(TlsOutcome.VERIFIED))]
    classify(result)
    assert result.state is state and words in state_words("example.com", result)


def test_tls_rpt_record():
    found = parse_tls_rpt(["v=TLSRPTv1; rua=mailto:reports@example.com,https://r.example.com/v1"])
    assert found.present and found.rua == ["mailto:reports@example.com", "https://r.example.com/v1"]
    assert not parse_tls_rpt([]).present
    assert (
        "2 _smtp._tls TXT records" in parse_tls_rpt(["v=TLSRPTv1; rua=mailto:a@b", "v=TLSRPTv1;rua=mailto:c@d"]).reason
    )
    assert "no rua=" in parse_tls_rpt(["v=TLSRPTv1;"]).reason
    assert "not a list of mailto: or https:" in parse_tls_rpt(["v=TLSRPTv1; rua=ftp://x"]).reason


@pytest.fixture(scope="module")
def chain():
    ca = trustme.CA()
    intermediate = ca.create_child_ca()
    leaf = intermediate.issue_cert("mx.example.com")
    pems = [blob.bytes() for blob in leaf.cert_chain_pems]
    return [x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER) for pem in pems]


def test_spki_is_the_certificates_public_key_info(chain):
    for der in chain:
        key = x509.load_der_x509_certificate(der).public_key()
        expected = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        assert dane.spki(der) == expected


def test_tlsa_matching(chain):
    leaf, issuer = chain[0], chain[1]
    spki = dane.spki(leaf)
    assert dane.match_ee([Tlsa(3, 1, 1, hashlib.sha256(spki).digest())], chain)
    assert dane.match_ee([Tlsa(3, 0, 2, hashlib.sha512(leaf).digest())], chain)
    assert dane.match_ee([Tlsa(3, 1, 0, spki)], chain)
    assert not dane.match_ee([Tlsa(3, 1, 1, hashlib.sha256(dane.spki(issuer)).digest())], chain)
    assert dane.ta_candidates([Tlsa(2, 0, 1, hashlib.sha256(issuer).digest())], chain) == [issuer]
    assert dane.ta_candidates([Tlsa(2, 0, 1, hashlib.sha256(leaf).digest())], chain) == []


@pytest.mark.parametrize(
    ("answer", "state", "words"),
    [
        (TlsaAnswer(Lookup.BOGUS), DaneState.BOGUS, "fails (bogus)"),
        (TlsaAnswer(Lookup.ERROR, reason="timeout"), DaneState.DNS_ERROR, "could not be looked up: timeout"),
        (TlsaAnswer(Lookup.NONE, secure=True), DaneState.ABSENT, "a validated denial"),
        (TlsaAnswer(Lookup.NONE, secure=False), DaneState.ABSENT, "not validated"),
        (TlsaAnswer(Lookup.FOUND, False, [Tlsa(3, 1, 1, b"x")]), DaneState.UNSIGNED, "not DNSSEC-validated"),
        (TlsaAnswer(Lookup.FOUND, True, [Tlsa(1, 1, 1, b"x")]), DaneState.UNUSABLE, "RFC 7672 §3.1.3"),
    ],
)
def test_dane_states_decided_by_dns(answer, state, words):
    check = dane.from_answer("mx.example.com", 10, answer)
    assert check is not None and check.state is state and words in check.reason
    assert dane.from_answer("mx.example.com", 10, TlsaAnswer(Lookup.FOUND, True, [Tlsa(3, 1, 1, b"x")])) is None


def test_dane_summary_is_the_worst_host():
    checks = [dane.DaneCheck("a", 10, DaneState.VALID, ""), dane.DaneCheck("b", 20, DaneState.MISMATCH, "")]
    assert dane.summary(checks) is DaneState.MISMATCH
    assert dane.summary(checks[:1]) is DaneState.VALID and dane.summary([]) is None


def test_options_need_a_mail_domain_module():
    from exporter.config.loader import ConfigError, parse_config

    settings = parse_config("modules: {m: {prober: smtp, smtp: {mx: true, mta_sts: true, dane: true}}}").modules["m"]
    assert settings.settings.mta_sts and settings.settings.dane
    for option in ("mta_sts", "dane"):
        with pytest.raises(ConfigError) as error:
            parse_config(f"modules: {{m: {{prober: smtp, smtp: {{{option}: true}}}}}}")
        message = str(error.value)
        assert "need mx: true" in message and "\n" not in message.strip(), message
