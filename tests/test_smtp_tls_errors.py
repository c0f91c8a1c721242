"""TLS handshake failures in plain words (exporter/probers/tls_errors.py), from real TLS servers on loopback."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import warnings

import pytest

from tests.helpers.smtp_servers import Pki, probe


@pytest.fixture
def tls_server():
    """A blocking TLS server in a thread: OpenSSL sends its alert before the handshake error is raised
    (asyncio's server side drops the connection without it). Serves one connection."""
    started: list[tuple[socket.socket, threading.Thread]] = []

    def start(context: ssl.SSLContext) -> int:
        listener = socket.create_server(("127.0.0.1", 0))

        def serve() -> None:
            with contextlib.suppress(OSError):
                conn, _ = listener.accept()
                with conn, contextlib.suppress(ssl.SSLError, OSError):
                    conn.settimeout(10)
                    with context.wrap_socket(conn, server_side=True) as tls:
                        tls.sendall(b"220 mx.test\r\n")
                        tls.recv(100)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        started.append((listener, thread))
        return listener.getsockname()[1]

    yield start
    for listener, thread in started:
        listener.close()
        thread.join(timeout=15)


def settings(pki: Pki) -> str:
    return f"{{tls: true, tls_config: {{ca_file: '{pki.ca_file}', server_name: mx.test}}}}"


async def test_no_cipher_in_common(tls_server, tmp_path):
    pki = Pki(tmp_path)
    context = Pki.server_context(pki.valid)
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("PSK")  # pre-shared-key suites only: nothing this client offers
    result = await probe(tls_server(context), settings(pki))
    assert result.state == "tls_error"
    assert result.detail == (
        "the TLS handshake failed: the server refused the handshake (TLS alert "
        "handshake_failure): no cipher or key exchange in common, or the server has no usable certificate "
        "(OpenSSL: SSLV3_ALERT_HANDSHAKE_FAILURE)"
    )


async def test_no_tls_version_in_common(tls_server, tmp_path):
    pki = Pki(tmp_path)
    context = Pki.server_context(pki.valid)
    try:
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        with warnings.catch_warnings():  # deprecated versions on purpose: an outdated server
            warnings.simplefilter("ignore", DeprecationWarning)
            context.minimum_version = ssl.TLSVersion.TLSv1
            context.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError):
        pytest.skip("this OpenSSL cannot serve TLS 1.1")
    result = await probe(tls_server(context), settings(pki))
    assert result.state == "tls_error"
    # Which check fails first depends on the interpreter's OpenSSL policy: Debian's Python 3.11.2 gets as far as
    # refusing the server's legacy signature algorithm, a reason its ssl module has no name for.
    assert "no TLS version in common" in result.detail or result.detail.endswith(
        "(OpenSSL: legacy sigalg disallowed or unsupported)"
    ), result.detail
