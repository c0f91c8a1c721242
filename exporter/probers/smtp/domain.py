"""Mail domains (``smtp.mx: true``): find the domain's MX hosts and run the SMTP test on each.

The target is a mail domain (``example.com``; its port is used for every MX host). The MX
hosts are found as a sending MTA finds them (``exporter.probers.mx``) and probed one after
the other in that order, each with the smtp prober's own ``probe_smtp`` (so every option of
the module — STARTTLS, rcpt_to, the open-relay check — applies to each host). A host's
addresses are tried in the module's family order until one connects.

Time: the module's timeout is shared fairly. When a host's turn comes it gets the remaining
time divided by the hosts still to probe (itself included), so time a fast host did not use
goes to the hosts after it, and a host that drops packets cannot starve the backups.
At most ``smtp.mx_max_hosts`` hosts are probed; the rest are listed as not probed.

The domain verdict (``MailDomainState``) is what a sender would experience now:
- ok: no host tried before (or as preferred as) the first accepting host failed.
- degraded: a more (or equally) preferred host failed, a backup accepts — mail is delayed, not lost.
- all_mx_failed: no host accepts; no_mail_host: neither MX nor address records;
  null_mx; no_such_domain (NXDOMAIN); dns_error (temporary DNS failure).
``probe_success`` is 1 for ok and degraded: mail to the domain would be accepted now.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import time
from collections.abc import Callable, Iterable

import dns.asyncresolver
import dns.exception

from exporter.core.address import HostPort
from exporter.core.deadline import Deadline
from exporter.core.exposition import Family, Samples, labelled
from exporter.core.transcript import printable
from exporter.probers.base import Prober
from exporter.probers.connect.addresses import distinct, finish
from exporter.probers.connect.dial import connect_beside
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import AddressesReport, ProbeResult, TcpState
from exporter.probers.module import Module
from exporter.probers.smtp import mail_tls
from exporter.probers.smtp.domain_details import (
    DOMAIN_REPLY_MEANINGS,
    MailDomainDetails,
    MailDomainState,
    MxHost,
    mail_domain,
)
from exporter.probers.smtp.mx import HostAddresses, MxLookup, lookup_addresses, lookup_mx, new_resolver
from exporter.probers.smtp.mx_series import host_labels, per_host, per_host_one_hot
from exporter.probers.smtp.replies import Reply
from exporter.probers.smtp.result import REPLY_STAGES, SmtpDetails, SmtpState
from exporter.probers.smtp.session import probe_smtp
from exporter.probers.smtp.settings import SmtpSettings, smtp_settings

# An MX host whose addresses all fail to connect is given up after this many addresses.
MAX_ADDRESSES_TRIED = 2
# Lines of each host's transcript kept in the domain's transcript.
MAX_HOST_TRANSCRIPT = 60
MAX_GREETING = 120

_FROM_LOOKUP = {
    MxLookup.NULL_MX: MailDomainState.NULL_MX,
    MxLookup.NO_SUCH_DOMAIN: MailDomainState.NO_SUCH_DOMAIN,
    MxLookup.DNS_ERROR: MailDomainState.DNS_ERROR,
    MxLookup.NO_MAIL_HOST: MailDomainState.NO_MAIL_HOST,
}


# --- the probe ------------------------------------------------------------------------------


async def probe_smtp_target(target: HostPort, module: Module, deadline: Deadline, resolver: Resolver) -> ProbeResult:
    """The smtp prober's entry in the prober table: a mail domain with ``mx: true``, else one host."""
    settings = module.settings
    if isinstance(settings, SmtpSettings) and settings.mx:
        return await probe_mail_domain(target, module, deadline, resolver)
    return await probe_smtp(target, module, deadline, resolver)


