"""The tcp prober's part of ``tcp.mtu_check`` (docs/mtu.md): what it sends and how it replays.

Towards the target, after the dialogue (or the TLS handshake, or the bare connect): empty lines
(CR LF) filling more than one full-size segment, inside TLS when the module uses it. Line-based
protocols ignore or refuse an empty line (HTTP/1.1 servers SHOULD ignore empty lines before a
request, RFC 9112 section 2.2); the probe closes right after the data is acknowledged and reads no
answer. From the target: its TLS certificate flight and the dialogue's replies; when they stall, the
same handshake and steps are repeated on a connection that advertises a small MSS.
"""

from __future__ import annotations

import asyncio
import socket

from exporter.core.deadline import Deadline
from exporter.probers.connect.mtu import ExchangeFn, Finding, MtuCheck, explanation
from exporter.probers.connect.result import ProbeResult
from exporter.probers.tcp.dialogue import DialogueDetails, DialogueState, close_quietly, open_streams, run_dialogue
from exporter.probers.tcp.dialogue_config import TcpProberSettings

# A bounded wait for asyncio's write buffer to reach the kernel (it normally does at once).
FLUSH_POLLS = 200


def padding(size: int) -> bytes:
    return b"\r\n" * max(1, size // 2)


async def to_target_streams(check: MtuCheck, writer: asyncio.StreamWriter, result: ProbeResult) -> Finding:
    async def send(size: int) -> None:
        writer.write(padding(size))
        await writer.drain()
        for _ in range(FLUSH_POLLS):  # bounded: drain() only waits below the high-water mark
            if writer.transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.005)

    result.note(f"Sending {check.payload_size()} bytes of empty lines (path-MTU test)")
    return await check.to_target(send)


async def to_target_socket(check: MtuCheck, sock: socket.socket, result: ProbeResult) -> Finding:
    loop = asyncio.get_running_loop()

    async def send(size: int) -> None:
        await loop.sock_sendall(sock, padding(size))

    result.note(f"Sending {check.payload_size()} bytes of empty lines (path-MTU test)")
    return await check.to_target(send)


def replay(tcp: TcpProberSettings, host: str, failed_step: int | None) -> ExchangeFn:
    """The handshake and the dialogue up to the step that stalled, for a small-MSS connection."""
    steps = tcp.query_response[: (failed_step + 1) if failed_step is not None else 0]

    async def exchange(sock: socket.socket, deadline: Deadline) -> bool:
        scratch, details = ProbeResult(), DialogueDetails()
        streams = await open_streams(sock, tcp.tls, tcp.tls_config, host, deadline, details, scratch)
        if streams is None:
            return False
        reader, writer = streams
        try:
            return await run_dialogue(reader, writer, steps, tcp.tls_config, host, deadline, details, scratch)
        finally:
            close_quietly(writer)

    return exchange


async def after_stall(check: MtuCheck, tcp: TcpProberSettings, host: str, result: ProbeResult, until: Deadline) -> None:
    """The handshake or dialogue failed: if it ran out of its half of the time, retry small."""
    stalled = result.state in (DialogueState.TLS_ERROR, DialogueState.TIMEOUT)
    if not stalled or asyncio.get_running_loop().time() < until:
        return
    details = result.details
    failed_step = details.failed_step if isinstance(details, DialogueDetails) else None
    if await check.from_target_stalled(replay(tcp, host, failed_step)):
        result.detail = (
            f"{result.detail}; then silence: large packets from the target are dropped — a path-MTU black hole "
            "(the same exchange succeeded on a connection advertising a small MSS and stalled again with the full MSS)"
        )


def conclude(check: MtuCheck, result: ProbeResult) -> None:
    """Keep the report; a black hole fails the probe (the service hangs for real clients)."""
    report = result.mtu = check.finish()
    result.note(f"Path MTU check: {report.state}: {report.detail}")
    words = explanation(report)
    if words is not None and result.success:
        result.success = False
        result.detail = report.detail
