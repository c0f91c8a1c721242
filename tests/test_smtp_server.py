"""The SMTP prober against a real SMTP server library (aiosmtpd) on loopback, with test certificates (trustme)."""

from __future__ import annotations

import pytest

from tests.helpers import smtp_servers
from tests.helpers.aiosmtpd_server import Mailbox, start_aiosmtpd, tls_config
from tests.helpers.smtp_servers import Pki, probe

servers = smtp_servers.servers  # the fixture


@pytest.fixture
def pki(tmp_path) -> Pki:
    return Pki(tmp_path)


async def test_plain_session(servers):
    result = await probe(await start_aiosmtpd(servers), "{starttls: no, ehlo: probe.example.com}")
    assert (result.state, result.success) == ("ok", True)
    details = result.details
    assert details.replies["banner"].code == 220 and details.replies["quit"].code == 221
    assert {"SIZE", "8BITMIME"} <= details.capabilities and "STARTTLS" not in details.capabilities
    assert details.size_limit == 33554432
    assert 0 < details.banner_seconds < 5  # measured, and below the module timeout
    assert "C: EHLO probe.example.com" in result.transcript
    assert details.tls is None and not details.encrypted


async def test_starttls_required_with_a_verified_certificate(servers, pki):
    port = await start_aiosmtpd(servers, pki.valid)
    result = await probe(port, f"{{starttls: required, tls_config: {tls_config(pki)}}}")
    assert result.state == "ok", result.detail
    details = result.details
    assert details.encrypted and details.tls.verified is True
    assert details.tls.version in ("TLS 1.2", "TLS 1.3")
    assert "STARTTLS" in details.capabilities  # as advertised before TLS
    assert "AUTH" in details.capabilities  # aiosmtpd offers AUTH only once encrypted: the second EHLO counted
    leaf_expiry = pki.not_after(pki.valid)
    assert details.tls.earliest_expiry == leaf_expiry
    # The verified chain includes the CA, which trustme makes to outlive the leaf.
    assert details.tls.verified_chain_expiry == leaf_expiry
    commands = [line.split()[1] for line in result.transcript if line.startswith("C: ")]
    assert commands == ["EHLO", "STARTTLS", "EHLO", "QUIT"]


async def test_wrong_name_fails_when_required(servers, pki):
    port = await start_aiosmtpd(servers, pki.wrong_name)
    result = await probe(port, f"{{starttls: required, tls_config: {tls_config(pki)}}}")
    assert result.state == "tls_error"
    assert "did not verify" in result.detail and "mismatch" in result.detail.lower()
    assert "does not name this server" in result.detail
    assert result.details.tls.verified is False


async def test_wrong_name_is_reported_but_tolerated_when_opportunistic(servers, pki):
    port = await start_aiosmtpd(servers, pki.wrong_name)
    result = await probe(port, f"{{starttls: opportunistic, tls_config: {tls_config(pki)}}}")
    assert result.state == "ok", result.detail
    tls = result.details.tls
    assert tls.verified is False and "mismatch" in tls.verify_error.lower()
    assert tls.earliest_expiry is not None and tls.verified_chain_expiry is None
    assert any("reconnects and continues without verification" in line for line in result.transcript)


async def test_expired_certificate(servers, pki):
    port = await start_aiosmtpd(servers, pki.expired)
    required = await probe(port, f"{{starttls: required, tls_config: {tls_config(pki)}}}")
    assert required.state == "tls_error"
    assert "expired" in required.detail
    skipped = await probe(port, f"{{starttls: required, tls_config: {tls_config(pki, insecure_skip_verify='true')}}}")
    assert skipped.state == "ok"
    assert skipped.details.tls.verified is None  # not checked
    assert skipped.details.tls.earliest_expiry == pki.expired_not_after.timestamp()


async def test_untrusted_ca_without_ca_file(servers, pki):
    port = await start_aiosmtpd(servers, pki.valid)
    result = await probe(port, "{starttls: required, tls_config: {server_name: mx.test}}")
    assert result.state == "tls_error"
    assert "unable to get local issuer certificate" in result.detail
    assert "the issuer of the certificate is not known here" in result.detail


async def test_implicit_tls(servers, pki):
    port = await start_aiosmtpd(servers, pki.valid, implicit=True)
    result = await probe(port, f"{{tls: true, tls_config: {tls_config(pki)}}}")
    assert result.state == "ok", result.detail
    assert result.details.encrypted and result.details.tls.verified
    assert "STARTTLS" not in result.details.capabilities
    assert result.details.stage_seconds["tls"] > 0
    assert not any(line == "C: STARTTLS" for line in result.transcript)


async def test_implicit_tls_against_a_plain_server(servers, pki):
    result = await probe(await start_aiosmtpd(servers), f"{{tls: true, tls_config: {tls_config(pki)}}}")
    assert result.state == "tls_error"
    assert "the server spoke plain text where TLS was expected" in result.detail
    assert "(OpenSSL: WRONG_VERSION_NUMBER)" in result.detail


