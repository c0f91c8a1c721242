"""Outcome classification comes from errno and exception types, never from message text."""

from __future__ import annotations

import errno
import socket

import pytest

from exporter.probers.result import TcpState, classify_errno, classify_exception


@pytest.mark.parametrize("code, state", [
    (0, TcpState.OPEN),
    (errno.ECONNREFUSED, TcpState.REFUSED),
    (errno.ECONNRESET, TcpState.REFUSED),
    (errno.ETIMEDOUT, TcpState.TIMEOUT),
    (errno.EHOSTUNREACH, TcpState.UNREACHABLE),
    (errno.ENETUNREACH, TcpState.UNREACHABLE),
    (errno.EPERM, TcpState.UNREACHABLE),
    (errno.EMFILE, TcpState.ERROR),
    (errno.EADDRNOTAVAIL, TcpState.ERROR),
])
def test_errno(code, state):
    assert classify_errno(code) is state


@pytest.mark.parametrize("exc, state", [
    (ConnectionRefusedError(errno.ECONNREFUSED, "whatever the text says"), TcpState.REFUSED),
    (TimeoutError(), TcpState.TIMEOUT),
    (OSError(errno.ETIMEDOUT, "refused"), TcpState.TIMEOUT),  # the text lies; the errno decides
    (OSError(errno.EHOSTUNREACH, "timed out"), TcpState.UNREACHABLE),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), TcpState.DNS_ERROR),
    (OSError(errno.EMFILE, "Too many open files"), TcpState.ERROR),
    (ValueError("connection refused"), TcpState.ERROR),
])
def test_exception(exc, state):
    assert classify_exception(exc) is state