def with_mail_domains(smtp: Prober) -> Prober:
    """The smtp prober plugin extended with ``smtp.mx``: a mail domain's results carry
    ``MailDomainDetails`` (its own facts, explanations and JSON) and its own families."""
    return dataclasses.replace(smtp, probe=probe_smtp_target, families=smtp.families + MAIL_DOMAIN_FAMILIES)


async def probe_mail_domain(target: HostPort, module: Module, deadline: Deadline, resolver: Resolver) -> ProbeResult:
    settings = smtp_settings(module)
    details = MailDomainDetails(domain=target.host)
    result = ProbeResult(state=SmtpState.CONNECT_FAILED, tcp_state=TcpState.DNS_ERROR, details=details)
    if target.ip is not None:
        details.state = MailDomainState.DNS_ERROR
        details.verdict = (
            f"{target.host} is an IP address, not a mail domain: a module with mx: true needs a "
            "domain name (probe a single server with a module without mx)"
        )
        return _finish(result, details)
    try:
        dns_resolver = new_resolver()
    except dns.exception.DNSException as exc:  # no resolv.conf, or one without a nameserver
        details.state = MailDomainState.DNS_ERROR
        details.verdict = f"no DNS resolver to ask for the MX records: {exc}"
        return _finish(result, details)
    result.note(f"Looking up the MX records of {target.host}")
    answer = await lookup_mx(target.host, deadline, module.tcp, dns_resolver)
    details.lookup_seconds = result.dns_lookup_seconds = answer.seconds
    details.mx_records = answer.count
    for note in answer.notes:
        result.note(note)
    if answer.outcome not in (MxLookup.MX, MxLookup.IMPLICIT):
        details.state = _FROM_LOOKUP[answer.outcome]
        details.verdict = answer.reason
        result.note(f"DNS: {answer.reason} ({answer.seconds * 1000:.1f} ms)")
        return _finish(result, details)
    details.implicit = answer.outcome is MxLookup.IMPLICIT
    details.mx = [MxHost(record.host, record.preference, implicit=details.implicit) for record in answer.records]
    result.note(
        f"DNS: {len(details.mx)} mail host(s) in {answer.seconds * 1000:.1f} ms: "
        + ", ".join(f"{host.preference} {host.host}" for host in details.mx)
    )
    loop = asyncio.get_running_loop()
    details.tls = mail_tls.MailTls.of(details.domain, settings.mta_sts, settings.dane)
    discovery = mail_tls.start_discovery(details.tls, deadline)
    probed = details.mx[: settings.mx_max_hosts]
    if len(details.mx) > len(probed):
        result.note(f"Probing the first {len(probed)} of {len(details.mx)} MX hosts (mx_max_hosts)")
    # tcp.probe_addresses: all: every address of every probed MX host.
    every = AddressesReport() if module.tcp.probe_addresses == "all" else None
    for index, host in enumerate(probed):
        remaining = deadline - loop.time()
        if remaining <= 0.01:
            result.note(f"No time left for MX {host.host}: not probed")
            break
        share = deadline.share(len(probed) - index)
        await _probe_host(host, target.port, module, share, resolver, dns_resolver, result, every, details.tls)
    if every is not None:
        result.addresses = finish(distinct(every))
        result.note(f"Every address of the MX hosts: {result.addresses.state}")
    await mail_tls.apply_policy(details.tls, discovery, probed, result.note)
    details.state = _verdict(details.mx)
    details.verdict = _verdict_words(details)
    return _finish(result, details)


