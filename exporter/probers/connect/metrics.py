"""The families every prober's results carry: blackbox_exporter's common ones and the connect step's."""

from __future__ import annotations

from collections.abc import Iterable

from exporter.core.exposition import Family, labelled, one_hot, single
from exporter.probers.connect.address_metrics import ADDRESS_FAMILIES
from exporter.probers.connect.mtu_report import MTU_FAMILIES
from exporter.probers.connect.result import ProbeResult, TcpState

# Owned by the handler, with blackbox_exporter's names and meaning.
COMMON_FAMILIES: tuple[Family[ProbeResult], ...] = (
    Family(
        "probe_success", "gauge", "Whether the probe succeeded (1) or not (0).", single(lambda r: 1 if r.success else 0)
    ),
    Family(
        "probe_duration_seconds",
        "gauge",
        "How long the whole probe took, in seconds.",
        single(lambda r: r.duration_seconds),
    ),
    Family(
        "probe_dns_lookup_time_seconds",
        "gauge",
        "How long the DNS lookup took, in seconds (0 for IP literals).",
        single(lambda r: r.dns_lookup_seconds),
    ),
    Family(
        "probe_ip_protocol",
        "gauge",
        "IP protocol version of the address probed: 4 or 6, 0 if unresolved.",
        single(lambda r: r.ip_protocol),
    ),
)

TCP_FAMILIES: tuple[Family[ProbeResult], ...] = (
    Family(
        "probe_tcp_connect_duration_seconds",
        "gauge",
        "Time until the TCP connect attempt had an outcome (connected, refused, unreachable or timed out).",
        single(lambda r: r.connect_seconds),
    ),
    Family(
        "probe_tcp_state",
        "gauge",
        "Outcome of the TCP connect: exactly one of open, refused, timeout, unreachable, dns_error, error is 1.",
        one_hot("state", [state.value for state in TcpState], lambda r: r.tcp_state.value),
    ),
)


def _rejected_by(result: ProbeResult) -> Iterable[tuple[str, float]]:
    icmp = result.icmp
    if icmp is None or result.address is None:
        return ()
    by_host = icmp.sent_by_host(result.address)
    return (('by="host"', 1 if by_host else 0), ('by="network"', 0 if by_host else 1))


TCP_REJECTED_BY = Family(
    "probe_tcp_rejected_by",
    "gauge",
    'For a connect ended by an ICMP error: 1 on by="host" when the target itself sent it, on by="network" '
    "when another address did (a router or network firewall).",
    labelled(_rejected_by),
)


# probe_tcp_rejected_by: who sent the ICMP error that ended a connect.
# The ADDRESS_FAMILIES only for modules with tcp.probe_addresses: all.
CONNECT_FAMILIES = COMMON_FAMILIES + TCP_FAMILIES + (TCP_REJECTED_BY,) + ADDRESS_FAMILIES + MTU_FAMILIES
