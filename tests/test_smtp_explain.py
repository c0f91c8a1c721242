"""Reply explanations, table-driven: every (stage, code, enhanced code, server text) that real MTAs send.

Sources of the cases: the replies Postfix, Exim and aiosmtpd sent in the end-to-end runs (tests/helpers/mta.py),
Postfix's and Exim's documented reject texts, and the common codes of Microsoft's Exchange Online NDR
documentation. ``kind`` is the class of explanation expected: ``accepted`` (2xx), ``continue`` (3xx),
``greylisting``, or what the server refused (``smtp_explain.Party``).
"""

from __future__ import annotations

import re

import pytest

from exporter.probers.smtp.explain import GREYLISTING_ADVICE, explain, explain_code, explain_enhanced

CASES = [
    # --- Postfix ---------------------------------------------------------------------------------------
    ("banner", 220, None, "mx.test ESMTP Postfix (Debian/GNU)", "accepted"),
    ("banner", 554, "5.7.1", "<localhost[127.0.0.1]>: Client host rejected: Access denied", "client"),
    ("banner", 421, "4.7.0", "mx.test Error: too many connections from 192.0.2.1", "service"),
    ("banner", 521, "5.3.2", "mx.test Service currently unavailable", "service"),
    ("ehlo", 250, None, "mx.test", "accepted"),
    ("ehlo", 504, "5.5.2", "<localhost>: Helo command rejected: need fully-qualified hostname", "client"),
    ("mail", 250, "2.1.0", "Ok", "accepted"),
    ("mail", 553, "5.1.8", "<probe@nowhere.invalid>: Sender address rejected: Domain not found", "sender"),
    ("mail", 530, "5.7.0", "Must issue a STARTTLS command first", "tls"),
    ("rcpt", 250, "2.1.5", "Ok", "accepted"),
    ("rcpt", 554, "5.7.1", "<localhost[127.0.0.1]>: Client host rejected: Access denied", "client"),
    (
        "rcpt",
        554,
        "5.7.1",
        "Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; "
        "https://www.spamhaus.org/query/ip/192.0.2.1",
        "client",
    ),
    ("rcpt", 450, "4.7.1", "Client host rejected: cannot find your hostname, [192.0.2.1]", "client"),
    ("rcpt", 450, "4.7.1", "<probe>: Helo command rejected: Host not found", "client"),
    ("rcpt", 450, "4.1.8", "<a@nowhere.invalid>: Sender address rejected: Domain not found", "sender"),
    (
        "rcpt",
        550,
        "5.1.1",
        "<nobody@mx.test>: Recipient address rejected: User unknown in virtual mailbox table",
        "recipient",
    ),
    ("rcpt", 554, "5.7.1", "<someone@other.example>: Relay access denied", "relay"),
    ("rcpt", 451, "4.3.0", "<a@mx.test>: Temporary lookup failure", "service"),
    ("rcpt", 452, "4.5.3", "Error: too many recipients", "service"),
    (
        "rcpt",
        450,
        "4.2.0",
        "<grey@mx.test>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/help/mx.test.html",
        "greylisting",
    ),
    ("rcpt", 451, "4.7.1", "Greylisting in action, please come back later", "greylisting"),
    ("starttls", 220, "2.0.0", "Ready to start TLS", "accepted"),
    ("starttls", 454, "4.7.0", "TLS not available due to local problem", "tls"),
    ("auth", 235, "2.7.0", "Authentication successful", "accepted"),
    ("auth", 334, None, "VXNlcm5hbWU6", "continue"),
    ("auth", 535, "5.7.8", "Error: authentication failed: authentication failure", "auth"),
    ("data", 354, None, "End data with <CR><LF>.<CR><LF>", "continue"),
    ("data", 554, "5.5.1", "Error: no valid recipients", "command"),
    ("message", 250, "2.0.0", "Ok: queued as 4ABCD", "accepted"),
    ("message", 552, "5.3.4", "Message size exceeds fixed limit", "message"),
    ("rset", 250, "2.0.0", "Ok", "accepted"),
    ("quit", 221, "2.0.0", "Bye", "accepted"),
    # --- Exim ----------------------------------------------------------------------------------------------
    ("banner", 550, "5.7.1", "Administrative prohibition", "client"),
    ("banner", 554, None, "SMTP synchronization error", "client"),
    ("banner", 450, "4.3.2", "Service temporarily unavailable", "service"),
    ("ehlo", 550, None, "Bad HELO - Host impersonating [mx.test]", "client"),
    ("rcpt", 550, None, "relay not permitted", "relay"),
    ("rcpt", 550, None, "Unrouteable address", "recipient"),
    ("rcpt", 451, None, "Temporary local problem - please try later", "service"),
    ("rcpt", 550, None, "rejected because 192.0.2.1 is in a black list at zen.spamhaus.org", "client"),
    ("rcpt", 451, None, "Greylisted, please try again later", "greylisting"),
    ("mail", 550, None, "Verification failed for <a@example.com>", "sender"),
    # --- Microsoft (Exchange Online NDR documentation) -------------------------------------------------------------
    ("banner", 421, "4.3.2", "Service not available, closing transmission channel", "service"),
    ("rcpt", 550, "5.1.10", "RESOLVER.ADR.RecipientNotFound; Recipient not found by SMTP address lookup", "recipient"),
    ("rcpt", 550, "5.7.606", "Access denied, banned sending IP [192.0.2.1]", "client"),
    ("rcpt", 550, "5.7.708", "Service unavailable. Access denied, traffic not accepted from this IP", "client"),
    ("rcpt", 550, "5.7.64", "TenantAttribution; Relay Access Denied", "relay"),
    ("rcpt", 550, "5.7.54", "SMTP; Unable to relay recipient in non-accepted domain", "relay"),
    ("rcpt", 451, "4.7.500", "Server busy. Please try again later from [192.0.2.1]", "policy"),
    ("mail", 550, "5.7.1", "Client does not have permissions to send as this sender", "sender"),
    ("mail", 530, "5.7.57", "Client not authenticated to send mail", "auth"),
    (
        "auth",
        535,
        "5.7.139",
        "Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant",
        "auth",
    ),
    ("auth", 504, "5.7.4", "Unrecognized authentication type", "auth"),
    ("message", 554, "5.6.0", "Corrupt message content", "message"),
    ("message", 552, "5.2.2", "mailbox full", "recipient"),
    ("message", 550, "5.7.23", "The message was rejected because of Sender Policy Framework violation", "sender"),
]

