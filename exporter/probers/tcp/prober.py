"""The ``tcp`` prober: can a TCP connection be opened, and if not, why not; then, when the module has
one, blackbox_exporter's ``query_response`` dialogue, over TLS with ``tls: true`` or after ``starttls``.

A module without a dialogue or TLS keeps the plain connect probe (``result.state`` is the TCP state);
with one, ``result.state`` is a ``DialogueState`` and ``result.details`` the ``DialogueDetails``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable, Iterable
from enum import StrEnum

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.exposition import Family, escape_label_value
from exporter.probers.base import Cancel, Prober, Starter
from exporter.probers.connect.dial import connect_target, start_connect
from exporter.probers.connect.metrics import CONNECT_FAMILIES
from exporter.probers.connect.mtu import MtuCheck
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probers.module import Module
from exporter.probers.tcp import mtu as tcp_mtu
from exporter.probers.tcp.dialogue import (
    CERTIFICATE,
    DIALOGUE,
    DialogueDetails,
    DialogueState,
    close_quietly,
    open_streams,
    run_dialogue,
)
from exporter.probers.tcp.dialogue_config import TCP_PROBER_SECTION, TcpProberSettings
from exporter.probers.tls.families import TLS_FAMILIES, detail_lines, detail_value


def _plain(tcp: object) -> bool:
    """A connect and nothing more (a Module built in code may carry the connect step's plain TcpSettings)."""
    return not isinstance(tcp, TcpProberSettings) or not (tcp.query_response or tcp.tls)


# SO_LINGER on with a zero timeout: close() sends a reset and frees the socket at once (no TIME_WAIT).
_RESET_ON_CLOSE = struct.pack("ii", 1, 0)


def reset_on_close(sock: socket.SocketType | None, tcp: object) -> bool:
    """Arm ``tcp.close_with_reset`` on a connected socket before it is closed; whether it was."""
    if sock is None or not (isinstance(tcp, TcpProberSettings) and tcp.close_with_reset):
        return False
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
    except OSError:  # the connection is already gone: a plain close is all there is
        return False
    return True


def _connected_only(result: ProbeResult, sock: socket.SocketType | None, tcp: object) -> ProbeResult:
    """The end of a plain connect probe: the connection (if any) closed, success is being open."""
    if sock is not None:
        reset = reset_on_close(sock, tcp)
        sock.close()
        result.note("Connection reset by the prober (close_with_reset)" if reset else "Connection closed by the prober")
    result.success = result.tcp_state is TcpState.OPEN
    return result


def start_tcp(module: Module) -> Starter | None:
    """``probe_tcp`` for a plain connect to an IP literal, on the connect step's callbacks (no coroutine)."""
    tcp = module.tcp
    if not _plain(tcp) or tcp.probe_addresses == "all" or tcp.mtu_check:
        return None

    def start(
        target: HostPort, deadline: Deadline, done: Callable[[ProbeResult], None], loop: asyncio.AbstractEventLoop
    ) -> Cancel:
        dial = start_connect(
            ProbeResult(),
            target,
            tcp,
            deadline,
            lambda result, sock: done(_connected_only(result, sock, tcp)),
            loop,
            closes_at_once=True,
        )
        if dial is None:
            raise ValueError(f"{target} is not an IP literal: the runner must use probe_tcp")
        return dial

    return start


async def probe_tcp(target: HostPort, module: Module, deadline: Deadline, resolver: Resolver) -> ProbeResult:
    result = ProbeResult()
    tcp = module.tcp
    sock = await connect_target(result, target, module.tcp, deadline, resolver)
    check = None
    if sock is not None and tcp.mtu_check and result.address is not None:
        check = MtuCheck(sock, result.address, target.port, deadline)
    if _plain(tcp):
        if sock is not None and check is not None:
            await tcp_mtu.to_target_socket(check, sock, result)
        _connected_only(result, sock, tcp)
        if check is not None:
            tcp_mtu.conclude(check, result)
        return result
    assert isinstance(tcp, TcpProberSettings)
    details = result.details = DialogueDetails(steps=len(tcp.query_response))
    if sock is None:
        result.state = DialogueState.CONNECT_FAILED
        return result
    writer = None
    # With mtu_check the target's data gets half the time left: the rest is for a small-MSS retry.
    until = deadline if check is None else check.stall_deadline()
    if check is not None:
        check.expect_from_target()
    try:
        streams = await open_streams(sock, tcp.tls, tcp.tls_config, target.host, until, details, result)
        if streams is not None:
            reader, writer = streams
            if check is not None and tcp.tls:
                check.from_target_arrived()
            if await run_dialogue(
                reader, writer, tcp.query_response, tcp.tls_config, target.host, until, details, result
            ):
                result.state = DialogueState.OK
                result.success = True
                if tcp.query_response:
                    result.detail = f"the dialogue's {len(tcp.query_response)} steps succeeded"
                if check is not None:
                    await tcp_mtu.to_target_streams(check, writer, result)
                closing = "reset by the prober (close_with_reset)" if tcp.close_with_reset else "closed by the prober"
                result.note(f"Connection {closing}")
    finally:
        if check is not None:
            check.before_close()
        reset_on_close(sock, tcp)
        if writer is not None:
            close_quietly(writer)
        else:
            sock.close()
    if check is not None:
        if not result.success:
            await tcp_mtu.after_stall(check, tcp, target.host, result, until)
        tcp_mtu.conclude(check, result)
    return result


# --- the tcp prober's own metric families (besides the common, TCP and TLS ones) --------------


def _details(result: ProbeResult) -> DialogueDetails | None:
    details = result.details
    return details if isinstance(details, DialogueDetails) else None


_DIALOGUE_STATES = [(state.value, f'state="{state.value}"') for state in DialogueState]


def _state(result: ProbeResult) -> Iterable[tuple[str, float]]:
    if _details(result) is None:
        return ()
    return [(text, 1 if value == result.state else 0) for value, text in _DIALOGUE_STATES]


def _step_durations(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = _details(result)
    if details is None:
        return ()
    return [(f'step="{index}"', seconds) for index, seconds in enumerate(details.step_seconds)]


def _expect_info(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = _details(result)
    if details is None:
        return ()
    return [
        (",".join(f'{name}="{escape_label_value(value)}"' for name, value in labels), 1)
        for labels in details.expect_labels
    ]


DIALOGUE_FAMILIES = (
    # blackbox_exporter's two flags, for modules with a dialogue or TLS (0 unless that cause failed it).
    # Not for a plain connect, where they can only be 0: +17% exposition text for 10,000 such targets.
    Family(
        "probe_failed_due_to_regex",
        "gauge",
        "Whether the probe failed because no received line matched an expect before the server closed "
        "the connection (1) or not (0).",
        detail_value(lambda r: int(d.failed_due_to_regex) if (d := _details(r)) else None),
    ),
    Family(
        "probe_failed_due_to_bytes",
        "gauge",
        "Whether the probe failed because the bytes received differ from expect_bytes (1) or not (0).",
        detail_value(lambda r: int(d.failed_due_to_bytes) if (d := _details(r)) else None),
    ),
    Family(
        "probe_expect_info",
        "gauge",
        "Labels of a query_response step, expanded from what its expect matched; always 1.",
        detail_lines(_expect_info),
    ),
    Family(
        "probe_dialogue_state",
        "gauge",
        "Outcome of a module's query_response dialogue or TLS: exactly one state is 1 (absent for a plain connect).",
        detail_lines(_state),
    ),
    Family(
        "probe_dialogue_failed_step",
        "gauge",
        "Index in query_response of the step at which the dialogue failed (absent when none failed).",
        detail_value(lambda r: d.failed_step if (d := _details(r)) else None),
    ),
    Family(
        "probe_dialogue_step_duration_seconds",
        "gauge",
        "Time of each query_response step that ran, by its index.",
        detail_lines(_step_durations),
    ),
)


# --- what people read, and the plugin -------------------------------------------------------

# Every state a tcp probe reports: the connect's, and (for a module with a dialogue or TLS) the dialogue's.
# Built from both enums so the lists cannot drift apart; mypy reads members only from a literal list,
# and no code names these members statically (the Prober takes the class as ``type[StrEnum]``).
TcpProberState = StrEnum(  # type: ignore[misc]  # members built at import, see above
    "TcpProberState", {state.name: state.value for enum in (TcpState, DialogueState) for state in enum}
)


def counted_states(module: Module, address: HostPort) -> tuple[str, ...]:
    """The states a probe of this module and address can end in: a plain connect ends in a TCP state
    (no DNS error for an IP literal, which is never looked up); a dialogue or TLS in a dialogue state,
    or ``error`` when the prober itself failed."""
    tcp = module.tcp
    if isinstance(tcp, TcpProberSettings) and (tcp.query_response or tcp.tls):
        return (*(state.value for state in DialogueState), TcpState.ERROR.value)
    return tuple(state.value for state in TcpState if not (state is TcpState.DNS_ERROR and address.ip is not None))


PROBER = Prober(
    name="tcp",
    probe=probe_tcp,
    start=start_tcp,
    states=TcpProberState,
    error_state=TcpState.ERROR,
    cut_state=TcpState.TIMEOUT,
    families=CONNECT_FAMILIES + DIALOGUE_FAMILIES + TLS_FAMILIES,
    tcp_section=TCP_PROBER_SECTION,
    columns=(DIALOGUE, CERTIFICATE),
    counted_states=counted_states,
)
