"""The one module that reaches into private attributes of ``ssl`` and ``asyncio``.

Each function does something the standard library has no public API for on every Python we support
(Debian 12's 3.11.2 and newer); the probers call these and never touch the internals themselves, so a
new Python release that breaks one of them breaks it here, in one place.

- ``peer_chain``: the certificate chains of a finished TLS handshake, each certificate as the dict
  ``getpeercert()`` returns. The methods are on the connection's private ``_sslobj`` (an
  ``_ssl._SSLSocket``, Python 3.10 and later), whose certificates offer only the undocumented
  ``get_info()``. Python 3.13 made ``get_unverified_chain()`` / ``get_verified_chain()`` public, but
  they return DER bytes, and the standard library has no public way to turn DER into that dict.
- ``presented_chain``: the chain the server sent as (DER, that dict) pairs, from the same private methods.
- ``read_ahead`` / ``discard_read_ahead``: bytes an ``asyncio.StreamReader`` has received but not handed
  out yet (its private ``_buffer``). There is no public way to see them without awaiting a read, and a
  STARTTLS dialogue must know of them (RFC 3207 section 5: nothing may follow the server's go-ahead)
  and drop them before the handshake, as the plaintext they are.
- ``abort_transport``: ``abort()`` on an SSL transport whose connection is already lost raises
  AttributeError on CPython before 3.11.7 (Debian 12 ships 3.11.2): the transport's ``_ssl_protocol``
  reference is gone, and such a transport has nothing left to drop.
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

# What ``getpeercert()`` returns: per key, a string or nested tuples of (name, value) pairs.
CertInfo = dict[str, Any]
_DER = 2  # _ssl.ENCODING_DER, the format argument of the private certificates' public_bytes()


def peer_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket, verified: bool) -> list[CertInfo]:
    """The chain the server sent (``verified=False``) or the one OpenSSL verified, trust anchor
    included; leaf first. Without the private methods: the leaf alone when verified, else nothing."""
    name = "get_verified_chain" if verified else "get_unverified_chain"
    # The private object first: the public methods of 3.13 return DER bytes, which have no get_info().
    getter = getattr(getattr(ssl_object, "_sslobj", None), name, None)
    if getter is None:
        leaf = ssl_object.getpeercert() if verified else None
        return [leaf] if leaf else []
    try:
        return [cert.get_info() for cert in getter() or ()]
    except (ssl.SSLError, ValueError, AttributeError):
        return []


def presented_chain(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> list[tuple[bytes, CertInfo]]:
    """The chain the server sent, leaf first, as (DER, ``get_info()``) pairs (DANE matches the DER).
    Without the private method: the leaf's DER alone, with no info (an unverified peer's getpeercert() is
    empty)."""
    # The private object first, as in peer_chain: 3.13's public method returns bare DER bytes.
    getter = getattr(getattr(ssl_object, "_sslobj", None), "get_unverified_chain", None)
    if getter is None:
        leaf = ssl_object.getpeercert(binary_form=True)
        return [(leaf, {})] if leaf else []
    try:
        return [(cert.public_bytes(_DER), cert.get_info()) for cert in getter() or ()]
    except (ssl.SSLError, ValueError, AttributeError):
        return []


def _buffer(reader: asyncio.StreamReader) -> bytearray | None:
    inner = getattr(reader, "_buffer", None)
    return inner if isinstance(inner, bytearray) else None


def read_ahead(reader: asyncio.StreamReader) -> int:
    """Bytes ``reader`` has received that no read has returned yet."""
    inner = _buffer(reader)
    return 0 if inner is None else len(inner)


def discard_read_ahead(reader: asyncio.StreamReader) -> int:
    """Drop the bytes ``reader`` has received that no read has returned yet; how many there were."""
    inner = _buffer(reader)
    if inner is None:
        return 0
    pending = len(inner)
    inner.clear()
    return pending


def abort_transport(transport: asyncio.WriteTransport) -> None:
    """Drop the connection now (see the module's docstring for CPython before 3.11.7)."""
    if getattr(transport, "_ssl_protocol", True) is None:
        return
    transport.abort()
