"""Mail TLS policies of a mail domain (``smtp.mta_sts``, ``smtp.dane``): will senders that enforce
MTA-STS (RFC 8461) or DANE (RFC 7672) deliver to its MX hosts? TLS-RPT (RFC 8460) rides along.

The mail-domain probe (``domain``) drives it: ``discover`` (the TXT records and the policy fetch)
runs while the MX hosts are probed; ``check_host`` (the host's STARTTLS certificate and its TLSA
records) runs beside each host's SMTP test, within that host's share of the deadline; ``evaluate``
then judges every MX host against the policy. ``refusals`` names the hosts that senders enforcing
MTA-STS refuse, which the domain verdict counts as not accepting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import dns.exception

from exporter.core.deadline import Deadline
from exporter.core.exposition import Family, escape_label_value, labelled
from exporter.probers.smtp import dane
from exporter.probers.smtp.dane import DaneCheck, DaneState
from exporter.probers.smtp.mta_sts import (
    MtaStsResult,
    MtaStsState,
    MxPolicyCheck,
    MxPolicyState,
    check_mx,
    classify,
    parse_policy,
    parse_txt,
    state_words,
)
from exporter.probers.smtp.mx_certificate import MxTls, check_mx_tls, system_context, verifies_with_anchor
from exporter.probers.smtp.mx_series import per_host, per_host_one_hot
from exporter.probers.smtp.policy_dns import Lookup, TlsaAnswer, dnssec_resolver, lookup_tlsa, lookup_txt
from exporter.probers.smtp.policy_fetch import fetch_policy
from exporter.probers.smtp.tls_rpt import TlsRpt, parse_tls_rpt

MAX_ANCHORS = 2  # DANE-TA candidates verified by a handshake each


@dataclass(slots=True)
class HostTls:
    host: str
    preference: int
    tls: MxTls | None = None
    dane: DaneCheck | None = None


@dataclass(slots=True)
class MailTls:
    domain: str
    mta_sts_enabled: bool
    dane_enabled: bool
    mta_sts: MtaStsResult | None = None
    tls_rpt: TlsRpt | None = None
    hosts: dict[str, HostTls] = field(default_factory=dict)
    verdict: str = ""  # the MTA-STS sentence

    @classmethod
    def of(cls, domain: str, mta_sts: bool, dane: bool) -> MailTls | None:
        return cls(domain, mta_sts, dane) if mta_sts or dane else None

    @property
    def dane_checks(self) -> list[DaneCheck]:
        return [host.dane for host in self.hosts.values() if host.dane is not None]

    def refusals(self) -> dict[str, str]:
        """MX host -> why senders enforcing MTA-STS refuse it (empty unless mode is enforce)."""
        result = self.mta_sts
        if result is None or result.policy is None or result.policy.mode != "enforce":
            return {}
        return {check.host: check.reason for check in result.mx if check.failing}

    def contract(self) -> dict[str, Any]:
        """The keys this adds to ``check --json``'s ``mail_domain`` (a contract)."""
        summary = dane.summary(self.dane_checks)
        return {
            "mta_sts": None if self.mta_sts is None else {**self.mta_sts.contract(), "verdict": self.verdict},
            "tls_rpt": None if self.tls_rpt is None else self.tls_rpt.contract(),
            "dane": None
            if not self.dane_enabled
            else {
                "state": str(summary) if summary else None,
                "mx": [{"host": c.host, "state": str(c.state), "reason": c.reason} for c in self.dane_checks],
            },
        }


class PolicyHost(Protocol):
    """An MX host of the mail-domain probe, as far as the policy verdict reads and writes it."""

    host: str
    preference: int
    state: str
    success: bool
    refused_by: str | None


def start_discovery(details: MailTls | None, deadline: Deadline) -> asyncio.Task[None] | None:
    if details is None:
        return None
    # A tenth of the time is kept back: a policy host that dribbles bytes until its deadline must
    # leave time for the verdict, or the whole probe would be cut at the deadline.
    loop = asyncio.get_running_loop()
    return asyncio.create_task(discover(details, loop.time() + (deadline - loop.time()) * 0.9))


