"""The ``tcp`` prober: can a TCP connection be opened, and if not, why not."""

from __future__ import annotations

from exporter.address import HostPort
from exporter.model import Module
from exporter.probers.base import Prober
from exporter.probers.connect import connect_target
from exporter.probers.connect_metrics import CONNECT_FAMILIES
from exporter.probers.resolve import Resolver
from exporter.probers.result import ProbeResult, TcpState
from exporter.probers.tcp_config import TCP_SECTION


async def probe_tcp(target: HostPort, module: Module, deadline: float, resolver: Resolver) -> ProbeResult:
    result = ProbeResult()
    sock = await connect_target(result, target, module, deadline, resolver)
    if sock is not None:
        sock.close()
        result.note("Connection closed by the prober")
    result.success = result.tcp_state is TcpState.OPEN
    return result


PROBER = Prober(
    name="tcp",
    probe=probe_tcp,
    states=TcpState,
    error_state=TcpState.ERROR,
    cut_state=TcpState.TIMEOUT,
    families=CONNECT_FAMILIES,
    tcp_section=TCP_SECTION,
)
