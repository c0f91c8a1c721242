"""The ``tls_config:`` section a prober that speaks TLS reads (blackbox_exporter's key names)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exporter.core import schema
from exporter.core.address import is_host_name
from exporter.core.schema import Errors, Field, PemFile, Section


@dataclass(frozen=True, slots=True)
class TlsConfig:
    ca_file: PemFile | None = None  # None: the system's trust store
    server_name: str | None = None  # None: the target's host
    insecure_skip_verify: bool = False


def _server_name(value: Any, path: str, errs: Errors) -> Any:
    if isinstance(value, str) and (is_host_name(value) or schema.is_ip(value)):
        return value
    return errs.add(path, f"{value!r} is not a host name or IP address to verify the certificate against")


TLS_CONFIG_SECTION = Section(
    {
        "ca_file": Field(schema.ca_file, None),
        "server_name": Field(_server_name, None),
        "insecure_skip_verify": Field(schema.boolean, False),
    },
    TlsConfig,
)
