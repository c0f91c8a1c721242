"""Every SMTP failure state, and hostile servers, against scripted servers on loopback.

Each case checks the state, that the probe ended within its deadline, and (for floods) that
memory stayed bounded. Deadlines are tiny module timeouts, never sleeps in the test.
"""

from __future__ import annotations

import asyncio
import time
import tracemalloc

import pytest

from exporter.probers.smtp import session as smtp
from exporter.probers.smtp.replies import MAX_LINE_BYTES
from tests.helpers import smtp_servers
from tests.helpers.smtp_servers import FloodProcess, Pki, Script, probe

servers = smtp_servers.servers  # the fixture


# Wall-clock bounds here only tell "ended by the deadline (or at once)" from "waited for the hostile
# server" (which stalls for an hour) or "waited for a much longer module timeout": they are many
# times the expected time, so a loaded machine cannot make them fail.
FAR_BELOW = 10.0  # seconds; the module timeout is 60 s where a test shows that the probe did not wait for it


async def timed_probe(port: int, smtp: str = "{}", timeout: str = "2s"):
    started = time.perf_counter()
    result = await probe(port, smtp, timeout)
    return result, time.perf_counter() - started


def sent(script: Script) -> list[bytes]:
    return [line.split(b" ")[0].strip() for line in script.received]


# --- one case per failure state ------------------------------------------------------------


async def test_connect_failed_keeps_the_tcp_reason(closed_port):
    result = await probe(closed_port)
    assert (result.state, result.tcp_state, result.success) == ("connect_failed", "refused", False)
    assert "nothing listens" in result.detail


@pytest.mark.parametrize(
    "greeting, code",
    [
        (b"554 5.7.1 Service unavailable; client [127.0.0.1] blocked using zen.example\r\n", 554),
        (b"421 4.3.2 Too many connections, try again later\r\n", 421),
    ],
)
async def test_banner_rejected_is_its_own_state_and_still_says_quit(servers, greeting, code):
    script = Script(greeting=greeting)
    result = await probe(await servers.start(script))
    assert result.state == "banner_rejected"
    assert result.details.replies["banner"].code == code
    assert sent(script) == [b"QUIT"]
    if code == 554:
        assert "no SMTP service for this client" in result.detail and result.details.refused == "client"
        assert "block list" in dict(result.details.explanations())["banner 554 5.7.1"]


async def test_banner_mismatch(servers):
    port = await servers.start(Script(greeting=b"220-first line\r\n220 other.example ESMTP\r\n"))
    result = await probe(port, "{expect_banner: '^220 mx\\.test'}")
    assert result.state == "banner_mismatch"
    matching = await probe(port, "{expect_banner: '^220 other\\.example'}")  # any line of a multi-line greeting
    assert matching.state == "ok"


async def test_ehlo_rejected_after_helo_fallback_fails(servers):
    script = Script(replies={"EHLO": b"550 5.7.1 go away\r\n", "HELO": b"550 5.7.1 go away\r\n"})
    result = await probe(await servers.start(script))
    assert result.state == "ehlo_rejected"
    assert sent(script) == [b"EHLO", b"HELO", b"QUIT"]
    assert result.details.replies["helo"].code == 550


async def test_ehlo_5xx_falls_back_to_helo(servers):
    script = Script(replies={"EHLO": b"502 5.5.2 Command not implemented\r\n"})
    result = await probe(await servers.start(script), "{starttls: required}")
    # HELO works but offers no extensions, so required STARTTLS is unavailable.
    assert result.state == "starttls_unavailable"
    assert sent(script) == [b"EHLO", b"HELO", b"QUIT"]
    assert result.details.capabilities == frozenset()


async def test_ehlo_4xx_is_rejected_without_helo(servers):
    script = Script(replies={"EHLO": b"421 4.7.0 closing\r\n"})
    result = await probe(await servers.start(script))
    assert result.state == "ehlo_rejected"
    assert b"HELO" not in sent(script)


async def test_starttls_unavailable_when_required_but_not_offered(servers):
    port = await servers.start(Script())
    assert (await probe(port, "{starttls: required}")).state == "starttls_unavailable"
    assert (await probe(port, "{starttls: opportunistic}")).state == "ok"


async def test_starttls_refused(servers):
    script = Script(
        replies={"EHLO": b"250-mx.test\r\n250 STARTTLS\r\n", "STARTTLS": b"454 4.7.0 TLS not available\r\n"}
    )
    port = await servers.start(script)
    required = await probe(port, "{starttls: required}")
    assert required.state == "starttls_failed"
    assert required.details.replies["starttls"].code == 454
    assert sent(script)[-2:] == [b"STARTTLS", b"QUIT"]
    # Advertised, then refused, is a broken server in any mode; opportunistic goes on in plain text and says so.
    opportunistic = await probe(port, "{starttls: opportunistic, mail_from: a@example.com, rcpt_to: b@example.com}")
    assert opportunistic.state == "starttls_failed" and opportunistic.details.encrypted is False
    assert opportunistic.details.starttls_refused is True
    assert opportunistic.details.replies["rcpt"].code == 250  # the rest of the dialogue still ran
    assert any("continuing UNENCRYPTED" in line for line in opportunistic.transcript)
    assert "advertised STARTTLS and then refused it" in opportunistic.detail
    assert "TLS not available due to a temporary reason (RFC 3207)" in opportunistic.detail


