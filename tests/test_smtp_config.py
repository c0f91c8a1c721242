"""The smtp module section: typed settings, defaults, secrets kept out of sight."""

from __future__ import annotations

import socket

import pytest

from exporter.config.loader import ConfigError, default_port, load_config, parse_config
from tests.helpers.smtp_servers import Pki


def test_smtp_module_defaults_and_ports():
    config = parse_config("""
modules:
  plain: {prober: smtp}
  smtps: {prober: smtp, smtp: {tls: true, starttls: no}}
targets:
  - {target: mx.example.com, module: plain}
  - {target: mx.example.com, module: smtps}
  - {target: "mx.example.com:587", module: plain}
""")
    plain, smtps = config.modules["plain"].settings, config.modules["smtps"].settings
    assert plain.ehlo is None and plain.ehlo_name == socket.getfqdn()  # looked up when probing, not at load
    assert (plain.starttls, plain.tls, plain.mail_from, plain.auth) == ("opportunistic", False, None, None)
    assert smtps.starttls == "no"  # YAML reads an unquoted `no` as false; it means the word
    assert [t.address.port for t in config.targets] == [25, 465, 587]
    assert default_port(config.modules["plain"]) == 25 and default_port(config.modules["smtps"]) == 465


def test_password_and_ca_file_are_read_at_load_relative_to_the_config(tmp_path):
    Pki(tmp_path)  # writes ca.pem
    (tmp_path / "password").write_text("hunter2\n")
    path = tmp_path / "config.yml"
    path.write_text("""
modules:
  mx:
    prober: smtp
    smtp:
      starttls: required
      tls_config: {ca_file: ca.pem, server_name: mx.example.com}
      auth: {username: probe, password_file: password}
""")
    smtp = load_config(str(path)).modules["mx"].settings
    assert smtp.auth.password.value == "hunter2"
    assert "hunter2" not in repr(smtp) and "hunter2" not in str(smtp.auth.password)
    assert smtp.tls_config.ca_file.text.startswith("-----BEGIN CERTIFICATE-----")
    assert smtp.tls_config.server_name == "mx.example.com"


def test_expect_banner_matches_any_line_of_the_greeting():
    smtp = parse_config("modules: {mx: {prober: smtp, smtp: {expect_banner: '^220 mx'}}}").modules["mx"].settings
    assert smtp.expect_banner.search("220-first\n220 mx.example.com")


def test_password_file_with_two_lines_is_refused(tmp_path):
    (tmp_path / "password").write_text("one\ntwo\n")
    path = tmp_path / "config.yml"
    path.write_text("modules: {mx: {prober: smtp, smtp: {tls: true, auth: {username: u, password_file: password}}}}")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert caught.value.errors == [
        f"{path}: modules.mx.smtp.auth.password_file: password file 'password' must hold the password on one line"
    ]


def test_the_example_config_shows_an_envelope_test():
    """Issue 14: without rcpt_to, a server that refuses every message from this address looks ok."""
    from pathlib import Path

    from exporter.config.loader import load_config

    config = load_config(str(Path(__file__).resolve().parent.parent / "config.example.yml"))
    envelope = config.modules["smtp_envelope"].settings
    assert envelope.mail_from and envelope.rcpt_to and not envelope.send_test_message
