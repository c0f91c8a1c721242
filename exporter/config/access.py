"""Who may make /probe probe what: an optional allowlist and a per-client rate limit.

An exposed /probe endpoint makes the exporter connect wherever it is told (like blackbox_exporter):
a port scanner for anyone who can reach it. ``probe_access`` in the config narrows that down.
"""

from __future__ import annotations

import fnmatch
import time
from collections import OrderedDict
from dataclasses import dataclass

from exporter.config.model import ProbeAccess, RateLimit
from exporter.core.address import HostPort

MAX_TRACKED_CLIENTS = 10_000


@dataclass(frozen=True)
class Denied(Exception):
    reason: str  # bounded label value: module, network, host, port, rate_limit
    message: str  # one line for the client
    status: int = 403


class _TokenBuckets:
    """Per-client token buckets, forgetting the least recently seen clients beyond a bound."""

    def __init__(self, limit: RateLimit):
        self.limit = limit
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def allow(self, client: str, now: float) -> bool:
        tokens, last = self._buckets.pop(client, (float(self.limit.burst), now))
        tokens = min(float(self.limit.burst), tokens + (now - last) * self.limit.requests_per_second)
        allowed = tokens >= 1.0
        self._buckets[client] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > MAX_TRACKED_CLIENTS:
            self._buckets.popitem(last=False)
        return allowed


class ProbeGate:
    def __init__(self, access: ProbeAccess | None):
        self.access = access
        self._buckets = _TokenBuckets(access.rate_limit) if access and access.rate_limit else None

    def check(self, address: HostPort, module: str, client: str) -> None:
        """Raise Denied when ``client`` may not probe ``address`` with ``module``."""
        access = self.access
        if access is None:
            return
        rate = access.rate_limit
        if self._buckets is not None and rate is not None and not self._buckets.allow(client, time.monotonic()):
            raise Denied(
                "rate_limit",
                f"too many probe requests from {client}: the limit is "
                f"{rate.requests_per_second:g}/s (burst {rate.burst})",
                429,
            )
        if access.allowed_modules is not None and module not in access.allowed_modules:
            raise Denied("module", f"module {module!r} is not allowed for /probe by probe_access.allowed_modules")
        if access.allowed_ports and not any(low <= address.port <= high for low, high in access.allowed_ports):
            raise Denied("port", f"port {address.port} is not allowed by probe_access.allowed_ports")
        if not (access.allowed_networks or access.allowed_hosts):
            return
        if address.ip is not None:
            if not any(address.ip in network for network in access.allowed_networks):
                raise Denied("network", f"address {address.host} is not in probe_access.allowed_networks")
        elif not any(
            fnmatch.fnmatchcase(address.host.lower().rstrip("."), pattern) for pattern in access.allowed_hosts
        ):
            raise Denied("host", f"host name {address.host!r} does not match probe_access.allowed_hosts")