async def _probe_host(
    host: MxHost,
    port: int,
    module: Module,
    deadline: Deadline,
    resolver: Resolver,
    dns_resolver: dns.asyncresolver.Resolver,
    result: ProbeResult,
    every: AddressesReport | None,
    tls: mail_tls.MailTls | None = None,
) -> None:
    started = time.perf_counter()
    found: HostAddresses = await lookup_addresses(host.host, deadline, module.tcp, dns_resolver)
    host.dns_seconds = found.seconds
    result.dns_lookup_seconds += found.seconds
    host.addresses = found.addresses
    result.note(
        f"--- MX {host.preference} {host.host}: "
        + (", ".join(found.addresses) if found.addresses else (found.error or "no address"))
    )
    if not found.addresses:
        host.state, host.tcp_state = SmtpState.CONNECT_FAILED, TcpState.DNS_ERROR
        host.detail, host.dns_temporary = found.error or "no address", found.temporary
        host.duration_seconds = time.perf_counter() - started
        return
    host_module = _module_for(module, host.host)
    ehlo = smtp_settings(module).ehlo_name
    tls_check = mail_tls.start_host_check(tls, host.host, host.preference, found.addresses, port, ehlo, deadline)
    loop = asyncio.get_running_loop()
    candidates = found.addresses[:MAX_ADDRESSES_TRIED]

    async def sessions() -> None:
        for index, address in enumerate(candidates):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            own_deadline = deadline.share(len(candidates) - index)
            outcome = await probe_smtp(_literal(address, port), host_module, own_deadline, resolver)
            _record(host, address, outcome, result)
            if outcome.state != SmtpState.CONNECT_FAILED:
                break  # a host that answered decides; only a failed connect moves on to its next address

    if every is None:
        await sessions()
    else:  # tcp.probe_addresses: all: every address of the host, at once, beside the sessions
        await connect_beside(sessions(), found.addresses, port, module.tcp, deadline, resolver, every, host.host)
    if tls_check is not None:
        await tls_check
    host.duration_seconds = time.perf_counter() - started


def _literal(address: str, port: int) -> HostPort:
    return HostPort(address, port, ipaddress.ip_address(address))


def _module_for(module: Module, host: str) -> Module:
    """The module as one MX host is probed: its certificate is checked against the MX host's name."""
    smtp = smtp_settings(module)
    tls_config = smtp.tls_config
    if tls_config.server_name is None:
        tls_config = dataclasses.replace(tls_config, server_name=host)
    return dataclasses.replace(
        module, settings=dataclasses.replace(smtp, mx=False, mta_sts=False, dane=False, tls_config=tls_config)
    )


def _record(host: MxHost, address: str, outcome: ProbeResult, result: ProbeResult) -> None:
    host.address = address
    host.state = str(outcome.state)
    host.tcp_state = str(outcome.tcp_state)
    host.success = outcome.success
    host.detail = outcome.detail
    host.connect_seconds = outcome.connect_seconds
    host.smtp = outcome.details if isinstance(outcome.details, SmtpDetails) else None
    banner = host.reply("banner")
    if banner is not None and banner.lines:
        text = printable(banner.lines[0])
        host.greeting = f"{banner.code} {text[:MAX_GREETING]}" + ("..." if len(text) > MAX_GREETING else "")
    for line in outcome.transcript[:MAX_HOST_TRANSCRIPT]:
        result.note(f"  {line}")
    if len(outcome.transcript) > MAX_HOST_TRANSCRIPT:
        result.note(f"  ... {len(outcome.transcript) - MAX_HOST_TRANSCRIPT} more lines")
    result.note(f"  => {address}: {host.state}" + ("" if outcome.success else f": {outcome.detail}"))


def _verdict(hosts: list[MxHost]) -> MailDomainState:
    tried = [host for host in hosts if host.probed]
    accepting = [host for host in tried if _accepts(host)]
    if not accepting:
        return MailDomainState.ALL_MX_FAILED
    best = min(host.preference for host in accepting)
    # A sender tries hosts of lower preference first, and equal ones in random order: any of
    # them failing delays some mail.
    if any(not _accepts(host) and host.preference <= best for host in tried):
        return MailDomainState.DEGRADED
    return MailDomainState.OK


def _accepts(host: MxHost) -> bool:
    """Whether senders deliver to the host: its SMTP test passes and no enforced MTA-STS policy refuses it."""
    return host.success and host.refused_by is None


