"""How a dialogue is shown to people: `check`, certificate names in blackbox_exporter's spelling."""

from __future__ import annotations

import subprocess
import sys

from exporter.probers.tls.families import _serial, go_name
from tests.helpers.dialogue import ThreadedServers
from tests.helpers.exporter_process import REPO


def test_go_name_order_and_escaping():
    subject = (
        (("countryName", "US"),),
        (("organizationName", "Example, Inc."),),
        (("organizationalUnitName", "Ops"),),
        (("organizationalUnitName", "Mail"),),
        (("commonName", "mx.example.com"),),
        (("emailAddress", "ops@example.com"),),
    )
    # Go's pkix.Name.String(): CN, OU, O, ..., C; several values of one type joined by '+'; rare ones last.
    assert go_name(subject) == "CN=mx.example.com,OU=Ops+OU=Mail,O=Example\\, Inc.,C=US,emailAddress=ops@example.com"
    assert go_name(((("commonName", " #lead"),),)) == "CN=\\ #lead"


def test_serial_is_minimal_lower_case_hex():
    assert _serial("00AB01") == "ab01"
    assert _serial("0F") == "0f"
    assert _serial("not hex") == ""


def test_check_shows_the_failed_step_and_what_came_instead(tmp_path):
    async def handler(reader, writer):
        writer.write(b"HTTP/1.1 400 Bad Request\r\n\r\n")
        await writer.drain()

    servers = ThreadedServers()
    try:
        port = servers.start(handler)
        config = tmp_path / "blackbox.yml"
        config.write_text("""
modules:
  ssh_banner:
    prober: tcp
    tcp:
      query_response:
      - expect: "^SSH-2.0-"
      - send: "SSH-2.0-blackbox-ssh-check"
  web: {prober: http}
""")
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "check",
                f"--config.file={config}",
                "--module",
                "ssh_banner",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        unsupported = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "check",
                f"--config.file={config}",
                "--module",
                "web",
                f"127.0.0.1:{port}",
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        servers.close()
    assert done.returncode == 1, done.stderr
    assert "FAILURE: expect_mismatch (TCP: open)" in done.stdout
    assert "Dialogue: expect_mismatch at step 0 of 2" in done.stdout
    assert "Received instead: HTTP/1.1 400 Bad Request | " in done.stdout
    assert "< HTTP/1.1 400 Bad Request" in done.stdout
    assert unsupported.returncode == 2
    assert unsupported.stderr.strip().endswith(
        "uses blackbox_exporter's http prober, which connectivity_exporter "
        "does not implement (supported probers: tcp, smtp)"
    )
