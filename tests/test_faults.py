"""Faults on the exporter's side of the network: each classified, and the exporter keeps serving."""

from __future__ import annotations

import pytest

from tests.helpers.netns import run_in_netns

pytestmark = pytest.mark.netns


def test_silent_resolver_and_missing_route():
    result = run_in_netns("faults", mount_namespace=True)
    # A resolver that never answers: dns_error at the probe's 500 ms deadline, not a hang.
    assert result["slow-dns.example:25"]["state"] == "dns_error"
    assert result["slow-dns.example:25"]["probe_ip_protocol"] == 0
    # No route to the destination: connect() fails locally with ENETUNREACH.
    assert result["192.0.2.1:25"]["state"] == "unreachable"
    assert result["elapsed"] < 4  # the 500 ms deadline; the resolver's own retries would take 10 s


def test_file_descriptor_exhaustion_is_error_and_recovers():
    result = run_in_netns("emfile")
    assert result["starved"].get("error", 0) > 0, result
    assert result["starved"].get("open", 0) > 0, result
    assert set(result["starved"]) <= {"open", "error"}
    assert result["healthy"] == 200
    assert result["recovered"] == {"open": 200}
