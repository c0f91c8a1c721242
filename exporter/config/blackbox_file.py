"""Which files are blackbox_exporter configurations, and the defaults their modules keep.

blackbox_exporter's configuration file has one top-level key, ``modules``. A file with nothing else
(no ``targets``, ``global`` or ``probe_access``) is read as a blackbox.yml: its tcp modules keep
blackbox_exporter's meaning, defaults included, so an unchanged file measures what it measured there.
The one default that differs is ``preferred_ip_protocol``: blackbox_exporter's is ``ip6`` (with
``ip_protocol_fallback: true``, config/config.go ``DefaultTCPProbe``); our own format keeps ``ip4``
(docs/migrating.md). The smtp prober is ours alone and keeps its own defaults in either file.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

from exporter.probers.connect.settings import TcpSettings

BLACKBOX_TOP_KEYS = frozenset({"modules"})
BLACKBOX_PREFERRED_IP_PROTOCOL = "ip6"

Settings = TypeVar("Settings", bound=TcpSettings)


def is_blackbox_file(raw: Any) -> bool:
    """True for a mapping whose keys are exactly blackbox_exporter's (``modules`` alone)."""
    return isinstance(raw, dict) and set(raw) == BLACKBOX_TOP_KEYS


def with_blackbox_defaults(tcp: Settings, raw_tcp: Any) -> Settings:
    """``tcp`` with blackbox_exporter's default for each key the module's ``tcp:`` section leaves out."""
    written = raw_tcp if isinstance(raw_tcp, dict) else {}
    if "preferred_ip_protocol" in written:
        return tcp
    return dataclasses.replace(tcp, preferred_ip_protocol=BLACKBOX_PREFERRED_IP_PROTOCOL)