def start_host_check(
    details: MailTls | None,
    host: str,
    preference: int,
    addresses: list[str],
    port: int,
    ehlo: str,
    deadline: Deadline,
) -> asyncio.Task[None] | None:
    """The host's TLS policy checks (an own STARTTLS session, the TLSA lookup), run beside its SMTP test."""
    if details is None:
        return None
    return asyncio.create_task(check_host(details, host, preference, addresses, port, ehlo, deadline))


async def apply_policy(
    details: MailTls | None,
    discovery: asyncio.Task[None] | None,
    probed: Iterable[PolicyHost],
    note: Callable[[str], None],
) -> None:
    """Judge the hosts probed (within mx_max_hosts: that bounds the per-host series); mark the refused ones."""
    if details is None or discovery is None:
        return
    await discovery  # bounded by its deadline like everything in it
    hosts = list(probed)
    evaluate(details, [(host.host, host.preference) for host in hosts])
    refusals = details.refusals()
    for host in hosts:
        host.refused_by = refusals.get(host.host)
    # One line in the transcript, where it happened; the full account follows the MX table (report_lines).
    if details.mta_sts is not None:
        note(f"MTA-STS policy judged: {details.mta_sts.state}")


def fails(host: PolicyHost) -> str:
    """How a host that senders do not use fails, for the mail-domain verdict."""
    if host.success and host.refused_by is not None:
        return f"is refused by senders that enforce MTA-STS ({host.refused_by})"
    return f"fails with {host.state}"


def _all_refused(hosts: Sequence[PolicyHost]) -> bool:
    return bool(hosts) and all(host.success and host.refused_by is not None for host in hosts)


def refused_words(tried: Sequence[PolicyHost]) -> str | None:
    """The domain's state in a few words when the hosts tried take mail but an enforced policy refuses them all."""
    if not _all_refused(tried):
        return None
    return "every MX host tried takes mail, but senders that enforce MTA-STS refuse them all"


def enforced_outage(domain: str, hosts: Sequence[PolicyHost]) -> str | None:
    """The verdict when every host tried takes mail but an enforced MTA-STS policy refuses them all."""
    if not _all_refused(hosts):
        return None
    reasons = "; ".join(f"{host.host}: {host.refused_by}" for host in hosts)
    return (
        f"senders that enforce MTA-STS cannot deliver to {domain}, a delivery outage for them (they defer the "
        f"mail and retry; senders that do not apply MTA-STS still deliver): {reasons}"
    )


# --- discovery: TXT records and the policy ---------------------------------------------------


async def discover(details: MailTls, deadline: float) -> None:
    """Fill ``mta_sts`` (up to the parsed policy) and ``tls_rpt``; never raises for the network."""
    try:
        resolver = dnssec_resolver()
    except dns.exception.DNSException as exc:
        details.tls_rpt = TlsRpt(False, reason=f"no DNS resolver: {exc}")
        if details.mta_sts_enabled:
            details.mta_sts = MtaStsResult(MtaStsState.POLICY_UNAVAILABLE, reason=f"no DNS resolver: {exc}")
        return
    sts_txt, rpt_txt = await asyncio.gather(
        lookup_txt(resolver, f"_mta-sts.{details.domain}", deadline),
        lookup_txt(resolver, f"_smtp._tls.{details.domain}", deadline),
    )
    if rpt_txt.outcome is Lookup.ERROR:
        details.tls_rpt = TlsRpt(False, reason=rpt_txt.reason)
    else:
        details.tls_rpt = parse_tls_rpt(rpt_txt.records)
    if not details.mta_sts_enabled:
        return
    if sts_txt.outcome is Lookup.ERROR:
        details.mta_sts = MtaStsResult(MtaStsState.POLICY_UNAVAILABLE, reason=sts_txt.reason)
        return
    policy_id, why = parse_txt(sts_txt.records)
    if policy_id is None:
        details.mta_sts = MtaStsResult(MtaStsState.ABSENT, reason=why)
        return
    fetched = await fetch_policy(details.domain, deadline, system_context())
    if fetched.text is None:
        state = MtaStsState.POLICY_INVALID if fetched.invalid else MtaStsState.POLICY_UNAVAILABLE
        details.mta_sts = MtaStsResult(state, policy_id, reason=fetched.reason)
        return
    policy = parse_policy(fetched.text)
    if isinstance(policy, str):
        details.mta_sts = MtaStsResult(MtaStsState.POLICY_INVALID, policy_id, reason=policy)
        return
    details.mta_sts = MtaStsResult(MtaStsState.NONE, policy_id, policy)


