"""Name resolution with a preferred IP family and optional fallback to the other."""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from exporter.core.address import HostPort
from exporter.probers.connect.settings import TcpSettings

# What connect() takes for an IPv4 (host, port) or an IPv6 (host, port, flowinfo, scope_id) address.
SockAddr = tuple[str, int] | tuple[str, int, int, int]


@dataclass(frozen=True, slots=True)
class Resolved:
    family: socket.AddressFamily
    sockaddr: SockAddr
    ip: str
    # Derived once here, read several times per connect (issue 25: a property each time was ~1 % of a scrape).
    ip_protocol: int = field(init=False)
    shown: str = field(init=False)  # the address as a person writes it with a port: 192.0.2.1, [2001:db8::1]

    def __post_init__(self) -> None:
        version = 6 if self.family == socket.AF_INET6 else 4
        object.__setattr__(self, "ip_protocol", version)
        object.__setattr__(self, "shown", f"[{self.ip}]" if version == 6 else self.ip)


class ResolveError(Exception):
    """The name did not resolve to a usable address; ``reason`` says why in one line."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def literal(target: HostPort) -> Resolved | None:
    """The address of an IP-literal target, computed without any lookup (once per distinct literal: building a
    frozen ``Resolved`` and asking ``ip.version`` was ~3 % of a plain scrape's CPU, issue 25)."""
    if target.ip is None:
        return None
    key = (target.host, target.port)
    resolved = _literals.get(key)
    if resolved is None:
        if len(_literals) >= MAX_LITERALS:  # /probe may name any number of them: kept bounded
            _literals.clear()
        if target.ip.version == 6:
            resolved = Resolved(socket.AF_INET6, (target.host, target.port, 0, 0), target.host)
        else:
            resolved = Resolved(socket.AF_INET, (target.host, target.port), target.host)
        _literals[key] = resolved
    return resolved


MAX_LITERALS = 100_000
_literals: dict[tuple[str, int], Resolved] = {}


class Resolver:
    """getaddrinfo on a dedicated, sized thread pool, so lookups never queue behind
    asyncio's small default executor (which also serves unrelated blocking work)."""

    def __init__(self, max_workers: int = 32):
        self._executor = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="dns")

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def resolve_every(self, target: HostPort, tcp: TcpSettings) -> list[Resolved]:
        """Every distinct address of ``target`` (both families, in the resolver's order), for
        ``tcp.probe_addresses: all``; raises ResolveError (or TimeoutError from the caller's deadline)."""
        fixed = literal(target)
        if fixed is not None:
            return [fixed]
        family = socket.AF_UNSPEC
        if tcp.source_ip_address:
            # A socket bound to a source address reaches only its own family.
            family = socket.AF_INET6 if ":" in tcp.source_ip_address else socket.AF_INET
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(
                self._executor,
                socket.getaddrinfo,
                target.host,
                target.port,
                family,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
            )
        except socket.gaierror as exc:
            raise ResolveError(f"{target.host} does not resolve: {exc.strerror}") from None
        except UnicodeError:
            raise ResolveError(f"{target.host} is not a valid name for DNS") from None
        seen: dict[str, Resolved] = {}
        for info_family, _, _, _, sockaddr in infos:
            if isinstance(sockaddr[0], int):  # (int, bytes): AF_INET6 in a Python built without IPv6
                continue
            ip = sockaddr[0]
            if info_family in (socket.AF_INET, socket.AF_INET6) and ip not in seen:
                seen[ip] = Resolved(info_family, sockaddr, ip)
        if not seen:
            raise ResolveError(f"{target.host} has no IPv4 or IPv6 address")
        return list(seen.values())

    async def resolve(self, target: HostPort, tcp: TcpSettings) -> Resolved:
        """Resolve ``target``; raises ResolveError (or TimeoutError from the caller's deadline)."""
        fixed = literal(target)
        if fixed is not None:
            return fixed
        family = socket.AF_UNSPEC
        if tcp.source_ip_address:
            # A socket bound to an IPv4 source can only reach IPv4 addresses, and vice versa.
            family = socket.AF_INET6 if ":" in tcp.source_ip_address else socket.AF_INET
        elif not tcp.ip_protocol_fallback:
            family = socket.AF_INET6 if tcp.preferred_ip_protocol == "ip6" else socket.AF_INET
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.run_in_executor(
                self._executor,
                socket.getaddrinfo,
                target.host,
                target.port,
                family,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
            )
        except socket.gaierror as exc:
            raise ResolveError(f"{target.host} does not resolve: {exc.strerror}") from None
        except UnicodeError:
            raise ResolveError(f"{target.host} is not a valid name for DNS") from None
        preferred = socket.AF_INET6 if tcp.preferred_ip_protocol == "ip6" else socket.AF_INET
        chosen = next((info for info in infos if info[0] == preferred), None)
        if chosen is None and (tcp.ip_protocol_fallback or family != socket.AF_UNSPEC):
            chosen = next((info for info in infos if info[0] in (socket.AF_INET, socket.AF_INET6)), None)
        if chosen is None:
            raise ResolveError(
                f"{target.host} has no {tcp.preferred_ip_protocol} address and ip_protocol_fallback is off"
            )
        family, _, _, _, sockaddr = chosen
        if isinstance(sockaddr[0], int):  # (int, bytes): AF_INET6 in a Python built without IPv6
            raise ResolveError(f"{target.host}: this Python cannot use IPv6 addresses")
        return Resolved(family, sockaddr, sockaddr[0])