async def test_auth_failed(servers, tmp_path):
    pki = Pki(tmp_path)
    (tmp_path / "password").write_text("s3cret-pw\n")
    script = Script(
        replies={
            "EHLO": b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250 STARTTLS\r\n",
            "AUTH": b"535 5.7.8 Authentication credentials invalid\r\n",
        },
        tls_context=Pki.server_context(pki.valid),
    )
    port = await servers.start(script)
    result = await probe(
        port,
        f"{{starttls: required, tls_config: {{ca_file: '{pki.ca_file}', server_name: mx.test}},"
        f" auth: {{username: probe, password_file: '{tmp_path / 'password'}'}}}}",
    )
    assert result.state == "auth_failed"
    assert result.details.replies["auth"].enhanced == "5.7.8"
    assert "C: AUTH PLAIN ********" in result.transcript
    everything = "\n".join(result.transcript) + result.detail + repr(result)
    assert "s3cret-pw" not in everything and "czNjcmV0LXB3" not in everything


async def test_sender_rejected(servers):
    script = Script(replies={"MAIL": b"553 5.1.8 Sender address domain does not exist\r\n"})
    result = await probe(await servers.start(script), "{mail_from: probe@example.com, rcpt_to: pm@example.com}")
    assert result.state == "sender_rejected"
    assert sent(script) == [b"EHLO", b"MAIL", b"QUIT"]
    assert "sender's system address is invalid" in result.detail and result.details.refused == "sender"


async def test_recipient_rejected(servers):
    script = Script(replies={"RCPT": b"550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n"})
    result = await probe(await servers.start(script), "{mail_from: probe@example.com, rcpt_to: nobody@example.com}")
    assert result.state == "recipient_rejected"
    assert result.details.replies["rcpt"].enhanced == "5.1.1"


async def test_envelope_test_ends_with_rset_and_sends_no_message(servers):
    script = Script()
    result = await probe(await servers.start(script), "{mail_from: probe@example.com, rcpt_to: pm@example.com}")
    assert result.state == "ok"
    assert sent(script) == [b"EHLO", b"MAIL", b"RCPT", b"RSET", b"QUIT"]


@pytest.mark.parametrize(
    "replies", [{"DATA": b"554 5.5.1 No valid recipients\r\n"}, {".": b"554 5.6.0 Message rejected as spam\r\n"}]
)
async def test_data_rejected(servers, replies):
    script = Script(replies=replies)
    result = await probe(
        await servers.start(script), "{mail_from: a@example.com, rcpt_to: b@example.com, send_test_message: true}"
    )
    assert result.state == "data_rejected"
    assert result.details.replies["data"].code == 554


