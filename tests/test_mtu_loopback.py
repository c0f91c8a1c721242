"""tcp.mtu_check against real servers on loopback (no root): the data it sends is harmless to the protocol
(the dialogue goes on and succeeds), a direction the target never fills is not tested and does not change
the state, and a server that never answers after the test data stays bounded by the deadline."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import tempfile
from pathlib import Path

import pytest
import trustme

from exporter.config.loader import parse_config
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult
from exporter.probers.table import PROBERS
from tests.helpers import mta
from tests.helpers.aiosmtpd_server import start_aiosmtpd
from tests.helpers.smtp_servers import Servers


async def run(module_yaml: str, port: int, timeout: float = 5.0) -> ProbeResult:
    config = parse_config(f"modules:\n  m: {module_yaml}\n", "test.yml")
    module = config.modules["m"]
    resolver = Resolver(max_workers=1)
    try:
        return await PROBERS[module.prober].probe(
            parse_host_port(f"127.0.0.1:{port}", 25), module, Deadline.after(timeout), resolver
        )
    finally:
        resolver.close()


async def test_smtp_dialogue_goes_on_after_the_padded_noop() -> None:
    servers = Servers()
    try:
        port = await start_aiosmtpd(servers)
        result = await run(
            "{prober: smtp, timeout: 5s, tcp: {mtu_check: true}, "
            "smtp: {ehlo: probe.test, starttls: no, mail_from: a@probe.test, rcpt_to: b@mx.test}}",
            port,
        )
    finally:
        await servers.close()
    assert result.state == "ok", result.detail
    assert result.mtu is not None
    # Without TLS the server never sends a full segment: only the direction toward it was tested.
    assert (result.mtu.state, result.mtu.tested) == ("ok", ["to_target"]), result.mtu
    noop = [line for line in result.transcript if line.startswith("C: NOOP")]
    assert len(noop) == 1 and "path-MTU test" in noop[0], result.transcript
    # aiosmtpd refuses lines over RFC 5321's 512 octets with 500 and carries on: MAIL and RCPT still answered.
    assert {"mail", "rcpt"} <= set(result.details.replies), result.details.replies


async def test_plain_connect_and_dialogue_are_ok_on_loopback() -> None:
    received: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello\r\n")
        await writer.drain()
        while data := await reader.read(65536):
            received.append(data)

    servers = Servers()
    try:
        port = await servers.start(handler)
        plain = await run("{prober: tcp, timeout: 5s, tcp: {mtu_check: true}}", port)
        dialogue = await run(
            "{prober: tcp, timeout: 5s, tcp: {mtu_check: true, query_response: [{expect: '^hello'}]}}", port
        )
    finally:
        await servers.close()
    for result in (plain, dialogue):
        assert result.success, result.detail
        assert result.mtu is not None and result.mtu.state == "ok", result.mtu
        assert result.mtu.tested == ["to_target"]
        # Loopback's 64 KiB segments are not tested beyond a jumbo frame's.
        assert result.mtu.largest_sent is not None and result.mtu.largest_sent <= 8948
    assert set(b"".join(received)) <= set(b"\r\n")  # only empty lines were sent


async def test_a_server_silent_after_the_test_data_is_bounded_by_the_deadline() -> None:
    """Greets and answers EHLO, then never answers again: the NOOP is acknowledged by the kernel (ok toward
    the target), its reply never comes, and the probe ends at its deadline as an SMTP timeout."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 mx.test ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-mx.test\r\n250 8BITMIME\r\n")
        await writer.drain()
        while await reader.read(65536):
            pass

    servers = Servers()
    loop = asyncio.get_running_loop()
    try:
        port = await servers.start(handler)
        started = loop.time()
        result = await run(
            "{prober: smtp, timeout: 3s, tcp: {mtu_check: true}, smtp: {ehlo: probe.test, starttls: no}}",
            port,
            timeout=3.0,
        )
        elapsed = loop.time() - started
    finally:
        await servers.close()
    assert result.state == "timeout", result.detail
    assert result.mtu is not None and result.mtu.state == "ok", result.mtu
    assert "black hole" not in result.detail
    assert elapsed < 3.0 * 3, elapsed  # the deadline holds (generous slack for a loaded machine)


@pytest.fixture(scope="module")
def postfix():
    reason = mta.missing()
    if reason is not None:
        pytest.skip(f"Postfix: {reason}")
    # Not pytest's tmp_path: Postfix's processes (user postfix) must reach their queue.
    root = Path(tempfile.mkdtemp(prefix="mtu-postfix-"))
    root.chmod(0o755)
    server = mta.Postfix(root)
    try:
        server.start(with_auth=False)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.mta
async def test_postfix_answers_the_padded_noop_and_the_envelope_goes_on(postfix) -> None:
    """A real MTA: the padded NOOP (a jumbo frame's worth on loopback, past Postfix's 2048-byte line limit)
    draws an answer and the dialogue continues to RCPT TO and RSET; the session ends cleanly."""
    result = await run(
        "{prober: smtp, timeout: 10s, tcp: {mtu_check: true}, smtp: {ehlo: probe.example.com, starttls: no, "
        f"mail_from: probe@example.com, rcpt_to: 'postmaster@{mta.DOMAIN}'}}}}",
        postfix.ports["mailbox"],
        timeout=10.0,
    )
    assert result.state == "ok", result.detail
    assert result.mtu is not None and result.mtu.state == "ok", result.mtu
    noop = result.transcript.index(next(line for line in result.transcript if line.startswith("C: NOOP")))
    assert result.transcript[noop + 1].startswith("S: 250"), result.transcript[noop : noop + 2]
    assert result.details.replies["rcpt"].code == 250


async def test_a_server_that_stalls_only_the_first_handshake_is_no_black_hole(tmp_path: Path) -> None:
    """The first TLS handshake stalls; later connections are served. The small-MSS retry succeeds, but so does
    the control with the full MSS: no black hole is claimed, and the report says what remains possible."""
    ca = trustme.CA()
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("tls.test").configure_cert(context)
    connections = 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        if connections > 1:
            await writer.start_tls(context)
        while await reader.read(65536):
            pass

    servers = Servers()
    try:
        port = await servers.start(handler)
        result = await run(
            f"{{prober: tcp, timeout: 4s, tcp: {{tls: true, mtu_check: true, "
            f"tls_config: {{ca_file: '{ca_file}', server_name: tls.test}}}}}}",
            port,
            timeout=4.0,
        )
    finally:
        await servers.close()
    assert result.state == "tls_error", result.detail
    assert result.mtu is not None and result.mtu.state == "unknown", result.mtu
    assert any("whatever the packet size" in cause for cause in result.mtu.possible), result.mtu.possible
    assert "black hole" not in result.detail
    assert connections == 3  # the probe's own, the small-MSS retry and the control
