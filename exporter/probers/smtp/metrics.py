"""The SMTP prober's own metric families (written by ``exporter.exposition``); its TLS families are the
ones shared with the tcp prober (``exporter.probers.tls``).

Label values come from fixed lists (states, stages, well-known extensions, TLS versions) or
from a validated ``d.d.d`` enhanced status code, never from free server text, so a server
cannot create series at will or break the exposition.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable

from exporter.core.exposition import Family, Samples, current_only, labelled, single
from exporter.probers.connect.result import ProbeResult
from exporter.probers.smtp.result import (
    AUTH_MECHANISMS,
    CAPABILITIES,
    REPLY_STAGES,
    TIMED_STAGES,
    SmtpDetails,
)


def _details(result: ProbeResult) -> SmtpDetails | None:
    details = result.details
    return details if isinstance(details, SmtpDetails) else None


def _per_stage(stages: tuple[str, ...], value: Callable[[SmtpDetails, str], float | None]) -> Samples[ProbeResult]:
    rendered = [(stage, f'stage="{stage}"') for stage in stages]

    def samples(result: ProbeResult) -> Iterable[tuple[str, float]]:
        details = _details(result)
        if details is None:
            return ()
        out: list[tuple[str, float]] = []
        for stage, text in rendered:
            got = value(details, stage)
            if got is not None:
                out.append((text, got))
        return out

    return labelled(samples)


def _enhanced(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = _details(result)
    if details is None:
        return ()
    return [
        (f'stage="{stage}",code="{reply.enhanced}"', 1)
        for stage in REPLY_STAGES
        if (reply := details.replies.get(stage)) is not None and reply.enhanced
    ]


def _flags(
    label: str,
    names: tuple[str, ...],
    present: Callable[[SmtpDetails], Collection[str] | None],
    always: tuple[str, ...] = (),
) -> Samples[ProbeResult]:
    """A series at 1 for each well-known name present; the names in ``always`` (the ones alerts test,
    e.g. STARTTLS) are written at 0 too, every other absent name is left out (absent means absent)."""
    rendered = [(name, f'{label}="{name}"', name in always) for name in names]

    def samples(result: ProbeResult) -> Iterable[tuple[str, float]]:
        details = _details(result)
        have = present(details) if details is not None else None
        if have is None:
            return ()
        return [(text, 1 if name in have else 0) for name, text, kept in rendered if kept or name in have]

    return labelled(samples)


SMTP_FAMILIES: tuple[Family[ProbeResult], ...] = (
    Family(
        "probe_smtp_state",
        "gauge",
        "Outcome of the SMTP dialogue: the one series, at 1, names the state.",
        # 18 states and more to come: not a one-hot family (docs/metrics.md, "What a target costs").
        current_only("state", lambda r: str(r.state)),
    ),
    Family(
        "probe_smtp_banner_duration_seconds",
        "gauge",
        "Time from the open connection (after the TLS handshake with implicit TLS) to the complete greeting.",
        single(lambda r: d.banner_seconds if (d := _details(r)) else None),
    ),
    Family(
        "probe_smtp_stage_duration_seconds",
        "gauge",
        "Time of each dialogue stage reached, from sending the command to its complete reply.",
        _per_stage(TIMED_STAGES, lambda d, stage: d.stage_seconds.get(stage)),
    ),
    Family(
        "probe_smtp_reply_code",
        "gauge",
        "The last reply code of each stage reached.",
        _per_stage(REPLY_STAGES, lambda d, stage: r.code if (r := d.replies.get(stage)) else None),
    ),
    Family(
        "probe_smtp_enhanced_status_code_info",
        "gauge",
        "The RFC 3463 enhanced status code of a stage's last reply, when the server gave one; always 1.",
        labelled(_enhanced),
    ),
    Family(
        "probe_smtp_capability",
        "gauge",
        "A well-known EHLO extension the server advertised (1); STARTTLS is always written, 0 when not "
        "advertised (as seen before TLS); any other extension not advertised is absent.",
        _flags("capability", CAPABILITIES, lambda d: d.capabilities, always=("STARTTLS",)),
    ),
    Family(
        "probe_smtp_auth_mechanism",
        "gauge",
        "A well-known AUTH mechanism the server offered in its last EHLO reply (1); absent when not offered.",
        _flags("mechanism", AUTH_MECHANISMS, lambda d: d.auth_mechanisms if d.capabilities is not None else None),
    ),
    Family(
        "probe_smtp_size_limit_bytes",
        "gauge",
        "The message size limit the server advertised with SIZE, in bytes (0: the server states no fixed limit).",
        single(lambda r: d.size_limit if (d := _details(r)) else None),
    ),
    Family(
        "probe_smtp_tls",
        "gauge",
        "Whether the dialogue ran over TLS (1: implicit TLS or STARTTLS succeeded), 0 otherwise.",
        single(lambda r: int(d.encrypted) if (d := _details(r)) and d.replies else None),
    ),
)
