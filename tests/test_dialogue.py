"""query_response dialogues against scripted loopback servers: each way a dialogue succeeds or fails."""

from __future__ import annotations

import asyncio
import re
import socket
import ssl

import pytest

from exporter.probers.tcp.dialogue import DialogueState, expand, masked, printable
from tests.helpers.dialogue import module_from, probe, scripted_server
from tests.helpers.metrics_text import samples, state_of, value
from tests.helpers.smtp_servers import Pki

SSH = """
modules:
  m:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "^SSH-2.0-([^ ]+)"
          send: "SSH-2.0-probe ${1}"
          labels: [{name: software, value: "${1}"}]
        - expect: "^bye$"
"""


async def test_expect_send_with_expansion_and_labels():
    got = asyncio.Queue()

    async def handler(reader, writer):
        writer.write(b"# a comment line first\r\nSSH-2.0-OpenSSH_9.2p1 Debian\r\n")
        await got.put(await reader.readline())
        writer.write(b"bye\r\n")
        await writer.drain()
        await reader.read()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(SSH), port)
    assert result.success, result.detail
    assert await got.get() == b"SSH-2.0-probe OpenSSH_9.2p1\n"  # ${1} from the step's own expect, LF only
    assert value(text, "probe_success") == 1
    assert value(text, "probe_failed_due_to_regex") == 0
    assert value(text, "probe_expect_info", software="OpenSSH_9.2p1") == 1
    assert state_of(text, "probe_dialogue_state") == "ok"
    assert state_of(text) == "open"
    assert {dict(lab)["step"] for (n, lab) in samples(text) if n == "probe_dialogue_step_duration_seconds"} == {
        "0",
        "1",
    }
    assert ("probe_dialogue_failed_step", frozenset()) not in samples(text)
    assert "> SSH-2.0-probe [13 more bytes]" in result.transcript  # sent arguments masked
    assert "< SSH-2.0-OpenSSH_9.2p1 Debian" in result.transcript


async def test_no_match_before_eof_fails_due_to_regex_and_shows_what_came_instead():
    async def handler(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\nnot ssh")
        await writer.drain()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(SSH), port)
    assert not result.success
    assert result.state == DialogueState.EXPECT_MISMATCH
    assert value(text, "probe_failed_due_to_regex") == 1
    assert value(text, "probe_dialogue_failed_step") == 0
    assert state_of(text, "probe_dialogue_state") == "expect_mismatch"
    assert result.details.received == ["HTTP/1.1 400 Bad Request", "", "not ssh"]
    assert "received instead: HTTP/1.1 400 Bad Request" in result.detail


async def test_second_step_failure_is_reported_at_its_index():
    async def handler(reader, writer):
        writer.write(b"SSH-2.0-x\r\n")
        await reader.readline()
        writer.write(b"no goodbye\r\n")
        await writer.drain()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(SSH), port)
    assert value(text, "probe_dialogue_failed_step") == 1
    assert value(text, "probe_failed_due_to_regex") == 1
    assert value(text, "probe_expect_info", software="x") == 1  # the first step did match


async def test_trickle_without_newline_times_out_with_regex_flag_0():
    stop = asyncio.Event()

    async def handler(reader, writer):
        for _ in range(200):  # bounded: far more than the 1 s timeout needs
            if stop.is_set():
                return
            writer.write(b"S")
            await writer.drain()
            await asyncio.sleep(0.05)

    module = module_from(SSH.replace("timeout: 5s", "timeout: 1s"))
    async with scripted_server(handler) as port:
        result, text = await probe(module, port)
        stop.set()
    assert result.state == DialogueState.TIMEOUT
    assert value(text, "probe_failed_due_to_regex") == 0  # blackbox_exporter's value at the deadline
    assert value(text, "probe_dialogue_failed_step") == 0
    assert value(text, "probe_success") == 0


async def test_oversized_line_fails_without_reading_forever():
    async def handler(reader, writer):
        writer.write(b"A" * (70 * 1024))
        await writer.drain()
        await reader.read()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(SSH), port)
    assert result.state == DialogueState.LINE_TOO_LONG
    assert value(text, "probe_failed_due_to_regex") == 0
    assert all(len(line) <= 300 for line in result.transcript)


async def test_binary_garbage_is_shown_printable_and_bounded():
    garbage = b"\x1b[2J" + bytes(range(256)) * 8 + b"\n\x00\xff\xfe"

    async def handler(reader, writer):
        writer.write(garbage)
        await writer.drain()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(SSH), port)
    assert result.state == DialogueState.EXPECT_MISMATCH
    for line in result.transcript + result.details.received + [result.detail]:
        assert line.isprintable() and len(line) < 2000
    assert "\\x1b[2J" in " ".join(result.transcript)
    samples(text)  # the exposition still parses


PG = """
modules:
  m:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - send: !!binary AAAACATSFi8=
        - expect_bytes: "S"
"""