# How each stage is named in an explanation; no explanation may name another stage.
STAGE_WORDS = {
    "banner": r"\bgreeting\b",
    "ehlo": r"\bEHLO\b",
    "helo": r"\bHELO\b",
    "starttls": r"\bSTARTTLS\b",
    "auth": r"\bAUTH\b",
    "mail": r"\bMAIL FROM\b",
    "rcpt": r"\bRCPT\b",
    "rset": r"\bRSET\b",
    "data": r"\bDATA\b",
    "message": r"\bend of DATA\b",
    "quit": r"\bQUIT\b",
}


def kind(explanation) -> str:
    if explanation.code < 300:
        return "accepted"
    if explanation.code < 400:
        return "continue"
    if explanation.greylisting:
        return "greylisting"
    return str(explanation.refused)


@pytest.mark.parametrize(
    "stage, code, enhanced, text, expected", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}-{c[4]}" for c in CASES]
)
def test_explanation_table(stage, code, enhanced, text, expected):
    explanation = explain(stage, code, enhanced, f"{enhanced} {text}" if enhanced else text)
    assert kind(explanation) == expected, explanation.line()
    meaning = explanation.meaning
    # The server's own words are quoted beside the explanation, without the codes.
    assert explanation.line().endswith(f"The server said: {text[:300]!r}")
    # No explanation names a stage other than its own.
    for other, words in STAGE_WORDS.items():
        if other != stage:
            assert not re.search(words, meaning), f"{stage} explanation mentions {other}: {meaning}"
    # RFC 3463's class decides success or failure; a class 2 code is never "a problem".
    if enhanced:
        klass = enhanced[0]
        assert {"2": "success", "4": "temporary failure", "5": "permanent failure"}[klass] in meaning
        if klass == "2":
            assert "problem" not in meaning and "failure" not in meaning
    if expected == "greylisting":
        assert GREYLISTING_ADVICE in meaning and "retry later: mail will be accepted after the delay" in meaning
    else:
        assert "greylist" not in meaning
    if stage == "banner":  # before any envelope exists, nothing can be about a mailbox
        assert "mailbox" not in meaning
    if expected == "client" and stage != "banner":
        assert "refuses this client" in meaning
    if expected == "relay":
        assert "relaying denied" in meaning


def test_the_defects_reported_in_issue_14():
    # 250 2.1.0 after MAIL FROM: class 2 is success; the subject says only what it concerns.
    assert (
        explain("mail", 250, "2.1.0", "2.1.0 Ok").meaning
        == "the sender address is accepted; 2.1.0: success (concerning addressing)"
    )
    # 554 5.7.1 at RCPT is not explained as a greeting.
    assert "greeting" not in explain("rcpt", 554, "5.7.1", "5.7.1 denied").meaning
    # A greeting 550 5.7.1 is not "the mailbox is unavailable"; a greeting 450 4.3.2 is not "mailbox busy".
    assert "mailbox" not in explain("banner", 550, "5.7.1", "5.7.1 go away").meaning
    assert "mailbox" not in explain("banner", 450, "4.3.2", "4.3.2 later").meaning
    # 504 5.5.2 for the EHLO name says nothing about AUTH mechanisms.
    assert "AUTH" not in explain("ehlo", 504, "5.5.2", "5.5.2 need fully-qualified hostname").meaning
    assert "mechanism" not in explain("ehlo", 504, "5.5.2", "5.5.2 need fully-qualified hostname").meaning
    # 451 4.7.1 Greylisted is greylisting, not a DNS or block list problem.
    grey = explain("rcpt", 451, "4.7.1", "4.7.1 Greylisted, please retry in 5 minutes")
    assert grey.greylisting and "block list" not in grey.meaning and "DNS" not in grey.meaning


def test_stage_specific_codes_each_cite_their_rfc():
    assert "RFC 3207" in explain_code("starttls", 454)
    assert "RFC 4954" in explain_code("auth", 535) and "RFC 4954" in explain_code("auth", 504)
    assert "RFC 7504" in explain_code("banner", 521) and "RFC 7504" in explain_code("rcpt", 556)
    assert "RFC 5321" in explain_code("banner", 554)


def test_enhanced_codes():
    assert (
        explain_enhanced("5.1.1") == "permanent failure (the same attempt will fail again): "
        "the mailbox does not exist at the destination"
    )
    assert explain_enhanced("2.0.0") == "success"
    assert explain_enhanced("4.9.99") == (
        "temporary failure (a retry may succeed): detail 99 concerning an unknown "
        "subject (a code outside the IANA registry: the server's own)"
    )
    assert "detail 606 concerning security or policy" in explain_enhanced("5.7.606")
