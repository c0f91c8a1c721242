"""Finding a mail domain's mail hosts, as a sending MTA does (RFC 5321 section 5.1, RFC 7505).

dnspython's asyncio resolver asks the servers of the normal resolver configuration
(``/etc/resolv.conf``) for the MX records, and for the A/AAAA records of each host, within the
caller's deadline. The answer is classified, never raised:

- MX records: the hosts sorted by preference (lowest first). Hosts of equal preference are
  sorted by name, not shuffled: RFC 5321 asks senders to randomise them to spread load, but a
  monitor probes every host anyway, and a stable order keeps the series and the verdict from
  changing between scrapes for no reason.
- No MX record (NOERROR, empty answer): the domain itself is the one host ("implicit MX"),
  preference 0 — but only when it has an address; with neither, it takes no mail.
- A single MX with the root as exchange (``MX 0 .``): a null MX, "this domain accepts no mail".
- NXDOMAIN: the domain does not exist (a permanent error).
- SERVFAIL, REFUSED, no answer before the deadline, no usable resolver: a temporary error.
"""

from __future__ import annotations

import asyncio
import ipaddress
import time
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncresolver
import dns.exception
import dns.name
import dns.rdatatype
import dns.resolver

from exporter.core.deadline import Deadline
from exporter.probers.connect.settings import TcpSettings

# A host name as it may appear in a label or a line of text (DNS names are at most 253 characters).
MAX_NAME = 253


class MxLookup(StrEnum):
    MX = "mx"  # MX records found
    IMPLICIT = "implicit"  # no MX record: the domain's own address is the mail host
    NULL_MX = "null_mx"  # RFC 7505 "MX 0 .": the domain accepts no mail
    NO_MAIL_HOST = "no_mail_host"  # the domain exists, with neither MX nor address records
    NO_SUCH_DOMAIN = "no_such_domain"  # NXDOMAIN
    DNS_ERROR = "dns_error"  # a temporary failure: SERVFAIL, REFUSED, timeout, no resolver


@dataclass(frozen=True, slots=True)
class MxRecord:
    host: str  # without the trailing dot
    preference: int


@dataclass(slots=True)
class MxAnswer:
    outcome: MxLookup
    records: list[MxRecord] = field(default_factory=list)  # in RFC 5321 order
    count: int | None = None  # MX records in the answer (None: unknown, the lookup failed)
    reason: str = ""  # one line for a person when the lookup did not give hosts
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class HostAddresses:
    addresses: list[str]  # in the order to try: preferred family first
    error: str | None = None  # why there is none
    seconds: float = 0.0
    temporary: bool = False  # the error is a temporary DNS failure (not "no such address")


def printable_name(name: dns.name.Name) -> str:
    """The name in presentation form (dnspython escapes unusual bytes as \\DDD), no trailing dot, bounded."""
    text = name.to_text(omit_final_dot=True)
    return text[:MAX_NAME]


def new_resolver() -> dns.asyncresolver.Resolver:
    """A resolver reading the system configuration now, so a changed resolv.conf counts at the next probe."""
    return dns.asyncresolver.Resolver(configure=True)


def _remaining(deadline: Deadline) -> float:
    return max(0.001, deadline - asyncio.get_running_loop().time())


def _describe_failure(name: str, exc: BaseException) -> str:
    if isinstance(exc, (dns.exception.Timeout, TimeoutError)):
        return (
            f"no DNS answer for {name} before the deadline (the resolver or the domain's name servers are "
            "slow or unreachable)"
        )
    if isinstance(exc, dns.resolver.NoNameservers):
        return (
            f"the DNS servers gave no usable answer for {name} (SERVFAIL or REFUSED): a temporary failure, "
            "often broken or unreachable name servers of the domain, or a DNSSEC validation failure"
        )
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return "no DNS resolver is configured (resolv.conf has no nameserver)"
    return f"the DNS lookup of {name} failed ({type(exc).__name__})"


async def _query(
    resolver: dns.asyncresolver.Resolver, name: dns.name.Name, rdtype: str, deadline: Deadline
) -> dns.resolver.Answer | None:
    """The answer, or None for NOERROR without records; raises NXDOMAIN and other DNS exceptions."""
    try:
        async with asyncio.timeout_at(deadline):
            return await resolver.resolve(name, rdtype, search=False, lifetime=_remaining(deadline))
    except dns.resolver.NoAnswer:
        return None


async def lookup_mx(
    domain: str, deadline: Deadline, tcp: TcpSettings, resolver: dns.asyncresolver.Resolver | None = None
) -> MxAnswer:
    started = time.perf_counter()
    answer = await _lookup_mx(domain, deadline, tcp, resolver)
    answer.seconds = time.perf_counter() - started
    return answer


