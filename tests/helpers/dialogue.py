"""Shared by the dialogue tests: scripted loopback servers and one probe rendered as /probe would."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from exporter.config.loader import parse_config
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.probers.connect.resolve import Resolver
from exporter.probing.runner import ProbeRunner
from exporter.service.exporter import render_single

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def scripted_server(handler: Handler, ssl=None):
    """A loopback server running ``handler`` per client; yields (port, list of bytes each client sent)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await handler(reader, writer)
        except (ConnectionError, OSError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the probe hung up, or the test is over
        finally:
            writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=ssl)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


def module_from(yaml_text: str, name: str = "m"):
    return parse_config(yaml_text).modules[name]


async def probe(module, port: int, host: str = "127.0.0.1"):
    """(result, exposition text) of one probe of host:port."""
    resolver = Resolver(max_workers=1)
    try:
        runner = ProbeRunner(resolver, max_concurrency=1)
        result = await runner.probe(parse_host_port(f"{host}:{port}"), module, Deadline.after(module.timeout))
    finally:
        resolver.close()
    return result, render_single(result, module)


class ThreadedServers:
    """Scripted servers on an event loop in a background thread, for tests that make blocking HTTP calls."""

    def __init__(self) -> None:
        import threading

        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()
        self._stack = contextlib.AsyncExitStack()

    def start(self, handler: Handler, ssl=None) -> int:
        async def enter() -> int:
            return await self._stack.enter_async_context(scripted_server(handler, ssl))

        return asyncio.run_coroutine_threadsafe(enter(), self.loop).result(30)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stack.aclose(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(30)
        self.loop.close()