@pytest.mark.parametrize("answer, state, bytes_flag", [(b"S", "ok", 0), (b"N", "bytes_mismatch", 1)])
async def test_expect_bytes_after_a_binary_send(answer, state, bytes_flag):
    got = asyncio.Queue()

    async def handler(reader, writer):
        await got.put(await reader.readexactly(9))
        writer.write(answer)
        await writer.drain()
        await reader.read()

    async with scripted_server(handler) as port:
        result, text = await probe(module_from(PG), port)
    assert await got.get() == b"\x00\x00\x00\x08\x04\xd2\x16\x2f\n"  # the SSLRequest, then blackbox's LF
    assert state_of(text, "probe_dialogue_state") == state
    assert value(text, "probe_failed_due_to_bytes") == bytes_flag
    assert value(text, "probe_success") == (1 if state == "ok" else 0)


async def test_expect_bytes_waits_for_all_bytes_when_they_come_in_pieces():
    module = module_from(PG.replace('expect_bytes: "S"', 'expect_bytes: "SOK"'))

    async def handler(reader, writer):
        await reader.readexactly(9)
        for piece in (b"S", b"O", b"K"):
            writer.write(piece)
            await writer.drain()
            await asyncio.sleep(0.05)
        await reader.read()

    async with scripted_server(handler) as port:
        result, _ = await probe(module, port)
    assert result.success, result.detail


async def test_connection_refused_is_connect_failed_with_flags_0():
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result, text = await probe(module_from(SSH), port)
    assert state_of(text) == "refused"
    assert state_of(text, "probe_dialogue_state") == "connect_failed"
    assert value(text, "probe_failed_due_to_regex") == 0
    assert ("probe_dialogue_failed_step", frozenset()) not in samples(text)


def imap_module(tmp_path, pki: Pki, extra: str = "") -> str:
    return f"""
modules:
  m:
    prober: tcp
    timeout: 5s
    tcp:
      query_response:
        - expect: "^\\\\* OK"
        - send: "a1 STARTTLS"
        - expect: "^a1 OK"
        - starttls: true
        - send: "a2 CAPABILITY"
        - expect: "^\\\\* CAPABILITY"
      tls_config: {{ca_file: {pki.ca_file}, server_name: mx.test{extra}}}
"""


def imap_handler(context, after_starttls: bytes | None = None):
    async def handler(reader, writer):
        writer.write(b"* OK ready\r\n")
        await reader.readline()
        writer.write(b"a1 OK Begin TLS negotiation now\r\n")
        await writer.drain()
        if after_starttls is not None:
            await reader.read(1)  # the client's handshake has begun: answer it with plaintext
            writer.write(after_starttls)
            await writer.drain()
            await reader.read()
            return
        await writer.start_tls(context)
        await reader.readline()
        writer.write(b"* CAPABILITY IMAP4rev1\r\na2 OK\r\n")
        await writer.drain()
        await reader.read()

    return handler


async def test_starttls_dialogue_records_tls_like_blackbox(tmp_path):
    pki = Pki(tmp_path)
    async with scripted_server(imap_handler(Pki.server_context(pki.valid))) as port:
        result, text = await probe(module_from(imap_module(tmp_path, pki)), port)
    assert result.success, result.detail
    assert value(text, "probe_tls_version_info", version="TLS 1.3") == 1
    assert value(text, "probe_tls_certificate_verified") == 1
    assert value(text, "probe_ssl_earliest_cert_expiry") == pytest.approx(Pki.not_after(pki.valid), abs=1)
    assert value(text, "probe_ssl_last_chain_expiry_timestamp_seconds") > 0
    info = [dict(lab) for (n, lab) in samples(text) if n == "probe_ssl_last_chain_info"]
    assert len(info) == 1 and re.fullmatch(r"[0-9a-f]{64}", info[0]["fingerprint_sha256"])
    assert info[0]["subjectalternative"] == "mx.test"
    assert info[0]["issuer"].startswith("OU=") or "O=" in info[0]["issuer"]
    assert re.fullmatch(r"([0-9a-f]{2})+", info[0]["serialnumber"])


async def test_tls_failure_after_starttls_is_tls_error_at_that_step(tmp_path):
    pki = Pki(tmp_path)
    handler = imap_handler(None, after_starttls=b"this is not a TLS server hello\r\n" * 4)
    async with scripted_server(handler) as port:
        result, text = await probe(module_from(imap_module(tmp_path, pki)), port)
    assert result.state == DialogueState.TLS_ERROR
    assert value(text, "probe_dialogue_failed_step") == 3
    assert value(text, "probe_failed_due_to_regex") == 0
    assert "spoke plain text where TLS was expected" in result.detail


async def test_untrusted_certificate_after_starttls_is_tls_error(tmp_path):
    pki = Pki(tmp_path)
    async with scripted_server(imap_handler(Pki.server_context(pki.wrong_name))) as port:
        result, text = await probe(module_from(imap_module(tmp_path, pki)), port)
    assert result.state == DialogueState.TLS_ERROR
    assert value(text, "probe_tls_certificate_verified") == 0
    assert "certificate did not verify" in result.detail and "host name mismatch" in result.detail


