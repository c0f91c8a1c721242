"""The small surface the rest of the exporter calls: whether a probe result deserves a diagnosis,
and running one for it inline (``/probe``, ``check``)."""

from __future__ import annotations

import asyncio
import logging

from exporter.pathdiag.model import PathDiagnosis
from exporter.pathdiag.trace import DEFAULT_SETTINGS, DiagnosisSettings, diagnose
from exporter.probers.connect.result import ProbeResult, TcpState

log = logging.getLogger("exporter.pathdiag")

# Below this many seconds left, an inline diagnosis would only report that it ran out of time.
MIN_INLINE_SECONDS = 1.0
# Outcomes with no path to diagnose: nothing was resolved, or nothing could be sent.
_NOTHING_TO_TRACE = frozenset({TcpState.DNS_ERROR, TcpState.ERROR})


# With tcp.probe_addresses: all, an inline diagnosis (check, /probe) traces at most this many failing addresses at
# once (the first in RFC 8305 order, so both families when both fail); the rest are said to be left out.
MAX_INLINE_ADDRESSES = 4


def failing_addresses(result: ProbeResult) -> list[str]:
    """With ``tcp.probe_addresses: all``: the addresses whose connect failed with a path to trace, in RFC 8305
    order (the diagnosis is for the failing addresses, not for the name)."""
    report = result.addresses
    if report is None:
        return []
    return [o.address for o in report.counted if not o.ok and o.state not in _NOTHING_TO_TRACE]


def failing_address(result: ProbeResult) -> str | None:
    """The first of ``failing_addresses``: the one a scrape's background diagnosis traces (one path per target:
    the path series have no address label)."""
    return next(iter(failing_addresses(result)), None)


def diagnosis_address(result: ProbeResult) -> str | None:
    """The address a diagnosis of ``result`` traces: a failing one first, else the one connected to."""
    return failing_address(result) or result.address


def diagnosable(result: ProbeResult) -> bool:
    """The connect reached no decision a person can act on without knowing the path."""
    if failing_address(result) is not None:
        return True
    return result.address is not None and result.tcp_state not in _NOTHING_TO_TRACE


def wants_diagnosis(result: ProbeResult, diagnose_setting: str) -> bool:
    """A module with ``tcp.diagnose: on_failure`` and a TCP failure that has a path to trace."""
    if diagnose_setting != "on_failure":
        return False
    if failing_address(result) is not None:
        return True
    return diagnosable(result) and result.tcp_state is not TcpState.OPEN


async def diagnose_inline(
    result: ProbeResult,
    port: int,
    deadline: float,
    *,
    source: str | None = None,
    settings: DiagnosisSettings = DEFAULT_SETTINGS,
) -> PathDiagnosis | None:
    """Diagnose the path of ``result`` (its resolved address) before ``deadline`` (loop time); attach
    it to the result. None when there is no time left or no address."""
    loop = asyncio.get_running_loop()
    address = diagnosis_address(result)
    if address is None or deadline - loop.time() < MIN_INLINE_SECONDS:
        if address is not None:
            result.note("No path diagnosis: too little time left before the deadline")
        return None
    failing = failing_addresses(result)
    if len(failing) > 1:
        return await _diagnose_each(result, failing, port, deadline, source, settings)
    try:
        diagnosis = await diagnose(address, port, deadline=deadline, settings=settings, source=source)
    except Exception:  # a bug here must not take the probe's answer down
        log.exception("path diagnosis of %s port %d failed", address, port)
        return None
    result.path = diagnosis  # shown with its hop table by check, /probe?debug=true and the status page
    if result.addresses is not None:  # tcp.probe_addresses: all: the failing address's own entry too
        for outcome in result.addresses.outcomes:
            if outcome.address == address and not outcome.ok:
                outcome.path = diagnosis
    return diagnosis


async def _diagnose_each(
    result: ProbeResult, failing: list[str], port: int, deadline: float, source: str | None, settings: DiagnosisSettings
) -> PathDiagnosis | None:
    """``tcp.probe_addresses: all`` with several failing addresses: each traced at once (at most
    MAX_INLINE_ADDRESSES), its diagnosis on its address's outcome; ``result.path`` is the first one's."""
    traced = failing[:MAX_INLINE_ADDRESSES]
    if len(failing) > len(traced):
        result.note(f"Path diagnosis of the first {len(traced)} of {len(failing)} failing addresses")
    found = await asyncio.gather(
        *(diagnose(address, port, deadline=deadline, settings=settings, source=source) for address in traced),
        return_exceptions=True,
    )
    by_address: dict[str, PathDiagnosis] = {}
    for address, diagnosis in zip(traced, found, strict=True):
        if isinstance(diagnosis, PathDiagnosis):
            by_address[address] = diagnosis
        elif isinstance(diagnosis, Exception):  # a bug here must not take the probe's answer down
            log.error("path diagnosis of %s port %d failed", address, port, exc_info=diagnosis)
        elif isinstance(diagnosis, BaseException):
            raise diagnosis  # cancelled: as the single diagnosis would be
    assert result.addresses is not None  # failing addresses come from it
    for outcome in result.addresses.outcomes:
        outcome.path = by_address.get(outcome.address, outcome.path)
    first = next((by_address[address] for address in traced if address in by_address), None)
    if first is not None:
        result.path = first
    return first
