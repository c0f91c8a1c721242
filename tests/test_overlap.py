"""Overlapping scrapes never probe the same target twice at once: the second shares the result."""

from __future__ import annotations

import pytest

from tests.helpers.netns import run_in_netns

pytestmark = pytest.mark.netns


def test_second_scrape_shares_the_in_flight_probe():
    result = run_in_netns("overlap")
    # nftables counted the SYNs to the filtered port: one probe, although two requests asked for it.
    assert result["syn_packets"] == 1
    assert result["first"]["state"] == "timeout"
    assert result["second_state"] == ["timeout"]
    assert result["second_connect"] == result["first"]["probe_tcp_connect_duration_seconds"]