async def test_envelope_accepted_and_rejected(servers):
    port = await start_aiosmtpd(servers)
    accepted = await probe(port, "{mail_from: probe@example.com, rcpt_to: postmaster@example.com}")
    assert accepted.state == "ok"
    assert [accepted.details.replies[s].code for s in ("mail", "rcpt", "rset")] == [250, 250, 250]
    rejected = await probe(port, "{mail_from: probe@example.com, rcpt_to: nobody@example.com}")
    assert rejected.state == "recipient_rejected"
    assert rejected.details.replies["rcpt"].enhanced == "5.1.1"
    assert "mailbox does not exist" in rejected.detail


@pytest.mark.parametrize("mechanism", ["plain", "login"])
async def test_auth(servers, pki, tmp_path, mechanism):
    port = await start_aiosmtpd(servers, pki.valid)
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret-pw\n")
    bad.write_text("wrong-pw\n")
    base = f"starttls: required, tls_config: {tls_config(pki)}"
    ok = await probe(port, f"{{{base}, auth: {{username: probe, password_file: '{good}', mechanism: {mechanism}}}}}")
    assert ok.state == "ok", ok.detail
    assert ok.details.replies["auth"].code == 235
    failed = await probe(port, f"{{{base}, auth: {{username: probe, password_file: '{bad}', mechanism: {mechanism}}}}}")
    assert failed.state == "auth_failed"
    assert failed.details.replies["auth"].code == 535
    for result, secret in ((ok, "s3cret-pw"), (failed, "wrong-pw")):
        text = "\n".join(result.transcript) + result.detail
        assert secret not in text
        assert "********" in text


async def test_test_message_is_sent_only_when_configured(servers):
    mailbox = Mailbox()
    port = await start_aiosmtpd(servers, mailbox=mailbox)
    await probe(port, "{mail_from: probe@example.com, rcpt_to: postmaster@example.com}")
    assert mailbox.messages == []
    result = await probe(
        port,
        "{mail_from: probe@example.com, rcpt_to: postmaster@example.com, "
        "send_test_message: true, subject: 'probe 42', body: \"hello\\n.starts with a dot\\n\"}",
    )
    assert result.state == "ok", result.detail
    assert result.details.replies["data"].code == 250
    [message] = mailbox.messages
    assert b"Subject: probe 42" in message
    assert b"\r\n.starts with a dot" in message  # dot-stuffed on the wire, unstuffed by the server
    assert b"From: probe@example.com" in message


def test_tls_paths_under_uvloop(tmp_path):
    """The exporter runs on uvloop by default: STARTTLS, the verification fallback and implicit TLS work there too."""
    uvloop = pytest.importorskip("uvloop", reason="uvloop is not installed (pip install '.[fast]')")
    import asyncio

    from tests.helpers.smtp_servers import Servers

    pki = Pki(tmp_path)

    async def scenario():
        started = Servers()
        try:
            states = []
            for cert, implicit, mode in [
                (pki.valid, False, "required"),
                (pki.wrong_name, False, "opportunistic"),
                (pki.valid, True, "no"),
                (pki.expired, False, "required"),
            ]:
                port = await start_aiosmtpd(started, cert, implicit=implicit)
                result = await probe(
                    port, f"{{starttls: {mode}, tls: {str(implicit).lower()}, tls_config: {tls_config(pki)}}}"
                )
                states.append((str(result.state), result.details.tls.verified))
            return states
        finally:
            await started.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == [("ok", True), ("ok", False), ("ok", True), ("tls_error", False)]


@pytest.mark.parametrize("password", ["server", "wrong", "Authentication"])
async def test_masking_is_by_what_was_sent_not_by_searching_server_text(servers, pki, tmp_path, password):
    """Issue 14: with the password `server`, the output read "The ******** said"; with `wrong`, "********
    user name or password": the blanked word gave the password away."""
    port = await start_aiosmtpd(servers, pki.valid)
    (tmp_path / "pw").write_text(password + "\n")
    for mechanism in ("plain", "login"):
        result = await probe(
            port,
            f"{{starttls: required, tls_config: {tls_config(pki)}, auth: {{username: probe, "
            f"password_file: '{tmp_path / 'pw'}', mechanism: {mechanism}}}}}",
        )
        assert result.state == "auth_failed"
        # Only the lines the prober sent with the credentials are masked ...
        masked = [line for line in result.transcript if "********" in line]
        assert masked and all(line.startswith("C: ") for line in masked), masked
        # ... and the server's words are shown as they came, never blanked where they match the password.
        assert "The server said" in result.detail
        everything = "\n".join(result.transcript) + result.detail + "".join(m for _, m in result.details.explanations())
        assert "********" not in everything.replace("C: AUTH PLAIN ********", "").replace("C: ********", "")
        # The reply to the credentials keeps its codes; its text (which could echo them) is withheld.
        assert result.details.replies["auth"].code == 535
        assert "text withheld" in result.details.replies["auth"].lines[0]