def _deciding(details: MailDomainDetails) -> MxHost | None:
    """The host whose outcome the top-level series show: the first accepting one, else the first tried."""
    tried = [host for host in details.mx if host.probed]
    return next((host for host in tried if _accepts(host)), tried[0] if tried else None)


def _verdict_words(details: MailDomainDetails) -> str:
    domain, state = details.domain, details.state
    tried = [host for host in details.mx if host.probed]
    failed = [host for host in tried if not _accepts(host)]
    kind = "its implicit MX (the domain's own address)" if details.implicit else f"{len(tried)} MX host(s)"
    if state is MailDomainState.OK:
        first = _deciding(details)
        assert first is not None
        extra = (
            (
                f"; but {len(failed)} backup host(s) fail: "
                + ", ".join(f"{host.host} ({_short(host) if host.refused_by else host.state})" for host in failed)
            )
            if failed
            else ""
        )
        return f"mail to {domain} is accepted now: {first.host} (preference {first.preference}) accepts{extra}"
    if state is MailDomainState.DEGRADED:
        first = _deciding(details)
        assert first is not None
        ahead = [host for host in failed if host.preference <= first.preference]
        return (
            f"mail to {domain} is delayed, not lost: "
            + ", ".join(f"{host.host} (preference {host.preference}) {mail_tls.fails(host)}" for host in ahead)
            + f"; senders retry and reach {first.host} (preference {first.preference}), which accepts"
        )
    if not tried:
        return f"no MX host of {domain} could be probed before the deadline"
    if (outage := mail_tls.enforced_outage(domain, tried)) is not None:
        return outage
    codes = {
        reply.code for host in tried for stage in ("banner", "rcpt", "mail") if (reply := host.reply(stage)) is not None
    }
    if codes == {521}:
        return f"every MX host of {domain} answers 521: {DOMAIN_REPLY_MEANINGS[521]}"
    reasons = "; ".join(f"{host.host}: {_short(host)}" for host in tried)
    if all(_temporary(host) for host in tried):
        return (
            f"no MX host of {domain} accepts mail now, but every failure is temporary "
            f"(senders queue and retry; mail is delayed): {reasons}"
        )
    return f"no MX host of {domain} accepts mail ({kind} tried): {reasons}"


def _failing_reply(host: MxHost) -> Reply | None:
    """The reply that ended the host's dialogue (the last one of 400 or more), if any."""
    replies = [host.reply(stage) for stage in REPLY_STAGES]
    replies += [host.reply("relay_rcpt")]
    return next((reply for reply in reversed(replies) if reply is not None and reply.code >= 400), None)


def _short(host: MxHost) -> str:
    """A host's failure in a few words: its state, and the reply code or TCP outcome behind it."""
    if host.success and host.refused_by is not None:
        return f"refused by senders that enforce MTA-STS: {host.refused_by}"
    if host.state == SmtpState.OPEN_RELAY:
        return "open relay (accepted a foreign recipient)"
    reply = _failing_reply(host)
    if reply is not None:
        code = reply.code_text
        return f"{host.state} ({code}, {'temporary' if reply.code < 500 else 'permanent'})"
    if host.state == SmtpState.CONNECT_FAILED:
        return f"connect_failed ({host.tcp_state})"
    return host.state


def _temporary(host: MxHost) -> bool:
    """Whether a sender would queue and retry this host (as opposed to bouncing or never trying)."""
    if host.success and host.refused_by is not None:
        return True  # RFC 8461 §5: an enforcing sender defers the mail rather than bounce it
    if host.state in (SmtpState.CONNECT_FAILED, SmtpState.BANNER_TIMEOUT, SmtpState.TIMEOUT):
        return host.tcp_state != TcpState.DNS_ERROR or host.dns_temporary
    reply = _failing_reply(host)
    return reply is not None and reply.code < 500


