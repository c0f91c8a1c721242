"""Deadlines of probes that share one in-flight probe of a target: a shorter deadline that runs
out does not decide the outcome for a longer one; no connect starts after the deadline.

Ordered by events (which connection the server sees, when), not by sleeps."""

from __future__ import annotations

import asyncio

from exporter.config.loader import parse_config
from exporter.core.address import parse_host_port
from exporter.core.deadline import Deadline
from exporter.probers.connect.dial import connect_target
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probing.runner import ProbeRunner
from tests.helpers.configs import tcp_config
from tests.helpers.metrics_text import state_of


async def test_no_connect_starts_after_the_deadline(listener):
    module = tcp_config().modules["tcp_connect"]
    result = ProbeResult()
    resolver = Resolver(max_workers=1)
    try:
        loop = asyncio.get_running_loop()
        sock = await connect_target(
            result, parse_host_port(f"127.0.0.1:{listener}"), module.tcp, Deadline(loop.time() - 0.001), resolver
        )
    finally:
        resolver.close()
    assert sock is None
    assert result.tcp_state is TcpState.TIMEOUT
    assert result.connect_seconds is None


class GreetsFromTheSecondConnection:
    """An SMTP server that never greets its first connection (a probe with a short deadline
    times out on it) and greets every later one at once. Records, for each connection after the
    first, whether ``first_done`` was already true when it arrived."""

    def __init__(self) -> None:
        self.first_connected = asyncio.Event()
        self.connections = 0
        self.later_arrived_after_first_done: list[bool] = []
        self.first_done = lambda: False
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            if self.connections == 1:
                self.first_connected.set()
                await reader.read()  # silent until the prober gives up and closes
                return
            self.later_arrived_after_first_done.append(self.first_done())
            writer.write(b"220 mx.test ready\r\n")
            await writer.drain()
            for _ in range(10):
                line = await reader.readline()
                if not line:
                    break
                writer.write(b"221 bye\r\n" if line.upper().startswith(b"QUIT") else b"250 mx.test\r\n")
                await writer.drain()
        finally:
            writer.close()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def smtp_config(port: int):
    return parse_config(
        "modules: {smtp_banner: {prober: smtp, timeout: 30s, smtp: {ehlo: probe.test}}}\n"
        f"targets: [{{target: '127.0.0.1:{port}', module: smtp_banner}}]\n"
    )


async def test_a_longer_deadline_joining_a_shorter_probe_still_gets_its_own_answer():
    server = GreetsFromTheSecondConnection()
    port = await server.start()
    config = smtp_config(port)
    module, target = config.modules["smtp_banner"], parse_host_port(f"127.0.0.1:{port}")
    resolver = Resolver(max_workers=1)
    runner = ProbeRunner(resolver, max_concurrency=4)
    try:
        short = asyncio.ensure_future(runner.probe(target, module, Deadline.after(2)))
        server.first_done = short.done
        await asyncio.wait_for(server.first_connected.wait(), 30)
        long = asyncio.ensure_future(runner.probe(target, module, Deadline.after(30)))
        await asyncio.sleep(0)  # the long probe runs up to its first await: it has joined the shared probe
        assert not short.done()
        short_result = await short
        long_result = await asyncio.wait_for(long, 60)
    finally:
        resolver.close()
        server.close()
    assert short_result.state == "banner_timeout"
    assert long_result.state == "ok", long_result.detail
    # The long one waited on the short one's probe, then probed on its own: one more connection,
    # made only after the short probe had ended.
    assert server.later_arrived_after_first_done == [True]


async def test_a_metrics_scrape_is_not_decided_by_a_shorter_probe_request_in_flight(make_client):
    server = GreetsFromTheSecondConnection()
    port = await server.start()
    try:
        client = await make_client(smtp_config(port))
        # Budget 2 s (2.5 s less the 0.5 s offset): a window for the scrape to arrive while it is in flight.
        short = asyncio.ensure_future(
            client.get(
                "/probe",
                params={"target": f"127.0.0.1:{port}", "module": "smtp_banner"},
                headers={"X-Prometheus-Scrape-Timeout-Seconds": "2.5"},
            )
        )
        server.first_done = short.done
        await asyncio.wait_for(server.first_connected.wait(), 30)
        long = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "30"})
        short_text, long_text = await (await short).text(), await long.text()
    finally:
        server.close()
    assert state_of(short_text, "probe_smtp_state") == "banner_timeout"
    assert state_of(long_text, "probe_smtp_state", target=f"127.0.0.1:{port}") == "ok"
    assert server.connections == 2
