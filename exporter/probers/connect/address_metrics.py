"""The families of ``tcp.probe_addresses: all`` (docs/metrics.md, "Every address of a name").

Present only for results that carry ``result.addresses``; a result without it (every ``one`` module)
costs one attribute test per family in the exposition writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from exporter.core.exposition import Family, labelled, one_hot, single
from exporter.probers.connect.result import AddressesReport, AddressesState, AddressOutcome, ProbeResult, TcpState

# The per-address TCP states: probe_tcp_state's names, less dns_error (an address was resolved).
ADDRESS_TCP_STATES = [state.value for state in TcpState if state is not TcpState.DNS_ERROR]


def has_addresses(result: ProbeResult) -> bool:
    """Only results of tcp.probe_addresses: all carry these families (one test for every other result)."""
    return result.addresses is not None


def _report(
    read: Callable[[AddressesReport], Iterable[tuple[str, float]]],
) -> Callable[[ProbeResult], Iterable[tuple[str, float]]]:
    def pairs(result: ProbeResult) -> Iterable[tuple[str, float]]:
        report = result.addresses
        return () if report is None else read(report)

    return pairs


def _labels(outcome: AddressOutcome) -> str:
    # Addresses come from the resolver as IP text: nothing to escape.
    return f'address="{outcome.address}",ip_protocol="{outcome.ip_protocol}"'


def _success(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [(_labels(o), 1 if o.ok else 0) for o in report.counted]


def _tcp_state(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [
        (f'{_labels(o)},state="{state}"', 1 if o.state == state else 0)
        for o in report.counted
        for state in ADDRESS_TCP_STATES
    ]


def _connect_seconds(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [(_labels(o), o.connect_seconds) for o in report.counted if o.connect_seconds is not None]


def _state(result: ProbeResult) -> str | None:
    return None if result.addresses is None else result.addresses.state.value


def _happy_eyeballs(result: ProbeResult) -> float | None:
    return None if result.addresses is None else result.addresses.happy_eyeballs_seconds


def _not_probed(result: ProbeResult) -> float | None:
    return None if result.addresses is None else result.addresses.cut


def _no_route(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [(f'ip_protocol="{version}"', 1) for version in report.no_route_families]


ADDRESS_FAMILIES: tuple[Family[ProbeResult], ...] = (
    Family(
        "probe_address_success",
        "gauge",
        "With tcp.probe_addresses: all, whether the TCP connect to this address of the name succeeded (1) or "
        "not (0); one series per probed address (at most tcp.probe_addresses_max).",
        labelled(_report(_success), only_if=has_addresses),
    ),
    Family(
        "probe_address_tcp_state",
        "gauge",
        "With tcp.probe_addresses: all, the outcome of the TCP connect to this address: exactly one of open, "
        "refused, timeout, unreachable, error is 1 per address.",
        labelled(_report(_tcp_state), only_if=has_addresses),
    ),
    Family(
        "probe_address_connect_duration_seconds",
        "gauge",
        "With tcp.probe_addresses: all, the time until the connect to this address had an outcome.",
        labelled(_report(_connect_seconds), only_if=has_addresses),
    ),
    Family(
        "probe_addresses_state",
        "gauge",
        "With tcp.probe_addresses: all, the verdict over every address of the name: exactly one of all_ok, "
        "some_failing, ipv4_failing, ipv6_failing, all_failing, dns_error is 1.",
        one_hot("state", [state.value for state in AddressesState], _state, only_if=has_addresses),
    ),
    Family(
        "probe_happy_eyeballs_seconds",
        "gauge",
        "With tcp.probe_addresses: all, how long an RFC 8305 (Happy Eyeballs) client would wait from its first "
        "connection attempt until connected (IPv6 first, the next address after 250 ms); absent when no "
        "address connects.",
        single(_happy_eyeballs, only_if=has_addresses),
    ),
    Family(
        "probe_addresses_not_probed",
        "gauge",
        "With tcp.probe_addresses: all, how many addresses of the name were left out by tcp.probe_addresses_max.",
        single(_not_probed, only_if=has_addresses),
    ),
    Family(
        "probe_addresses_no_route",
        "gauge",
        "With tcp.probe_addresses: all, 1 for an IP version this exporter has no route for at all: that "
        "version's addresses are not probed series nor counted.",
        labelled(_report(_no_route), only_if=has_addresses),
    ),
)
ADDRESS_FAMILY_SET = frozenset(ADDRESS_FAMILIES)
