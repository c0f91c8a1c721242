"""What a failed TLS handshake means, for a person: OpenSSL's reason names and X.509 verify codes in plain words.

Classified by exception type, OpenSSL's reason code (``SSLError.reason``, a stable identifier such as
``WRONG_VERSION_NUMBER``) and the X.509 verify code (``SSLCertVerificationError.verify_code``), never by
the free-text message. Shared by every prober that speaks TLS; the OpenSSL name stays in the text
(in parentheses) so that a person can still search for it.
"""

from __future__ import annotations

import asyncio
import re
import ssl

_OPENSSL_LOCATION = re.compile(r"\s*\(_ssl\.c:\d+\)")

# OpenSSL reason names (library SSL) -> what they mean for the person running the probe.
_REASONS = {
    "WRONG_VERSION_NUMBER": "the server spoke plain text where TLS was expected: the wrong port, or `tls: true` "
    "on a port that uses STARTTLS (or a proxy answering in clear text)",
    "PACKET_LENGTH_TOO_LONG": "the server sent something that is not TLS where TLS was expected: the wrong port, "
    "or `tls: true` on a port that uses STARTTLS",
    "RECORD_LAYER_FAILURE": "the server sent something that is not TLS where TLS was expected",
    "HTTP_REQUEST": "the bytes exchanged look like HTTP, not TLS: the wrong port",
    "TLSV1_ALERT_INTERNAL_ERROR": "the server aborted its own handshake (TLS alert internal_error): its "
    "certificate or private key is usually misconfigured (missing, unreadable, or "
    "not matching each other)",
    "SSLV3_ALERT_HANDSHAKE_FAILURE": "the server refused the handshake (TLS alert handshake_failure): no cipher "
    "or key exchange in common, or the server has no usable certificate",
    "NO_SHARED_CIPHER": "no cipher in common between this client and the server",
    "NO_CIPHERS_AVAILABLE": "no cipher in common between this client and the server",
    "TLSV1_ALERT_PROTOCOL_VERSION": "no TLS version in common: the server only speaks versions this client does "
    "not allow (e.g. TLS 1.0/1.1 only), or the other way round",
    "UNSUPPORTED_PROTOCOL": "no TLS version in common: the server offered a version this client does not allow",
    "NO_PROTOCOLS_AVAILABLE": "no TLS version is enabled on this client for this connection",
    "TLSV1_UNRECOGNIZED_NAME": "the server does not serve the name sent in the handshake (SNI): set "
    "`tls_config.server_name` to a name the server has a certificate for",
    "SSLV3_ALERT_BAD_CERTIFICATE": "the server rejected the handshake with alert bad_certificate: it probably "
    "requires a client certificate",
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": "the server requires a client certificate",
    "TLSV1_ALERT_ACCESS_DENIED": "the server refused this client at the TLS level (alert access_denied)",
    "TLSV1_ALERT_DECODE_ERROR": "the server could not parse this client's handshake (alert decode_error): a TLS "
    "implementation bug or a middlebox rewriting the traffic",
    "TLSV1_ALERT_DECRYPT_ERROR": "the handshake's signature or key check failed (alert decrypt_error): a broken "
    "server key or a middlebox in the path",
    "SSLV3_ALERT_ILLEGAL_PARAMETER": "the server sent a handshake parameter this client rejects",
    "UNSAFE_LEGACY_RENEGOTIATION_DISABLED": "the server does not support secure renegotiation (RFC 5746), which "
    "OpenSSL 3 requires: an outdated TLS stack on the server",
    "DH_KEY_TOO_SMALL": "the server's Diffie-Hellman key is too small for this client's security level",
    "EE_KEY_TOO_SMALL": "the server's certificate key is too small for this client's security level",
    "CA_MD_TOO_WEAK": "a certificate in the server's chain is signed with a digest too weak for this client "
    "(e.g. SHA-1)",
    "UNEXPECTED_EOF_WHILE_READING": "the server closed the connection in the middle of the handshake",
    "UNEXPECTED_MESSAGE": "the server sent a handshake message out of order",
}

# X.509 verify codes (OpenSSL's X509_V_ERR_*) -> plain words.
_VERIFY = {
    9: "the certificate is not valid yet (check the server's and this host's clocks)",
    10: "the certificate has expired",
    18: "the certificate is self-signed and not trusted here (set `tls_config.ca_file` if that is intended)",
    19: "the chain ends in a self-signed certificate not trusted here (set `tls_config.ca_file` to that CA)",
    20: "the issuer of the certificate is not known here: a missing intermediate certificate on the server, or "
    "a private CA (set `tls_config.ca_file`)",
    21: "the certificate's issuer could not be verified: the server does not send its intermediate certificate",
    23: "the certificate has been revoked",
    26: "the certificate may not be used for a TLS server",
    62: "the certificate does not name this server (host name mismatch): set `tls_config.server_name` or fix "
    "the certificate",
    64: "the certificate does not name this IP address (IP address mismatch)",
}


def describe_verify_failure(exc: ssl.SSLCertVerificationError) -> str:
    """Why the certificate did not verify, e.g. "the certificate has expired (OpenSSL: certificate has expired)"."""
    message = exc.verify_message or exc.reason or "certificate verification failed"
    meaning = _VERIFY.get(exc.verify_code)
    return f"{meaning} (OpenSSL: {message})" if meaning else str(message)


def describe_handshake_failure(exc: BaseException) -> str:
    """What a failed handshake means; OpenSSL's reason name, when there is one, in parentheses."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the server's certificate did not verify: {describe_verify_failure(exc)}"
    if isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError, EOFError, asyncio.IncompleteReadError)):
        return "the server closed the connection in the middle of the handshake"
    if isinstance(exc, ssl.SSLError):
        reason = exc.reason
        meaning = _REASONS.get(reason or "")
        if meaning is not None:
            return f"{meaning} (OpenSSL: {reason})"
        if reason and reason.startswith(("SSLV3_ALERT_", "TLSV1_ALERT_", "TLSV13_ALERT_")):
            alert = reason.split("_ALERT_", 1)[1].lower()
            return f"the server aborted the handshake with TLS alert {alert} (OpenSSL: {reason})"
        if reason:
            return f"the TLS handshake failed (OpenSSL: {reason})"
        # An OpenSSL error this Python build has no name for (older builds lack newer reason names): show
        # OpenSSL's own text, for a person to search; nothing is decided from it.
        text = _OPENSSL_LOCATION.sub("", str(exc.args[1]) if len(exc.args) > 1 else "").strip()
        text = text.removeprefix("[SSL]").strip()
        return f"the TLS handshake failed (OpenSSL: {text[:200] or type(exc).__name__})"
    if isinstance(exc, ConnectionResetError):
        return "the server reset the connection during the handshake"
    if isinstance(exc, ConnectionError):
        return "the connection was lost during the handshake"
    if isinstance(exc, OSError):
        return f"the TLS handshake failed ({type(exc).__name__})"
    return f"the TLS handshake failed ({type(exc).__name__})"
