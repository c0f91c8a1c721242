"""Outcome classification comes from errno and exception types, never from message text."""

from __future__ import annotations

import errno

import pytest

from exporter.probers.connect.result import TcpState, classify_errno


@pytest.mark.parametrize(
    "code, state",
    [
        (0, TcpState.OPEN),
        (errno.ECONNREFUSED, TcpState.REFUSED),
        (errno.ECONNRESET, TcpState.REFUSED),
        (errno.ETIMEDOUT, TcpState.TIMEOUT),
        (errno.EHOSTUNREACH, TcpState.UNREACHABLE),
        (errno.ENETUNREACH, TcpState.UNREACHABLE),
        (errno.EPERM, TcpState.UNREACHABLE),
        (errno.EMFILE, TcpState.ERROR),
        (errno.EADDRNOTAVAIL, TcpState.ERROR),
    ],
)
def test_errno(code, state):
    assert classify_errno(code) is state
