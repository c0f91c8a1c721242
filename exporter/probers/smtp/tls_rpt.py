"""SMTP TLS Reporting (RFC 8460 §3): the ``_smtp._tls.<domain>`` TXT record.

Records not beginning with ``v=TLSRPTv1`` are discarded; if not exactly one remains, senders assume
the domain does not implement TLS-RPT. The record needs ``rua=``: one or more comma-separated
``mailto:`` or ``https:`` URIs where senders send their daily reports of TLS failures (MTA-STS and
DANE ones included).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_RUA = 10
_VERSION = re.compile(r"v=TLSRPTv1[ \t]*(;|\Z)")


@dataclass(slots=True)
class TlsRpt:
    present: bool
    rua: list[str] = field(default_factory=list)
    reason: str = ""  # why not present, or a lookup failure

    def contract(self) -> dict[str, object]:
        return {"present": self.present, "rua": list(self.rua), "reason": self.reason}


def parse_tls_rpt(records: list[str]) -> TlsRpt:
    candidates = [record for record in records if _VERSION.match(record)]
    if not candidates:
        return TlsRpt(False, reason="no _smtp._tls TXT record beginning with v=TLSRPTv1")
    if len(candidates) > 1:
        return TlsRpt(
            False,
            reason=f"{len(candidates)} _smtp._tls TXT records begin with v=TLSRPTv1: RFC 8460 §3 says senders then "
            "assume the domain does not implement TLS-RPT",
        )
    fields = [part.strip(" \t") for part in candidates[0].split(";")[1:]]
    rua = [value for key, _, value in (part.partition("=") for part in fields if part) if key.strip() == "rua"]
    if not rua:
        return TlsRpt(False, reason="the _smtp._tls TXT record has no rua= (where to send reports)")
    uris = [uri.strip(" \t") for uri in rua[0].split(",") if uri.strip(" \t")]
    if not uris or not all(uri.lower().startswith(("mailto:", "https:")) for uri in uris):
        return TlsRpt(False, reason="the rua= of the _smtp._tls TXT record is not a list of mailto: or https: URIs")
    return TlsRpt(True, [uri[:200] for uri in uris[:MAX_RUA]])