async def test_insecure_skip_verify_accepts_the_wrong_name(tmp_path):
    pki = Pki(tmp_path)
    module = module_from(imap_module(tmp_path, pki, ", insecure_skip_verify: true"))
    async with scripted_server(imap_handler(Pki.server_context(pki.wrong_name))) as port:
        result, text = await probe(module, port)
    assert result.success, result.detail
    assert ("probe_tls_certificate_verified", frozenset()) not in samples(text)
    assert ("probe_ssl_last_chain_expiry_timestamp_seconds", frozenset()) not in samples(text)


async def test_implicit_tls_banner(tmp_path):
    pki = Pki(tmp_path)

    async def handler(reader, writer):
        writer.write(b"+OK POP3 ready\r\n")
        await writer.drain()
        await reader.read()

    config = f"""
modules:
  m:
    prober: tcp
    tcp:
      tls: true
      tls_config: {{ca_file: {pki.ca_file}, min_version: TLS12}}
      query_response: [{{expect: "^[+]OK"}}]
"""
    async with scripted_server(handler, ssl=Pki.server_context(pki.valid)) as port:
        result, text = await probe(module_from(config), port)  # verified against the IP SAN 127.0.0.1
    assert result.success, result.detail
    assert value(text, "probe_tls_certificate_verified") == 1
    assert value(text, "probe_tls_handshake_duration_seconds") > 0


async def test_implicit_tls_against_a_plaintext_server_is_tls_error(tmp_path):
    async def handler(reader, writer):
        writer.write(b"+OK plaintext\r\n" * 10)
        await writer.drain()
        await reader.read()

    config = "modules: {m: {prober: tcp, timeout: 5s, tcp: {tls: true, query_response: [{expect: OK}]}}}"
    async with scripted_server(handler) as port:
        result, text = await probe(module_from(config), port)
    assert result.state == DialogueState.TLS_ERROR
    assert ("probe_dialogue_failed_step", frozenset()) not in samples(text)


def test_expand_follows_go_regexp_expand():
    match = re.compile(rb"(?P<word>\w+) (\d+)").search(b"PING 42")
    pattern = match.re
    assert expand(b"PONG ${1} $2 ${word}", pattern, match) == b"PONG PING 42 PING"
    assert expand(b"$$1 $9 ${nope} $1x", pattern, match) == b"$1   "  # unknown groups and names are empty
    assert expand(b"cost: $ 5 ${1", pattern, match) == b"cost: $ 5 ${1"  # malformed: literal


def test_printable_and_masked():
    assert printable(b"ok\x00\x1b[31m\xff") == "ok\\x00\\x1b[31m\\xff"
    assert len(printable(b"x" * 10_000)) == 200
    assert masked(b"a1 LOGIN user secret") == "a1 [17 more bytes]"
    assert masked(b"SSH-2.0-probe") == "SSH-2.0-probe"


async def test_source_ip_address_applies_to_dialogues():
    peers = asyncio.Queue()

    async def handler(reader, writer):
        await peers.put(writer.get_extra_info("peername")[0])
        writer.write(b"SSH-2.0-x\r\nbye\r\n")
        await writer.drain()
        await reader.read()

    module = module_from(SSH.replace("    tcp:\n", "    tcp:\n      source_ip_address: 127.0.0.2\n"))
    async with scripted_server(handler) as port:
        result, _ = await probe(module, port)
    assert result.success, result.detail
    assert await peers.get() == "127.0.0.2"


async def test_client_certificate_from_cert_file_and_key_file(tmp_path):
    pki = Pki(tmp_path)
    client = pki.ca.issue_cert("probe.test")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    server_context = Pki.server_context(pki.valid)
    server_context.verify_mode = ssl.CERT_REQUIRED  # refuse clients without a certificate from the CA
    pki.ca.configure_trust(server_context)
    peers = asyncio.Queue()

    async def handler(reader, writer):
        await peers.put(writer.get_extra_info("peercert"))
        writer.write(b"+OK hello\r\n")
        await writer.drain()
        await reader.read()

    def config(extra: str) -> str:
        return f"""
modules:
  m:
    prober: tcp
    timeout: 5s
    tcp:
      tls: true
      tls_config: {{ca_file: {pki.ca_file}, server_name: mx.test, max_version: TLS12{extra}}}
      query_response: [{{expect: "^[+]OK"}}]
"""

    async with scripted_server(handler, ssl=server_context) as port:
        with_cert, _ = await probe(module_from(config(f", cert_file: {cert}, key_file: {key}")), port)
        without, _ = await probe(module_from(config("")), port)
    assert with_cert.success, with_cert.detail
    assert ("DNS", "probe.test") in (await peers.get())["subjectAltName"]  # the server saw our certificate
    assert not without.success
    # TLS 1.2: the server refuses the missing certificate inside the handshake (with 1.3 only after it).
    assert without.state == DialogueState.TLS_ERROR, without.detail