# --- per MX host -------------------------------------------------------------------------------


async def check_host(
    details: MailTls, host: str, preference: int, addresses: list[str], port: int, ehlo: str, deadline: float
) -> None:
    """The host's STARTTLS certificate (and TLSA records with dane), within ``deadline``."""
    entry = details.hosts.setdefault(host, HostTls(host, preference))
    tlsa_task = asyncio.create_task(_tlsa(host, port, deadline)) if details.dane_enabled else None
    entry.tls = await check_mx_tls(host, addresses, port, ehlo, deadline)
    if tlsa_task is None:
        return
    answer = await tlsa_task
    entry.dane = dane.from_answer(host, preference, answer) or await _match(
        host, preference, answer, entry.tls, port, ehlo, deadline
    )


async def _tlsa(host: str, port: int, deadline: float) -> TlsaAnswer:
    try:
        resolver = dnssec_resolver()
    except dns.exception.DNSException as exc:
        return TlsaAnswer(Lookup.ERROR, reason=f"no DNS resolver: {exc}")
    return await lookup_tlsa(resolver, f"_{port}._tcp.{host}", deadline)


async def _match(
    host: str, preference: int, answer: TlsaAnswer, tls: MxTls, port: int, ehlo: str, deadline: float
) -> DaneCheck:
    count = len(answer.records)
    if not tls.chain or tls.address is None:
        return DaneCheck(
            host,
            preference,
            DaneState.UNCHECKED,
            f"{host} has validated TLSA records, but no certificate to match them: {tls.reason or 'no TLS session'}",
            count,
        )
    usable = [record for record in answer.records if dane.usable(record)]
    if dane.match_ee(usable, tls.chain):
        return DaneCheck(
            host, preference, DaneState.VALID, f"a DANE-EE TLSA record of {host} matches its certificate", count
        )
    for anchor in dane.ta_candidates(usable, tls.chain)[:MAX_ANCHORS]:
        if await verifies_with_anchor(host, tls.address, port, ehlo, anchor, deadline):
            return DaneCheck(
                host,
                preference,
                DaneState.VALID,
                f"a DANE-TA TLSA record of {host} matches a CA certificate its chain verifies up to",
                count,
            )
    return DaneCheck(
        host,
        preference,
        DaneState.MISMATCH,
        f"none of {host}'s {count} validated TLSA record(s) matches the certificate chain it presents: DANE senders "
        "do not deliver to it (update the TLSA records before or with the certificate)",
        count,
    )


# --- the verdict -------------------------------------------------------------------------------


def evaluate(details: MailTls, mx: Iterable[tuple[str, int]]) -> None:
    """Judge every MX host (in the order given) against the policy; the state and its sentence."""
    result = details.mta_sts
    if result is None:
        return
    if result.policy is not None and result.policy.mode != "none":
        result.mx = [
            check_mx(result.policy, host, preference, entry.tls if (entry := details.hosts.get(host)) else None)
            for host, preference in mx
        ]
    classify(result)
    details.verdict = state_words(details.domain, result)


# --- metric families ---------------------------------------------------------------------------

R = TypeVar("R")
Read = Callable[[R], Iterable[tuple[str, float]]]


