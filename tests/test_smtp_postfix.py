"""The SMTP prober against a real MTA: Debian's Postfix on loopback (see tests/helpers/mta.py).

Each case is Postfix's own code path answering, and the test checks the prober's state, what it says
was refused, and the words a person reads. AUTH runs against Postfix with Dovecot's SASL service.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import trustme

from tests.helpers import mta
from tests.helpers.smtp_servers import probe

pytestmark = [pytest.mark.mta, pytest.mark.skipif(mta.missing() is not None, reason=f"Postfix tests: {mta.missing()}")]


@pytest.fixture(scope="module")
def postfix():
    # Not pytest's tmp_path: its parents are private to root, and Postfix's processes (user postfix) must
    # reach their queue.
    root = Path(tempfile.mkdtemp(prefix="smtp-truth-postfix-"))
    root.chmod(0o755)
    ca = trustme.CA()
    cert = ca.issue_cert(mta.DOMAIN, "127.0.0.1")
    cert_file = root / "cert.pem"
    cert_file.write_bytes(cert.private_key_pem.bytes() + b"".join(pem.bytes() for pem in cert.cert_chain_pems))
    cert_file.chmod(0o600)
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    server = mta.Postfix(root, cert_file=cert_file, ca_file=ca_file)
    try:
        server.start(with_auth=mta.dovecot_missing() is None)
    except Exception:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def envelope(rcpt: str, extra: str = "") -> str:
    return f"{{ehlo: probe.example.com, starttls: no, mail_from: probe@example.com, rcpt_to: '{rcpt}'{extra}}}"


async def test_greeting_rejection(postfix):
    # smtpd_delay_reject=no: Postfix refuses the client in place of its 220 greeting.
    result = await probe(postfix.ports["greeting_reject"], envelope(f"postmaster@{mta.DOMAIN}"), timeout="10s")
    assert result.state == "banner_rejected", result.detail
    assert (result.details.replies["banner"].code, result.details.replies["banner"].enhanced) == (554, "5.7.1")
    assert result.details.refused == "client"
    assert "refuses this connection" in result.detail and "Client host rejected" in result.detail
    assert "mailbox" not in result.detail  # nothing about an envelope that does not exist yet


async def test_client_block_answered_at_rcpt_is_a_client_rejection(postfix):
    result = await probe(postfix.ports["client_block"], envelope(f"postmaster@{mta.DOMAIN}"), timeout="10s")
    assert result.details.replies["rcpt"].code == 554
    assert result.state == "client_rejected", result.detail  # not recipient_rejected: the client is blocked
    assert result.details.refused == "client"
    assert "refuses this client" in result.detail
    # Without rcpt_to the same server looks healthy: the envelope test is what catches it.
    banner_only = await probe(postfix.ports["client_block"], "{ehlo: probe.example.com, starttls: no}", timeout="10s")
    assert banner_only.state == "ok"
    assert any(line.startswith("No envelope was tested") for line in banner_only.transcript)
    assert not any(line.startswith("No envelope was tested") for line in result.transcript)


async def test_greylisting(postfix):
    result = await probe(postfix.ports["greylist"], envelope(f"grey@{mta.DOMAIN}"), timeout="10s")
    assert result.state == "recipient_rejected"
    assert result.details.replies["rcpt"].code == 450
    assert result.details.greylisted is True
    assert "retry later: mail will be accepted after the delay" in result.detail


async def test_unknown_user(postfix):
    result = await probe(postfix.ports["mailbox"], envelope(f"nobody@{mta.DOMAIN}"), timeout="10s")
    assert result.state == "recipient_rejected"
    assert (result.details.replies["rcpt"].code, result.details.replies["rcpt"].enhanced) == (550, "5.1.1")
    assert result.details.refused == "recipient"
    assert "the mailbox does not exist" in result.detail


async def test_known_user_is_accepted(postfix):
    result = await probe(postfix.ports["mailbox"], envelope(f"postmaster@{mta.DOMAIN}"), timeout="10s")
    assert result.state == "ok", result.detail
    assert [result.details.replies[s].code for s in ("mail", "rcpt", "rset")] == [250, 250, 250]


async def test_relay_denied(postfix):
    result = await probe(postfix.ports["mailbox"], envelope("someone@other.example"), timeout="10s")
    assert result.state == "recipient_rejected"
    assert result.details.refused == "relay"
    assert "relaying denied" in result.detail


async def test_starttls_advertised_then_refused(postfix):
    result = await probe(
        postfix.ports["broken_tls"], "{ehlo: probe.example.com, starttls: opportunistic}", timeout="10s"
    )
    assert "STARTTLS" in result.details.capabilities
    assert result.details.replies["starttls"].code == 454
    assert result.state == "starttls_failed", result.detail
    assert result.details.encrypted is False
    assert any("continuing UNENCRYPTED" in line for line in result.transcript)


def auth_module(postfix, password_file, mechanism: str = "plain") -> str:
    return (
        f"{{ehlo: probe.example.com, starttls: required, tls_config: {{ca_file: '{postfix.ca_file}', "
        f"server_name: {mta.DOMAIN}}}, auth: {{username: {mta.USER}, password_file: '{password_file}', "
        f"mechanism: {mechanism}}}}}"
    )


@pytest.mark.skipif(mta.dovecot_missing() is not None, reason=f"AUTH against Postfix: {mta.dovecot_missing()}")
@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_auth_good_and_bad(postfix, tmp_path, mechanism):
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text(mta.PASSWORD + "\n")
    bad.write_text("server\n")  # a password that is also a word in the server's replies
    ok = await probe(postfix.ports["tls_auth"], auth_module(postfix, good, mechanism), timeout="15s")
    assert ok.state == "ok", ok.detail
    assert ok.details.replies["auth"].code == 235 and ok.details.tls.verified is True
    failed = await probe(postfix.ports["tls_auth"], auth_module(postfix, bad, mechanism), timeout="15s")
    assert failed.state == "auth_failed", failed.detail
    assert failed.details.replies["auth"].code == 535
    for result in (ok, failed):
        text = "\n".join(result.transcript) + result.detail + repr(result.details.contract())
        assert mta.PASSWORD not in text
        assert "********" in text
    # Masking by what was sent: the server's own words (which contain "server") are never blanked.
    assert "The ******** said" not in failed.detail and "The server said" in failed.detail
