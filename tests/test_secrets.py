"""Secrets never leak: the SMTP AUTH password and the web-config bcrypt hash appear in no log line,
transcript, debug output, status page, history entry, error reply or `check` output.

One real exporter process (debug logs on) probes a real STARTTLS server that accepts the login
and one that rejects it while echoing the credentials back; every text the exporter produces is
then searched for the secrets in every form they travel in.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import sys
from pathlib import Path

import aiohttp
import bcrypt

from tests.helpers.eventually import eventually
from tests.helpers.smtp_servers import Pki, Script, Servers

ROOT = Path(__file__).resolve().parent.parent
SMTP_PASSWORD = "S3cr3t-Pa55!smtp"
WEB_PASSWORD = "W3b-Pa55!scrape"
EHLO = b"250-mx.test\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"


def secret_forms() -> list[str]:
    plain = f"\0probe\0{SMTP_PASSWORD}".encode()
    return [
        SMTP_PASSWORD,
        base64.b64encode(plain).decode(),
        base64.b64encode(SMTP_PASSWORD.encode()).decode(),
        WEB_PASSWORD,
        base64.b64encode(f"admin:{WEB_PASSWORD}".encode()).decode(),
    ]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_no_secret_in_any_output(tmp_path):
    pki = Pki(tmp_path)
    web_hash = bcrypt.hashpw(WEB_PASSWORD.encode(), bcrypt.gensalt(4)).decode()
    servers = Servers()
    accepting = Script(
        replies={"EHLO": EHLO, "AUTH": b"235 2.7.0 Authentication successful\r\n"},
        tls_context=Pki.server_context(pki.valid),
    )
    echo = base64.b64encode(f"\0probe\0{SMTP_PASSWORD}".encode())
    rejecting = Script(
        replies={"EHLO": EHLO, "AUTH": b"535 5.7.8 bad credentials " + echo + b" " + SMTP_PASSWORD.encode() + b"\r\n"},
        tls_context=Pki.server_context(pki.valid),
    )
    good_port = await servers.start(accepting)
    bad_port = await servers.start(rejecting)
    (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
    module = (
        f"{{prober: smtp, timeout: 3s, smtp: {{ehlo: probe.test, starttls: required, "
        f"tls_config: {{ca_file: '{pki.ca_file}', server_name: mx.test}}, "
        f"auth: {{username: probe, password_file: smtp-password, mechanism: plain}}}}}}"
    )
    config = tmp_path / "config.yml"
    config.write_text(f"""
modules:
  smtp_auth: {module}
targets:
  - {{target: "127.0.0.1:{good_port}", module: smtp_auth}}
  - {{target: "127.0.0.1:{bad_port}", module: smtp_auth}}
""")
    web = tmp_path / "web.yml"
    web.write_text(f"basic_auth_users:\n  admin: '{web_hash}'\n")
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "exporter",
        f"--config.file={config}",
        f"--web.config.file={web}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log.level=debug",
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    bodies: list[str] = []
    try:
        auth = aiohttp.BasicAuth("admin", WEB_PASSWORD)
        async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as http:

            async def healthy() -> int:
                async with http.get("/-/healthy", auth=auth) as response:
                    return response.status

            await eventually(
                healthy,
                until=lambda status: status == 200,
                what="the exporter's listener",
                ignoring=(aiohttp.ClientConnectionError,),
            )
            for path in (
                "/metrics",
                f"/probe?target=127.0.0.1:{bad_port}&module=smtp_auth&debug=true",
                f"/probe?target=127.0.0.1:{good_port}&module=smtp_auth&debug=true",
                "/",
            ):
                async with http.get(path, auth=auth) as response:
                    assert response.status == 200, path
                    bodies.append(await response.text())
            states = bodies[0]
            assert 'state="ok"} 1' in states and 'state="auth_failed"} 1' in states, "the AUTH paths did not run"
            for entry in range(1, 6):
                async with http.get(f"/history?id={entry}", auth=auth) as response:
                    bodies.append(await response.text())
            async with http.get("/metrics", auth=aiohttp.BasicAuth("admin", "wrong" + WEB_PASSWORD)) as response:
                assert response.status == 401
                bodies.append(await response.text())
            # A reload that cannot read the password file loads (issue 21: one warning, the module's probes
            # fail with the reason); neither the reload's answer nor that probe may show the old secret.
            (tmp_path / "smtp-password").unlink()
            async with http.post("/-/reload", auth=auth) as response:
                assert response.status == 200
                bodies.append(await response.text())
            async with http.get(f"/probe?target=127.0.0.1:{good_port}&module=smtp_auth&debug=true", auth=auth) as r:
                bodies.append(await r.text())
                assert "cannot read password file 'smtp-password'" in bodies[-1], bodies[-1][-500:]
        (tmp_path / "smtp-password").write_text(SMTP_PASSWORD + "\n")
        check = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "exporter",
            "check",
            f"127.0.0.1:{bad_port}",
            "--module",
            "smtp_auth",
            f"--config.file={config}",
            "--json",
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        bodies.append((await asyncio.wait_for(check.communicate(), 30))[0].decode())
        assert '"auth_failed"' in bodies[-1], bodies[-1][-500:]
    finally:
        process.terminate()
        logs = (await asyncio.wait_for(process.communicate(), 20))[0].decode()
        await servers.close()

    assert "level=debug" in logs, "debug logging was not on: the test would prove nothing"
    assert "C: AUTH PLAIN" in bodies[1], "the transcript should show the AUTH command, masked"
    for name, text in [("logs", logs)] + [(f"body {i}", body) for i, body in enumerate(bodies)]:
        for secret in secret_forms():
            assert secret not in text, f"a secret leaked into {name}"
        assert web_hash not in text and web_hash[7:] not in text, f"the bcrypt hash leaked into {name}"