def families(get: Callable[[R], MailTls | None]) -> tuple[Family[R], ...]:
    def policy_checks(result: R) -> list[MxPolicyCheck] | None:
        tls = get(result)
        return tls.mta_sts.mx if tls is not None and tls.mta_sts is not None else None

    def dane_checks(result: R) -> list[DaneCheck] | None:
        tls = get(result)
        return tls.dane_checks if tls is not None else None

    def sts_state(result: R) -> Iterable[tuple[str, float]]:
        tls = get(result)
        if tls is None or tls.mta_sts is None:
            return ()
        return [(f'state="{s.value}"', 1 if s is tls.mta_sts.state else 0) for s in MtaStsState]

    def max_age(result: R) -> Iterable[tuple[str, float]]:
        tls = get(result)
        policy = tls.mta_sts.policy if tls is not None and tls.mta_sts is not None else None
        return () if policy is None else (("", policy.max_age),)

    def policy_info(result: R) -> Iterable[tuple[str, float]]:
        tls = get(result)
        sts = tls.mta_sts if tls is not None else None
        if sts is None or sts.id is None:
            return ()
        mode = sts.policy.mode if sts.policy is not None else ""
        return ((f'id="{escape_label_value(sts.id)}",mode="{mode}"', 1),)

    def rpt(result: R) -> Iterable[tuple[str, float]]:
        tls = get(result)
        return () if tls is None or tls.tls_rpt is None else (("", int(tls.tls_rpt.present)),)

    def dane_state(result: R) -> Iterable[tuple[str, float]]:
        tls = get(result)
        if tls is None or not tls.dane_enabled:
            return ()
        now = dane.summary(tls.dane_checks)
        return [] if now is None else [(f'state="{s.value}"', 1 if s is now else 0) for s in DaneState]

    return (
        Family(
            "probe_mta_sts_state",
            "gauge",
            "MTA-STS (RFC 8461) of the mail domain (smtp.mta_sts): exactly one of absent, none, testing_ok, "
            "testing_failing, enforce_ok, enforce_failing, policy_unavailable, policy_invalid is 1.",
            labelled(sts_state),
        ),
        Family(
            "probe_mta_sts_mx_failing",
            "gauge",
            "1 when this MX host fails the domain's MTA-STS policy (not listed, no STARTTLS, certificate "
            "not valid for its name); in enforce mode enforcing senders refuse it.",
            per_host(policy_checks, lambda check: int(check.failing)),
        ),
        Family(
            "probe_mta_sts_mx_state",
            "gauge",
            "This MX host against the MTA-STS policy: exactly one state is 1 per host.",
            per_host_one_hot(policy_checks, [state.value for state in MxPolicyState], lambda c: str(c.state)),
        ),
        Family("probe_mta_sts_max_age_seconds", "gauge", "The MTA-STS policy's max_age.", labelled(max_age)),
        Family(
            "probe_mta_sts_policy_info",
            "gauge",
            "The MTA-STS policy id (from the _mta-sts TXT record) and mode; always 1.",
            labelled(policy_info),
        ),
        Family(
            "probe_tls_rpt_present",
            "gauge",
            "1 when the domain publishes exactly one valid TLS-RPT record (_smtp._tls, RFC 8460).",
            labelled(rpt),
        ),
        Family(
            "probe_dane_state",
            "gauge",
            "DANE (RFC 7672) summary over the MX hosts (smtp.dane), the worst host's state: exactly one is 1.",
            labelled(dane_state),
        ),
        Family(
            "probe_dane_mx_state",
            "gauge",
            "DANE state of this MX host: valid, mismatch, unsigned, absent, bogus, unusable, dns_error or "
            "unchecked; exactly one is 1 per host.",
            per_host_one_hot(dane_checks, [state.value for state in DaneState], lambda c: str(c.state)),
        ),
    )


# --- text for people ---------------------------------------------------------------------------


def render_text(tls: MailTls | None) -> list[str]:
    if tls is None:
        return []
    lines: list[str] = []
    sts = tls.mta_sts
    if sts is not None:
        lines.append(f"MTA-STS: {sts.state}: {tls.verdict}")
        for check in sts.mx:
            if check.state is not MxPolicyState.OK:
                lines.append(f"  {check.host}: {check.state}: {check.reason}")
    rpt = tls.tls_rpt
    if rpt is not None:
        lines.append(
            f"TLS-RPT: reports go to {', '.join(rpt.rua)}" if rpt.present else f"TLS-RPT: not published ({rpt.reason})"
        )
    if tls.dane_enabled:
        summary = dane.summary(tls.dane_checks)
        lines.append(f"DANE: {summary or 'no MX host checked'}")
        for host in tls.dane_checks:
            lines.append(f"  {host.host}: {host.state}: {host.reason}")
    return lines