def _finish(result: ProbeResult, details: MailDomainDetails) -> ProbeResult:
    result.success = details.state in (MailDomainState.OK, MailDomainState.DEGRADED)
    result.detail = details.verdict
    deciding = _deciding(details)
    if deciding is not None:
        result.state = SmtpState(deciding.state)
        result.tcp_state = TcpState(deciding.tcp_state) if deciding.tcp_state else TcpState.ERROR
        result.connect_seconds = deciding.connect_seconds
        result.address = deciding.address
        if deciding.address:
            result.ip_protocol = 6 if ":" in deciding.address else 4
    result.note(f"Mail domain {details.domain}: {details.state}")
    return result


# --- metric families ------------------------------------------------------------------------


def _probed(result: ProbeResult) -> list[MxHost] | None:
    details = mail_domain(result)
    return None if details is None else [host for host in details.mx if host.probed]


def _per_host(value: Callable[[MxHost], float | None]) -> Samples[ProbeResult]:
    return per_host(_probed, value)


def _per_host_one_hot(values: list[str], current: Callable[[MxHost], str | None]) -> Samples[ProbeResult]:
    return per_host_one_hot(_probed, values, current)


def _domain_state(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = mail_domain(result)
    if details is None:
        return ()
    return [(f'state="{state.value}"', 1 if state is details.state else 0) for state in MailDomainState]


def _mx_records(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = mail_domain(result)
    return () if details is None or details.mx_records is None else (("", details.mx_records),)


def _reply_codes(result: ProbeResult) -> Iterable[tuple[str, float]]:
    details = mail_domain(result)
    if details is None:
        return ()
    return [
        (f'{host_labels(host.host, host.preference)},stage="{stage}"', reply.code)
        for host in details.mx
        if host.probed
        for stage in REPLY_STAGES
        if (reply := host.reply(stage)) is not None
    ]


MAIL_DOMAIN_FAMILIES = (
    Family(
        "probe_mail_domain_state",
        "gauge",
        "Verdict on a mail domain (smtp.mx): exactly one of ok, degraded, all_mx_failed, null_mx, "
        "no_such_domain, dns_error, no_mail_host is 1.",
        labelled(_domain_state),
    ),
    Family(
        "probe_mx_records",
        "gauge",
        "MX records the mail domain publishes (a null MX counts 1; 0: none, the implicit MX is used).",
        labelled(_mx_records),
    ),
    Family(
        "probe_mx_success",
        "gauge",
        "Whether this MX host passed the module's SMTP test (1) or not (0); only hosts probed.",
        _per_host(lambda host: int(host.success)),
    ),
    Family(
        "probe_mx_smtp_state",
        "gauge",
        "Outcome of the SMTP test on this MX host: exactly one state is 1 per host.",
        _per_host_one_hot([state.value for state in SmtpState], lambda host: host.state),
    ),
    Family(
        "probe_mx_tcp_state",
        "gauge",
        "Outcome of the TCP connect to this MX host: exactly one state is 1 per host.",
        _per_host_one_hot([state.value for state in TcpState], lambda host: host.tcp_state),
    ),
    Family(
        "probe_mx_reply_code",
        "gauge",
        "The last reply code of each SMTP stage this MX host reached.",
        labelled(_reply_codes),
    ),
    Family(
        "probe_mx_connect_duration_seconds",
        "gauge",
        "Time until the TCP connect to this MX host had an outcome.",
        _per_host(lambda host: host.connect_seconds),
    ),
    Family(
        "probe_mx_banner_duration_seconds",
        "gauge",
        "Time from the open connection to this MX host's complete greeting.",
        _per_host(lambda host: host.smtp.banner_seconds if host.smtp is not None else None),
    ),
    Family(
        "probe_mx_duration_seconds",
        "gauge",
        "How long probing this MX host took (its address lookup included), in seconds.",
        _per_host(lambda host: host.duration_seconds),
    ),
    *mail_tls.families(lambda result: details.tls if (details := mail_domain(result)) is not None else None),
)