async def test_timeout_after_the_greeting(servers):
    async def stall_after_greeting(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        await asyncio.sleep(3600)

    result, took = await timed_probe(await servers.start(stall_after_greeting), timeout="200ms")
    assert result.state == "timeout"
    assert 0.15 < took < FAR_BELOW  # at the 200 ms deadline, not after the server's hour
    # The verdict names the command that got no answer.
    assert result.detail.startswith("the server did not answer EHLO ")
    assert result.details.stalled_at.startswith("EHLO ")


# --- hostile behaviour -------------------------------------------------------------------------


async def test_greeting_that_never_comes(servers):
    async def silent(reader, writer):
        await asyncio.sleep(3600)

    result, took = await timed_probe(await servers.start(silent), timeout="200ms")
    assert result.state == "banner_timeout"
    assert result.tcp_state == "open"
    assert 0.15 < took < FAR_BELOW


async def test_greeting_trickling_a_byte_at_a_time(servers):
    async def trickle(reader, writer):
        for byte in b"220 mx.test a very slow greeting\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(1)  # the whole greeting would take over 30 s

    result, took = await timed_probe(await servers.start(trickle), timeout="200ms")
    assert result.state == "banner_timeout"
    assert took < FAR_BELOW


async def test_one_mebibyte_line_without_newline():
    with FloodProcess(b"220 " + b"A" * (1024 * 1024)) as port:
        tracemalloc.start()
        try:
            result, took = await timed_probe(port, timeout="60s")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.state == "protocol_error"
    assert f"longer than {MAX_LINE_BYTES} bytes" in result.detail
    assert took < FAR_BELOW  # at once, not at the 60 s deadline
    # One socket read (asyncio reads up to 256 KiB at once) plus the line bound, not the whole line.
    assert peak < 600 * 1024, f"peak {peak} bytes: the line was buffered"


async def test_endless_continuation_lines(servers):
    async def endless(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        for _ in range(100_000):  # far more than the prober reads; it hangs up long before
            writer.write(b"250-still going\r\n")
            await writer.drain()
            await asyncio.sleep(0)  # loopback never pushes back, so let the prober run

    result, took = await timed_probe(await servers.start(endless), timeout="60s")
    assert result.state == "protocol_error"
    assert "more than 100 lines" in result.detail
    assert took < FAR_BELOW  # at once, not at the 60 s deadline
    assert len(result.transcript) <= 201


async def test_invalid_utf8_and_control_characters_are_escaped(servers):
    script = Script(greeting=b'220 mx.test \xff\xfe\x00\x1b[31m "q" \\ evil\r\n')
    result = await probe(await servers.start(script))
    assert result.state == "ok"  # the code is valid; the text is the server's business
    greeting = next(line for line in result.transcript if line.startswith("S: 220"))
    assert greeting == 'S: 220 mx.test \\xff\\xfe\\x00\\x1b[31m "q" \\ evil'
    assert all(ord(ch) >= 0x20 for line in result.transcript for ch in line)


async def test_garbage_instead_of_a_greeting(servers):
    result = await probe(await servers.start(Script(greeting=b"SSH-2.0-OpenSSH_9.2\r\n")))
    assert result.state == "protocol_error"
    assert "not an SMTP reply line" in result.detail


async def test_server_closing_mid_dialogue(servers):
    async def hang_up_after_ehlo(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        writer.write(b"250-mx.test\r\n")
        await writer.drain()

    result = await probe(await servers.start(hang_up_after_ehlo))
    assert result.state == "protocol_error"
    assert "closed the connection" in result.detail


async def test_close_right_after_accept(servers):
    async def hang_up(reader, writer):
        pass

    result = await probe(await servers.start(hang_up))
    assert result.state == "protocol_error"


async def test_starttls_as_the_last_ehlo_line_is_seen(servers, tmp_path):
    pki = Pki(tmp_path)
    script = Script(
        replies={"EHLO": b"250-mx.test\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"}, tls_context=Pki.server_context(pki.valid)
    )
    result = await probe(
        await servers.start(script),
        f"{{starttls: required, tls_config: {{ca_file: '{pki.ca_file}', server_name: mx.test}}}}",
    )
    assert result.state == "ok", result.detail
    assert result.details.encrypted and result.details.tls.verified
    assert "STARTTLS" in result.details.capabilities
    assert sent(script)[:2] == [b"EHLO", b"STARTTLS"]


async def test_starttls_handshake_failure(servers):
    async def fake_tls(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        writer.write(b"250-mx.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await writer.drain()
        await reader.read(1)  # the ClientHello
        writer.write(b"this is not TLS at all\r\n" * 4)
        await writer.drain()

    result, took = await timed_probe(await servers.start(fake_tls), "{starttls: opportunistic}", timeout="60s")
    assert result.state == "tls_error"
    assert "TLS handshake failed" in result.detail
    assert "not TLS where TLS was expected" in result.detail or "plain text where TLS" in result.detail
    assert took < FAR_BELOW  # at once, not at the 60 s deadline


async def test_starttls_handshake_that_stalls(servers):
    async def no_tls(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        writer.write(b"250-mx.test\r\n250 STARTTLS\r\n")
        await reader.readline()
        writer.write(b"220 go ahead\r\n")
        await asyncio.sleep(3600)

    result, took = await timed_probe(await servers.start(no_tls), "{starttls: required}", timeout="200ms")
    assert result.state == "timeout"
    assert result.detail.startswith("the server did not answer the TLS handshake after STARTTLS")
    assert 0.15 < took < FAR_BELOW  # at the 200 ms deadline, not after the server's hour


async def test_data_pushed_after_starttls_reply_is_refused(servers):
    script = Script(
        replies={"EHLO": b"250-mx.test\r\n250 STARTTLS\r\n", "STARTTLS": b"220 go ahead\r\n250 injected before TLS\r\n"}
    )
    result = await probe(await servers.start(script), "{starttls: required}")
    assert result.state == "protocol_error"
    assert "before the TLS handshake" in result.detail


async def test_transcript_is_bounded_per_line(servers):
    long_text = b"x" * 1500
    result = await probe(await servers.start(Script(greeting=b"220 " + long_text + b"\r\n")))
    assert result.state == "ok"
    line = next(line for line in result.transcript if line.startswith("S: 220"))
    assert len(line) < 600 and line.endswith("more characters)")


async def test_silence_after_quit_does_not_hold_a_finished_probe(servers, monkeypatch):
    monkeypatch.setattr(smtp, "QUIT_WAIT", 0.1)

    async def mute_at_quit(reader, writer):
        writer.write(b"220 mx.test\r\n")
        await reader.readline()
        writer.write(b"250 mx.test\r\n")
        await reader.readline()  # QUIT
        await asyncio.sleep(3600)

    result, took = await timed_probe(await servers.start(mute_at_quit), "{starttls: no}", timeout="60s")
    assert result.state == "ok"
    assert any(line.startswith("No clean reply to QUIT") for line in result.transcript)
    assert took < FAR_BELOW  # QUIT_WAIT after QUIT, not the 60 s deadline
