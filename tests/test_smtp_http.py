"""The SMTP prober through the HTTP app: debug output that explains codes, and a clean exposition."""

from __future__ import annotations

import subprocess

from exporter.config.loader import parse_config
from tests.helpers import smtp_servers
from tests.helpers.configs import require_binary
from tests.helpers.metrics_text import samples, state_of, value
from tests.helpers.smtp_servers import Script

servers = smtp_servers.servers  # the fixture

HOSTILE_GREETING = b'220 mx.test "quoted" back\\slash \x00 nul \xff\xfe invalid utf-8 {a="b"} \x1b[0m\r\n'


def smtp_app_config(*targets: str, timeout: str = "2s") -> str:
    lines = "\n".join(f"  - {{target: '{t}', module: smtp_banner}}" for t in targets)
    return parse_config(
        f"""
modules:
  smtp_banner:
    prober: smtp
    timeout: {timeout}
    smtp: {{ehlo: probe.example.com, expect_banner: "^220 ", starttls: opportunistic}}
  smtp_envelope:
    prober: smtp
    timeout: {timeout}
    smtp: {{ehlo: probe.example.com, mail_from: probe@example.com, rcpt_to: nobody@example.com}}
targets:
{lines or "  []"}
""",
        "test.yml",
    )


async def test_debug_explains_a_blocked_greeting(make_client, servers):
    port = await servers.start(Script(greeting=b"554 5.7.1 Service unavailable; client host blocked\r\n"))
    client = await make_client(smtp_app_config())
    response = await client.get(
        "/probe", params={"target": f"127.0.0.1:{port}", "module": "smtp_banner", "debug": "true"}
    )
    assert response.status == 200
    text = await response.text()
    assert "Verdict: FAILURE, state banner_rejected" in text
    assert "S: 554 5.7.1 Service unavailable; client host blocked" in text
    assert "C: QUIT" in text
    explained = text.split("Reply codes explained:")[1].split("Metrics:")[0]
    assert "banner 554 5.7.1: " in explained
    assert "block list" in explained and "not authorized" in explained
    assert 'probe_smtp_state{state="banner_rejected"} 1' in text
    assert 'probe_smtp_enhanced_status_code_info{stage="banner",code="5.7.1"} 1' in text


async def test_debug_explains_every_reply_of_an_envelope_test(make_client, servers):
    script = Script(replies={"RCPT": b"550 5.1.1 <nobody@example.com>: Recipient address rejected\r\n"})
    port = await servers.start(script)
    client = await make_client(smtp_app_config())
    text = await (
        await client.get("/probe", params={"target": f"127.0.0.1:{port}", "module": "smtp_envelope", "debug": "true"})
    ).text()
    assert "Verdict: FAILURE, state recipient_rejected" in text
    for heading in ("banner 220:", "ehlo 250:", "mail 250 2.1.0:", "rcpt 550 5.1.1:", "quit 221 2.0.0:"):
        assert f"  {heading} " in text, heading
    assert "the mailbox does not exist at the destination" in text


async def test_default_port_is_25(make_client):
    client = await make_client(smtp_app_config())
    text = await (
        await client.get("/probe", params={"target": "127.0.0.1", "module": "smtp_banner", "debug": "true"})
    ).text()
    assert "Trying 127.0.0.1:25..." in text


async def test_metrics_with_smtp_targets_pass_promtool(make_client, servers, closed_port):
    promtool = require_binary("promtool")
    good = await servers.start(Script())
    hostile = await servers.start(Script(greeting=HOSTILE_GREETING))
    garbage = await servers.start(Script(greeting=b'\xff\x00"\\\n\r\n'))
    blocked = await servers.start(Script(greeting=b'421 4.3.2 busy "try" later\\\r\n'))
    client = await make_client(
        smtp_app_config(
            f"127.0.0.1:{good}",
            f"127.0.0.1:{hostile}",
            f"127.0.0.1:{garbage}",
            f"127.0.0.1:{blocked}",
            f"127.0.0.1:{closed_port}",
        )
    )
    text = await (await client.get("/metrics")).text()
    check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr

    def state(port: int) -> str:
        return state_of(text, "probe_smtp_state", target=f"127.0.0.1:{port}")

    # expect_banner "^220 " matches the hostile greeting: its text is odd, not wrong.
    assert [state(good), state(hostile), state(garbage), state(blocked), state(closed_port)] == [
        "ok",
        "ok",
        "protocol_error",
        "banner_rejected",
        "connect_failed",
    ]
    assert state_of(text, "probe_tcp_state", target=f"127.0.0.1:{closed_port}") == "refused"
    assert value(text, "probe_success", target=f"127.0.0.1:{good}") == 1
    assert value(text, "probe_smtp_reply_code", target=f"127.0.0.1:{blocked}", stage="banner") == 421
    assert value(text, "probe_smtp_capability", target=f"127.0.0.1:{good}", capability="PIPELINING") == 1
    assert value(text, "probe_smtp_size_limit_bytes", target=f"127.0.0.1:{good}") == 10240000
    assert value(text, "connectivity_exporter_probes_total", module="smtp_banner", state="ok") == 2
    assert value(text, "connectivity_exporter_probes_total", module="smtp_banner", state="connect_failed") == 1
    # No server text ever becomes a label value.
    label_values = {v for (_, labels), _ in samples(text).items() for _, v in labels}
    assert not any("quoted" in v or "busy" in v for v in label_values)
