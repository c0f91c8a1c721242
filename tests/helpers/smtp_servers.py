"""Test helpers for the SMTP prober: scripted asyncio servers on loopback, certificates, a probe runner.

A scripted server is a real listening socket on 127.0.0.1 (port 0) whose per-connection
behaviour is an ordinary coroutine, so each hostile behaviour is a few explicit lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import trustme
from cryptography import x509

from exporter.config.loader import Config, parse_config
from exporter.core.address import parse_host_port
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult
from exporter.probers.smtp.session import probe_smtp

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Servers:
    """Starts servers on loopback and stops them (and their connections) at the end of a test."""

    def __init__(self) -> None:
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()

    async def start(self, handler: Handler, **kwargs) -> int:
        async def run(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._tasks.add(asyncio.current_task())
            try:
                await handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass  # the prober hung up first: that is its right
            except asyncio.CancelledError:
                pass  # stopped at the end of the test (asyncio's stream callback expects no cancellation)
            finally:
                writer.transport.abort()

        server = await asyncio.start_server(run, "127.0.0.1", 0, **kwargs)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def serve_protocol(self, factory: Callable[[], asyncio.Protocol], **kwargs) -> int:
        server = await asyncio.get_running_loop().create_server(factory, "127.0.0.1", 0, **kwargs)
        self._servers.append(server)
        return server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task


@dataclass
class Script:
    """A small, configurable SMTP server: default replies per verb, overridable per test."""

    greeting: bytes = b"220 mx.test ESMTP ready\r\n"
    replies: dict[str, bytes] = field(default_factory=dict)
    tls_context: ssl.SSLContext | None = None
    received: list[bytes] = field(default_factory=list)

    DEFAULTS = {
        "EHLO": b"250-mx.test greets you\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n",
        "HELO": b"250 mx.test\r\n",
        "MAIL": b"250 2.1.0 Sender ok\r\n",
        "RCPT": b"250 2.1.5 Recipient ok\r\n",
        "RSET": b"250 2.0.0 Reset\r\n",
        "DATA": b"354 End data with <CR><LF>.<CR><LF>\r\n",
        ".": b"250 2.0.0 Queued as 1234\r\n",
        "STARTTLS": b"220 2.0.0 Ready to start TLS\r\n",
        "QUIT": b"221 2.0.0 Bye\r\n",
    }

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(self.greeting)
        await writer.drain()
        for _ in range(1000):  # bounded: a prober never sends that many commands
            line = await reader.readline()
            if not line:
                return
            self.received.append(line)
            verb = line.split(b" ")[0].strip().upper().decode("ascii", "replace")
            reply = self.replies.get(verb, self.DEFAULTS.get(verb, b"500 5.5.1 Unrecognized command\r\n"))
            if verb == "DATA" and reply.startswith(b"354"):
                writer.write(reply)
                await writer.drain()
                while (body := await reader.readline()) not in (b".\r\n", b""):
                    self.received.append(body)
                reply = self.replies.get(".", self.DEFAULTS["."])
            writer.write(reply)
            await writer.drain()
            if verb == "STARTTLS" and reply.startswith(b"220") and self.tls_context is not None:
                await writer.start_tls(self.tls_context)
            if verb == "QUIT":
                return


class Pki:
    """A test CA with certificates for 127.0.0.1 / mx.test: valid, expired, and for another name."""

    def __init__(self, tmp_path) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp_path / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.valid = self.ca.issue_cert("mx.test", "127.0.0.1")
        self.wrong_name = self.ca.issue_cert("other.test")
        self.expired_not_after = datetime.datetime(2020, 1, 2, tzinfo=datetime.UTC)
        self.expired = self.ca.issue_cert(
            "mx.test",
            "127.0.0.1",
            not_before=datetime.datetime(2019, 1, 1, tzinfo=datetime.UTC),
            not_after=self.expired_not_after,
        )

    @staticmethod
    def not_after(cert: trustme.LeafCert) -> float:
        """The leaf's expiry as Unix time, read with cryptography (a dependency of trustme)."""
        leaf = x509.load_pem_x509_certificate(cert.cert_chain_pems[0].bytes())
        return leaf.not_valid_after_utc.timestamp()

    @staticmethod
    def server_context(cert: trustme.LeafCert) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(context)
        return context


class FloodProcess:
    """A server in a child process that sends ``payload`` to its first client, so that the
    probing process's memory can be measured without the server's own buffers in it."""

    SCRIPT = (
        "import socket, sys, time\n"
        "payload = sys.stdin.buffer.read()\n"
        "s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)\n"
        "print(s.getsockname()[1], flush=True)\n"
        "c, _ = s.accept()\n"
        "try:\n    c.sendall(payload); time.sleep(30)\nexcept OSError:\n    pass\n"
    )

    def __init__(self, payload: bytes):
        self.payload = payload

    def __enter__(self) -> int:
        self.process = subprocess.Popen(
            [sys.executable, "-c", self.SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.process.stdin.write(self.payload)
        self.process.stdin.close()
        return int(self.process.stdout.readline())

    def __exit__(self, *exc) -> None:
        self.process.kill()
        self.process.wait(timeout=5)
        self.process.stdout.close()


def smtp_config(smtp: str = "{}", timeout: str = "2s", name: str = "m") -> Config:
    return parse_config(f"modules: {{{name}: {{prober: smtp, timeout: {timeout}, smtp: {smtp}}}}}", "test.yml")


async def probe(port: int, smtp: str = "{}", timeout: str = "2s") -> ProbeResult:
    """Run the smtp prober once against 127.0.0.1:port with the module ``smtp`` settings (YAML flow)."""
    module = smtp_config(smtp, timeout).modules["m"]
    loop = asyncio.get_running_loop()
    resolver = Resolver(max_workers=1)
    try:
        return await probe_smtp(
            parse_host_port(f"127.0.0.1:{port}", 25), module, loop.time() + module.timeout, resolver
        )
    finally:
        resolver.close()


@pytest.fixture
async def servers():
    started = Servers()
    try:
        yield started
    finally:
        await started.close()
