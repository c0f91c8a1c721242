"""Shared fixtures: real loopback listeners, closed ports, an app built on an injected registry."""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from exporter.config.loader import Config
from exporter.web.app import create_app
from tests.helpers import unprivileged


@pytest.fixture
def listener() -> Iterator[int]:
    """Port of a real loopback listener (the kernel completes handshakes from the backlog)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def config_file(tmp_path, listener, closed_port):
    """A config with an open (listener) and a refused (closed_port) loopback target."""
    path = tmp_path / "config.yml"
    path.write_text(f"""modules:
  tcp_connect: {{prober: tcp, timeout: 2s}}
targets:
  - {{target: "127.0.0.1:{listener}", module: tcp_connect}}
  - {{target: "127.0.0.1:{closed_port}", module: tcp_connect}}
""")
    return path


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port nothing listens on, held for the test: bound and never listening, so connects to it are
    refused and no other socket (an exporter's free_port, another test's server) can take it meanwhile. A port
    released at once can be handed out again; that is one cause that fits a CI failure where a 'refused' target
    came out otherwise, and this rules it out."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.fixture
def make_client(aiohttp_client):
    """Start the real app for a config on a loopback port and return an HTTP client for it."""

    async def make(config: Config):
        return await aiohttp_client(create_app(config, registry=CollectorRegistry()))

    return make


@pytest.fixture(scope="session")
def unprivileged_runtime() -> Iterator[unprivileged.Runtime]:
    """``python -m exporter`` for uid 65532 from a readable copy, wherever this clone lives (needs root)."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root to run the exporter as uid {unprivileged.UID}")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv is not installed (Debian package util-linux)")
    try:
        runtime = unprivileged.stage()
    except unprivileged.Unavailable as reason:
        pytest.skip(str(reason))
    try:
        yield runtime
    finally:
        runtime.close()
