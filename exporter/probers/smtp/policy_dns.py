"""DNS lookups for mail TLS policies: TXT records (MTA-STS, TLS-RPT) and TLSA records (DANE).

Answers are classified, never raised. TLSA records are asked with the DO bit through the system
resolver (``/etc/resolv.conf``), and the resolver's AD bit is trusted the way Postfix's DANE
does: the host is expected to run a validating resolver of its own. A SERVFAIL is asked again
with the CD bit (checking disabled): when the answer then comes, the resolver refused it
because DNSSEC validation failed (bogus); when it does not, the failure is an ordinary one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum

import dns.asyncquery
import dns.asyncresolver
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.resolver

# A TXT record longer than this is cut (TXT records for policies are short; a hostile zone is not).
MAX_TXT = 2048
MAX_TLSA_RECORDS = 32


class Lookup(StrEnum):
    FOUND = "found"
    NONE = "none"  # NXDOMAIN or NOERROR without records of the type
    ERROR = "error"  # SERVFAIL, REFUSED, timeout, no resolver
    BOGUS = "bogus"  # SERVFAIL that a CD query answers: DNSSEC validation failed


@dataclass(slots=True)
class TxtAnswer:
    outcome: Lookup
    records: list[str] = field(default_factory=list)
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Tlsa:
    usage: int
    selector: int
    mtype: int
    data: bytes

    def text(self) -> str:
        return f"{self.usage} {self.selector} {self.mtype} {self.data.hex()[:16]}..."


@dataclass(slots=True)
class TlsaAnswer:
    outcome: Lookup
    secure: bool = False  # the resolver set AD: the answer (or the denial) was validated
    records: list[Tlsa] = field(default_factory=list)
    reason: str = ""


def _remaining(deadline: float) -> float:
    return max(0.001, deadline - asyncio.get_running_loop().time())


def _failure(name: str, exc: BaseException) -> str:
    if isinstance(exc, dns.exception.Timeout | TimeoutError):
        return f"no DNS answer for {name} before the deadline"
    if isinstance(exc, dns.resolver.NoNameservers):
        return f"the DNS servers gave no usable answer for {name} (SERVFAIL or REFUSED)"
    if isinstance(exc, dns.resolver.NoResolverConfiguration):
        return "no DNS resolver is configured (resolv.conf has no nameserver)"
    return f"the DNS lookup of {name} failed ({type(exc).__name__})"


async def lookup_txt(resolver: dns.asyncresolver.Resolver, name: str, deadline: float) -> TxtAnswer:
    """The TXT records at ``name``, each one's strings joined (RFC 7208 style), decoded leniently."""
    try:
        async with asyncio.timeout_at(deadline):
            answer = await resolver.resolve(
                dns.name.from_text(name), "TXT", search=False, lifetime=_remaining(deadline)
            )
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return TxtAnswer(Lookup.NONE)
    except (dns.exception.DNSException, TimeoutError) as exc:
        return TxtAnswer(Lookup.ERROR, reason=_failure(name, exc))
    records = []
    for rdata in answer:
        joined = b"".join(rdata.strings)[:MAX_TXT]
        records.append(joined.decode("utf-8", "replace"))
    return TxtAnswer(Lookup.FOUND, records)


def dnssec_resolver() -> dns.asyncresolver.Resolver:
    """A resolver of the system configuration asking with the DO bit (so AD is meaningful)."""
    resolver = dns.asyncresolver.Resolver(configure=True)
    resolver.use_edns(0, dns.flags.DO, 1232)
    return resolver


async def lookup_tlsa(resolver: dns.asyncresolver.Resolver, name: str, deadline: float) -> TlsaAnswer:
    qname = dns.name.from_text(name)
    try:
        async with asyncio.timeout_at(deadline):
            answer = await resolver.resolve(
                qname, "TLSA", search=False, lifetime=_remaining(deadline), raise_on_no_answer=False
            )
    except dns.resolver.NXDOMAIN as exc:
        responses = exc.kwargs.get("responses") or {}
        response = responses.get(qname)
        secure = response is not None and bool(response.flags & dns.flags.AD)
        return TlsaAnswer(Lookup.NONE, secure)
    except dns.resolver.NoNameservers as exc:
        if await _answers_without_checking(resolver, qname, deadline):
            return TlsaAnswer(Lookup.BOGUS, reason=f"DNSSEC validation of {name} failed (bogus)")
        return TlsaAnswer(Lookup.ERROR, reason=_failure(name, exc))
    except (dns.exception.DNSException, TimeoutError) as exc:
        return TlsaAnswer(Lookup.ERROR, reason=_failure(name, exc))
    secure = bool(answer.response.flags & dns.flags.AD)
    if answer.rrset is None:
        return TlsaAnswer(Lookup.NONE, secure)
    records = [
        Tlsa(rdata.usage, rdata.selector, rdata.mtype, bytes(rdata.cert))
        for rdata in list(answer.rrset)[:MAX_TLSA_RECORDS]
    ]
    return TlsaAnswer(Lookup.FOUND, secure, records)


async def _answers_without_checking(
    resolver: dns.asyncresolver.Resolver, qname: dns.name.Name, deadline: float
) -> bool:
    """Whether the resolver answers the query when asked with CD (checking disabled)."""
    query = dns.message.make_query(qname, dns.rdatatype.TLSA, want_dnssec=True)
    query.flags |= dns.flags.CD
    for nameserver in resolver.nameservers[:2]:
        try:
            async with asyncio.timeout_at(deadline):
                response = await dns.asyncquery.udp(query, str(nameserver), timeout=_remaining(deadline))
        except (dns.exception.DNSException, TimeoutError, OSError, ValueError):
            continue
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            return True
    return False
