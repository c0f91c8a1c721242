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


def failing_address(result: ProbeResult) -> str | None:
    """With ``tcp.probe_addresses: all``: the first address whose connect failed with a path to trace
    (the diagnosis is for a failing address, not for the name)."""
    report = result.addresses
    if report is None:
        return None
    return next((o.address for o in report.counted if not o.ok and o.state not in _NOTHING_TO_TRACE), None)


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
    try:
        diagnosis = await diagnose(address, port, deadline=deadline, settings=settings, source=source)
    except Exception:  # a bug here must not take the probe's answer down
        log.exception("path diagnosis of %s port %d failed", address, port)
        return None
    result.path = diagnosis  # shown with its hop table by check, /probe?debug=true and the status page
    return diagnosis
