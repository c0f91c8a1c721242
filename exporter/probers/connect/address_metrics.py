"""The families of ``tcp.probe_addresses: all`` (docs/metrics.md, "Every address of a name").

Present only for results that carry ``result.addresses``; a result without it (every ``one`` module)
costs one attribute test per family in the exposition writer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from exporter.core.exposition import Family, format_value
from exporter.probers.connect.result import AddressesReport, AddressesState, AddressOutcome, ProbeResult, TcpState

Lines = Callable[[AddressesReport], Iterable[tuple[str, float]]]

# The per-address TCP states: probe_tcp_state's names, less dns_error (an address was resolved).
ADDRESS_TCP_STATES = [state.value for state in TcpState if state is not TcpState.DNS_ERROR]


class AddressLines:
    """Samples read from ``result.addresses``, with a fast writer for ``exposition.render``."""

    __slots__ = ("lines",)

    def __init__(self, lines: Lines):
        self.lines = lines

    def __call__(self, result: ProbeResult) -> Iterable[tuple[str, float]]:
        report = result.addresses
        return () if report is None else self.lines(report)

    def writer(self, name: str) -> Callable[[str, ProbeResult], str]:
        lines = self.lines

        def write(prefix: str, result: ProbeResult) -> str:
            report = result.addresses
            if report is None:
                return ""
            out = []
            for extra, value in lines(report):
                labels = f"{prefix},{extra}" if prefix and extra else prefix or extra
                out.append(
                    f"{name}{{{labels}}} {format_value(value)}\n" if labels else f"{name} {format_value(value)}\n"
                )
            return "".join(out)

        return write


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


def _state(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [(f'state="{state.value}"', 1 if report.state is state else 0) for state in AddressesState]


def _happy_eyeballs(report: AddressesReport) -> Iterable[tuple[str, float]]:
    seconds = report.happy_eyeballs_seconds
    return () if seconds is None else (("", seconds),)


def _count(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [
        (f'ip_protocol="{version}"', sum(1 for o in report.counted if o.ip_protocol == version)) for version in (4, 6)
    ]


def _not_probed(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return (("", report.cut),)


def _no_route(report: AddressesReport) -> Iterable[tuple[str, float]]:
    return [(f'ip_protocol="{version}"', 1) for version in report.no_route_families]


ADDRESS_FAMILIES = (
    Family(
        "probe_address_success",
        "gauge",
        "With tcp.probe_addresses: all, whether the TCP connect to this address of the name succeeded (1) or "
        "not (0); one series per probed address (at most tcp.probe_addresses_max).",
        AddressLines(_success),
    ),
    Family(
        "probe_address_tcp_state",
        "gauge",
        "With tcp.probe_addresses: all, the outcome of the TCP connect to this address: exactly one of open, "
        "refused, timeout, unreachable, error is 1 per address.",
        AddressLines(_tcp_state),
    ),
    Family(
        "probe_address_connect_duration_seconds",
        "gauge",
        "With tcp.probe_addresses: all, the time until the connect to this address had an outcome.",
        AddressLines(_connect_seconds),
    ),
    Family(
        "probe_addresses_state",
        "gauge",
        "With tcp.probe_addresses: all, the verdict over every address of the name: exactly one of all_ok, "
        "some_failing, ipv4_failing, ipv6_failing, all_failing, dns_error is 1.",
        AddressLines(_state),
    ),
    Family(
        "probe_happy_eyeballs_seconds",
        "gauge",
        "With tcp.probe_addresses: all, how long an RFC 8305 (Happy Eyeballs) client would wait from its first "
        "connection attempt until connected (IPv6 first, the next address after 250 ms); absent when no "
        "address connects.",
        AddressLines(_happy_eyeballs),
    ),
    Family(
        "probe_addresses",
        "gauge",
        "With tcp.probe_addresses: all, how many addresses of each IP version were probed and counted.",
        AddressLines(_count),
    ),
    Family(
        "probe_addresses_not_probed",
        "gauge",
        "With tcp.probe_addresses: all, how many addresses of the name were left out by tcp.probe_addresses_max.",
        AddressLines(_not_probed),
    ),
    Family(
        "probe_addresses_no_route",
        "gauge",
        "With tcp.probe_addresses: all, 1 for an IP version this exporter has no route for at all: that "
        "version's addresses are not probed series nor counted.",
        AddressLines(_no_route),
    ),
)
