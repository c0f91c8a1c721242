"""`check --json` for the smtp prober: JSON-native types in a documented, stable schema, for every state."""

from __future__ import annotations

import asyncio
import json

import pytest

from exporter.cli.check import json_report
from exporter.core.address import parse_host_port
from exporter.probers.smtp.explain import Party
from exporter.probers.smtp.result import SMTP_DETAILS_JSON_SCHEMA, SmtpState
from exporter.probing.runner import deadline_result
from tests.helpers import smtp_servers
from tests.helpers.smtp_servers import Pki, Script, probe, smtp_config

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is not installed (pip install '.[test]')")

servers = smtp_servers.servers  # the fixture

EHLO_TLS_AUTH = b"250-mx.test\r\n250-AUTH PLAIN LOGIN\r\n250-SIZE 1000\r\n250 STARTTLS\r\n"


async def silent(reader, writer):
    await asyncio.sleep(3600)


async def garbage(reader, writer):
    writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
    await writer.drain()


async def scenarios(servers, tmp_path, closed_port) -> dict[str, tuple[int, str, str]]:
    """One (port, module settings, timeout) per state."""
    pki = Pki(tmp_path)
    (tmp_path / "pw").write_text("server\n")
    tls = f"tls_config: {{ca_file: '{pki.ca_file}', server_name: mx.test}}"
    envelope = "mail_from: probe@example.com, rcpt_to: pm@example.com"

    async def script(**kwargs) -> int:
        return await servers.start(Script(**kwargs))

    return {
        "ok": (await script(), f"{{{envelope}}}", "2s"),
        "connect_failed": (closed_port, "{}", "2s"),
        "banner_timeout": (await servers.start(silent), "{}", "1s"),
        "banner_rejected": (await script(greeting=b"554 5.7.1 blocked\r\n"), "{}", "2s"),
        "banner_mismatch": (await script(), "{expect_banner: nope}", "2s"),
        "ehlo_rejected": (await script(replies={"EHLO": b"550 no\r\n", "HELO": b"550 no\r\n"}), "{}", "2s"),
        "starttls_unavailable": (await script(), "{starttls: required}", "2s"),
        "tls_error": (await script(), f"{{tls: true, {tls}}}", "2s"),
        "auth_failed": (
            await script(
                replies={"EHLO": EHLO_TLS_AUTH, "AUTH": b"535 5.7.8 no, server says no\r\n"},
                tls_context=Pki.server_context(pki.valid),
            ),
            f"{{starttls: required, {tls}, auth: {{username: u, password_file: '{tmp_path / 'pw'}'}}}}",
            "2s",
        ),
        "sender_rejected": (await script(replies={"MAIL": b"553 5.1.8 bad sender\r\n"}), f"{{{envelope}}}", "2s"),
        "recipient_rejected": (await script(replies={"RCPT": b"450 4.2.0 Greylisted\r\n"}), f"{{{envelope}}}", "2s"),
        "data_rejected": (
            await script(replies={"DATA": b"554 5.5.1 no valid recipients\r\n"}),
            f"{{{envelope}, send_test_message: true}}",
            "2s",
        ),
        "protocol_error": (await servers.start(garbage), "{}", "2s"),
        "timeout": (await script(replies={"EHLO": b""}), "{}", "1s"),
        "client_rejected": (
            await script(replies={"RCPT": b"554 5.7.1 Client host rejected: Access denied\r\n"}),
            f"{{{envelope}}}",
            "2s",
        ),
        "starttls_failed": (
            await script(
                replies={"EHLO": b"250-mx.test\r\n250 STARTTLS\r\n", "STARTTLS": b"454 4.7.0 TLS not available\r\n"}
            ),
            "{}",
            "2s",
        ),
        # A server that accepts RCPT TO a foreign domain: the relay check fails.
        "open_relay": (await script(), f"{{{envelope}, relay_check_rcpt_to: relay-test@example.net}}", "2s"),
    }


def test_the_schema_is_valid_and_matches_the_code():
    jsonschema.Draft202012Validator.check_schema(SMTP_DETAILS_JSON_SCHEMA)
    refused = SMTP_DETAILS_JSON_SCHEMA["properties"]["refused"]["enum"]
    assert set(refused) == {None} | {party.value for party in Party}


async def test_every_state_validates_against_the_documented_schema(servers, tmp_path, closed_port):
    cases = await scenarios(servers, tmp_path, closed_port)
    # A new state needs a case here; "error" is the exporter's own failure (a raising prober), made by the runner
    # and tested in tests/test_prober_plugins.py.
    assert set(cases) == {state.value for state in SmtpState} - {"error"}
    validator = jsonschema.Draft202012Validator(SMTP_DETAILS_JSON_SCHEMA)
    for state, (port, settings, timeout) in cases.items():
        result = await probe(port, settings, timeout)
        assert result.state == state, (state, result.detail)
        module = smtp_config(settings, timeout).modules["m"]
        document = json.loads(json_report(parse_host_port(f"127.0.0.1:{port}", 25), module, result))
        extra = document["details"]
        errors = [error.message for error in validator.iter_errors(extra)]
        assert not errors, (state, errors)
        assert document["state"] == state
        # JSON-native: nothing rendered through str() (no "frozenset(", no "b'...'")
        text = json.dumps(extra)
        assert "frozenset(" not in text and "b'" not in text
        if extra["capabilities"] is not None:
            assert isinstance(extra["capabilities"], list)
        if state == "auth_failed":
            assert "server" in text and "********" not in json.dumps(extra["replies"]["banner"])
        if state == "timeout":
            assert extra["stalled_at"] == "EHLO " + module.settings.ehlo_name
        if state == "recipient_rejected":
            assert extra["greylisted"] is True and extra["refused"] == "recipient"
        if state == "client_rejected":
            assert extra["refused"] == "client"


def test_a_probe_cut_at_the_deadline_has_no_details():
    module = smtp_config().modules["m"]
    document = json.loads(json_report(parse_host_port("127.0.0.1:25", 25), module, deadline_result(module, 1.0)))
    assert document["details"] is None and document["cut_at_deadline"] is True