async def _lookup_mx(
    domain: str, deadline: Deadline, tcp: TcpSettings, resolver: dns.asyncresolver.Resolver | None
) -> MxAnswer:
    try:
        name = dns.name.from_text(domain)  # absolute: no search list, as a sending MTA does
        resolver = resolver or new_resolver()
        response = await _query(resolver, name, "MX", deadline)
    except dns.resolver.NXDOMAIN:
        return MxAnswer(
            MxLookup.NO_SUCH_DOMAIN,
            count=0,
            reason=f"the domain {domain} does not exist (NXDOMAIN): mail to it bounces",
        )
    except (dns.exception.DNSException, TimeoutError) as exc:
        return MxAnswer(MxLookup.DNS_ERROR, reason=_describe_failure(domain, exc))
    except ValueError:
        return MxAnswer(MxLookup.DNS_ERROR, reason=f"{domain} is not a usable DNS name")
    if response is None:
        return await _implicit(domain, name, resolver, deadline, tcp)
    records = [(rdata.preference, rdata.exchange) for rdata in response]
    real = [(preference, exchange) for preference, exchange in records if exchange != dns.name.root]
    notes = []
    if not real:
        return MxAnswer(
            MxLookup.NULL_MX,
            count=len(records),
            reason=f"{domain} publishes a null MX (RFC 7505 'MX 0 .'): it accepts no mail at all",
        )
    if len(real) != len(records):
        notes.append(
            "the domain publishes a null MX next to other MX records, which RFC 7505 forbids; the null MX is ignored"
        )
    # A host listed twice (at two preferences) is one host: a sender reaches it at the better one.
    best: dict[str, int] = {}
    for preference, exchange in real:
        host = printable_name(exchange).lower()
        best[host] = min(preference, best.get(host, preference))
    ordered = sorted((preference, host) for host, preference in best.items())  # equal preferences: by name
    return MxAnswer(
        MxLookup.MX, [MxRecord(host, preference) for preference, host in ordered], count=len(records), notes=notes
    )


async def _implicit(
    domain: str, name: dns.name.Name, resolver: dns.asyncresolver.Resolver, deadline: Deadline, tcp: TcpSettings
) -> MxAnswer:
    found = await lookup_addresses(domain, deadline, tcp, resolver)
    if found.addresses:
        answer = MxAnswer(MxLookup.IMPLICIT, [MxRecord(domain.rstrip(".").lower(), 0)], count=0)
        answer.notes.append(
            f"{domain} has no MX record: its own address is the mail host (the implicit MX of RFC 5321 section 5.1)"
        )
        return answer
    if found.temporary:
        return MxAnswer(MxLookup.DNS_ERROR, count=0, reason=found.error or "")
    return MxAnswer(
        MxLookup.NO_MAIL_HOST,
        count=0,
        reason=f"{domain} exists but has neither MX nor address records: it takes no mail",
    )


def _families(tcp: TcpSettings) -> list[str]:
    """The record types to ask for, the preferred family first."""
    if tcp.source_ip_address:
        return ["AAAA" if ":" in tcp.source_ip_address else "A"]
    preferred, other = ("AAAA", "A") if tcp.preferred_ip_protocol == "ip6" else ("A", "AAAA")
    # probe_addresses: all probes every address of both families.
    return [preferred, other] if tcp.ip_protocol_fallback or tcp.probe_addresses == "all" else [preferred]


async def lookup_addresses(
    host: str, deadline: Deadline, tcp: TcpSettings, resolver: dns.asyncresolver.Resolver | None = None
) -> HostAddresses:
    """The host's addresses of the families the module may use, the preferred family first.

    When nothing was found because a lookup failed temporarily, ``temporary`` is set (so "no
    address" is not claimed on a SERVFAIL).
    """
    started = time.perf_counter()
    try:
        ipaddress.ip_address(host)
        return HostAddresses([host])  # an implicit MX of an IP-literal target: nothing to look up
    except ValueError:
        pass
    try:
        name = dns.name.from_text(host)
    except (dns.exception.DNSException, ValueError):
        return HostAddresses([], f"{host} is not a usable DNS name")
    resolver = resolver or new_resolver()
    rdtypes = _families(tcp)
    outcomes = await asyncio.gather(
        *(_query(resolver, name, rdtype, deadline) for rdtype in rdtypes), return_exceptions=True
    )
    addresses: list[str] = []
    temporary: BaseException | None = None
    nxdomain = False
    for outcome in outcomes:
        if isinstance(outcome, dns.resolver.NXDOMAIN):
            nxdomain = True
        elif isinstance(outcome, (dns.exception.DNSException, TimeoutError)):
            temporary = outcome
        elif isinstance(outcome, BaseException):
            raise outcome
        elif outcome is not None:
            addresses += [rdata.address for rdata in outcome]
    seconds = time.perf_counter() - started
    if addresses:
        return HostAddresses(addresses, None, seconds)
    if nxdomain:
        return HostAddresses([], f"{host} does not exist (NXDOMAIN)", seconds)
    if temporary is not None:
        return HostAddresses([], _describe_failure(host, temporary), seconds, temporary=True)
    wanted = " or ".join(rdtypes)
    return HostAddresses([], f"{host} has no {wanted} record", seconds)
