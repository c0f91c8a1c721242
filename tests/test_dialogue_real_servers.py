"""Dialogues against real servers from Debian packages on loopback: what we add on top of blackbox_exporter
(expect_bytes for PostgreSQL's SSLRequest then TLS, labels, the TLS families, per-step facts)."""

from __future__ import annotations

import pytest

from tests.helpers.dialogue import module_from, probe
from tests.helpers.metrics_text import samples, state_of, value
from tests.helpers.real_servers import dovecot, postgres, sshd
from tests.helpers.smtp_servers import Pki

pytestmark = pytest.mark.mta


async def test_sshd_banner_with_version_label(tmp_path):
    config = """
modules:
  m:
    prober: tcp
    tcp:
      query_response:
        - expect: "^SSH-2.0-([^ \\r]+)"
          labels: [{name: ssh_version, value: "${1}"}]
        - send: "SSH-2.0-connectivity-exporter-check"
"""
    with sshd(tmp_path) as port:
        result, text = await probe(module_from(config), port)
    assert result.success, result.detail
    labels = [dict(lab) for (n, lab), v in samples(text).items() if n == "probe_expect_info" and v == 1]
    assert len(labels) == 1 and labels[0]["ssh_version"].startswith("OpenSSH_"), labels


async def test_dovecot_starttls_then_capability(tmp_path):
    pki = Pki(tmp_path)
    config = f"""
modules:
  m:
    prober: tcp
    timeout: 10s
    tcp:
      query_response:
        - expect: "^\\\\* OK .*STARTTLS"
        - send: "a1 STARTTLS"
        - expect: "^a1 OK"
        - starttls: true
        - send: "a2 CAPABILITY"
        - expect: "^\\\\* CAPABILITY .*AUTH=PLAIN"
          labels: [{{name: server, value: "dovecot"}}]
        - send: "a3 LOGOUT"
      tls_config: {{ca_file: {pki.ca_file}, server_name: mx.test, min_version: TLS12}}
"""
    with dovecot(tmp_path, pki) as port:
        result, text = await probe(module_from(config), port)
    assert result.success, result.detail
    assert state_of(text, "probe_dialogue_state") == "ok"
    assert value(text, "probe_tls_certificate_verified") == 1
    assert value(text, "probe_ssl_earliest_cert_expiry") == pytest.approx(Pki.not_after(pki.valid), abs=1)
    assert value(text, "probe_expect_info", server="dovecot") == 1
    steps = [v for (n, lab), v in samples(text).items() if n == "probe_dialogue_step_duration_seconds"]
    assert len(steps) == 7
    assert any(line.startswith("< * CAPABILITY") for line in result.transcript)


async def test_dovecot_wrong_expectation_reports_the_step_and_what_came_instead(tmp_path):
    """The same server, a wrong expectation: the failed step and what came instead are reported."""
    pki = Pki(tmp_path)
    config = """
modules:
  m:
    prober: tcp
    timeout: 3s
    tcp:
      query_response:
        - expect: "^\\\\* OK .*IMAP4rev2"
"""
    with dovecot(tmp_path, pki) as port:
        result, text = await probe(module_from(config), port)
    assert not result.success
    assert value(text, "probe_dialogue_failed_step") == 0
    assert state_of(text, "probe_dialogue_state") == "timeout"
    assert result.details.received and result.details.received[0].startswith("* OK [CAPABILITY")


@pytest.mark.parametrize("verify", [True, False])
async def test_postgres_sslrequest_expect_bytes_then_tls(tmp_path, verify):
    pki = Pki(tmp_path)
    tls_config = f"{{ca_file: {pki.ca_file}, server_name: mx.test}}" if verify else "{insecure_skip_verify: true}"
    config = f"""
modules:
  m:
    prober: tcp
    timeout: 10s
    tcp:
      query_response:
        - send: !!binary AAAACATSFi8=
        - expect_bytes: "S"
          starttls: true
      tls_config: {tls_config}
"""
    with postgres(tmp_path, pki) as port:
        result, text = await probe(module_from(config), port)
    assert result.success, result.detail
    assert value(text, "probe_failed_due_to_bytes") == 0
    assert value(text, "probe_tls_version_info", version="TLS 1.3") == 1
    info = [dict(lab) for (n, lab) in samples(text) if n == "probe_ssl_last_chain_info"]
    assert info and info[0]["subjectalternative"] == "mx.test"
    if verify:
        assert value(text, "probe_tls_certificate_verified") == 1
    else:
        assert ("probe_tls_certificate_verified", frozenset()) not in samples(text)
