"""The ``tcp:`` section: how the connect step, shared by every prober, resolves and connects."""

from __future__ import annotations

from dataclasses import dataclass

from exporter.core import schema
from exporter.core.schema import Field, Section


@dataclass(frozen=True, slots=True)
class TcpSettings:
    preferred_ip_protocol: str = "ip4"
    ip_protocol_fallback: bool = True
    source_ip_address: str | None = None
    # Path diagnosis (docs/path-diagnosis.md).
    diagnose: str = "never"  # never | on_failure: extra packets towards the target's path
    diagnose_interval: float = 600.0  # at most one diagnosis per target per interval (/metrics)
    # Every address of the name (docs/metrics.md "Every address"): one | all.
    probe_addresses: str = "one"
    probe_addresses_max: int = 8  # addresses probed at most with "all"; the rest are reported as cut
    # Path-MTU black holes (docs/mtu.md): extra full-size data and packets after the connect.
    mtu_check: bool = False


TCP_FIELDS = {
    "preferred_ip_protocol": Field(schema.choice("ip4", "ip6"), "ip4"),
    "ip_protocol_fallback": Field(schema.boolean, True),
    "source_ip_address": Field(schema.ip_address, None),
    # path diagnosis
    "diagnose": Field(schema.choice("never", "on_failure"), "never"),
    "diagnose_interval": Field(schema.duration(1.0, 7 * 86400.0), 600.0),
    # every address of the name
    "probe_addresses": Field(schema.choice("one", "all"), "one"),
    "probe_addresses_max": Field(schema.integer(1, 64), 8),
    "mtu_check": Field(schema.boolean, False),
}
TCP_SECTION = Section(TCP_FIELDS, TcpSettings)
