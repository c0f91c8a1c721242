"""The /probe reply's text (``render_single``, issue 25's trimmed path) is byte for byte what the generic
``render`` writes for that one result with every family of its prober, whichever of the guarded family groups
(every address, MTU check, dialogue or SMTP details) the result carries, with and without a vantage label."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest

from exporter.core.exposition import label_prefix, render
from exporter.core.vantage import VANTAGE_LABEL
from exporter.probers.connect.mtu import MtuReport, MtuState
from exporter.probers.connect.result import (
    AddressesReport,
    AddressesState,
    AddressOutcome,
    ProbeResult,
    TcpState,
)
from exporter.probers.smtp.result import SmtpDetails
from exporter.probers.table import PROBERS
from exporter.probers.tcp.dialogue import DialogueDetails
from exporter.service.exporter import render_single

DETAILS = {
    "tcp": lambda: DialogueDetails(steps=2, failed_step=1, step_seconds=[0.25]),
    "smtp": lambda: SmtpDetails(banner_seconds=0.5, stage_seconds={"ehlo": 0.125}),
}


def _result(state: TcpState, addresses: bool, mtu: bool, details: object | None) -> ProbeResult:
    result = ProbeResult(
        success=state is TcpState.OPEN,
        tcp_state=state,
        connect_seconds=0.001 if state is TcpState.OPEN else None,
        ip_protocol=4,
        address="127.0.0.1",
        duration_seconds=0.0025,
    )
    if addresses:
        result.addresses = AddressesReport(
            outcomes=[
                AddressOutcome("127.0.0.1", 4, TcpState.OPEN, 0.001),
                AddressOutcome("::1", 6, TcpState.REFUSED, 0.002, "refused"),
            ],
            resolved=3,
            state=AddressesState.SOME_FAILING,
            happy_eyeballs_seconds=0.001,
        )
    if mtu:
        result.mtu = MtuReport(state=MtuState.REDUCED, path_mtu=1400, reported_by='10.0.0."1')
    if details is not None:
        result.details = details  # type: ignore[assignment]
    return result


@pytest.mark.parametrize("prober", sorted(PROBERS))
def test_render_single_is_the_generic_render(prober: str) -> None:
    families = PROBERS[prober].families
    module = SimpleNamespace(prober=prober)
    make_details = DETAILS.get(prober)
    checked, seen = 0, set()
    for state, addresses, mtu, details, vantage in itertools.product(
        [TcpState.OPEN, TcpState.REFUSED, TcpState.TIMEOUT],
        [False, True],
        [False, True],
        [False, True] if make_details else [False],
        [None, 'east "1"'],
    ):
        result = _result(state, addresses, mtu, make_details() if details and make_details else None)
        prefix = label_prefix(((VANTAGE_LABEL, vantage),)) if vantage else ""
        expected = render([(prefix, result, PROBERS[prober].family_set)], families)
        assert render_single(result, module, vantage) == expected  # type: ignore[arg-type]
        checked += 1
        seen |= {name for name in ("probe_address_success", "probe_mtu_state", "probe_ssl_") if name in expected}
    assert checked >= 24
    assert {"probe_address_success", "probe_mtu_state"} <= seen  # the guarded groups were written too
