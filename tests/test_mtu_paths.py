"""tcp.mtu_check on a routed network (client — r1 — r2 — server) with real servers: every state, for a TLS
module (tcp with tls: true, a certificate chain of several full-size segments) and an SMTP module
(aiosmtpd with STARTTLS), the reported path MTU and router, no false black hole on a clean path (also
while the machine is busy), and a silent server that leaves the result ``unknown`` within the deadline.

Every case builds a fresh network: a path MTU learnt by an earlier case (kept ~10 minutes by the kernel,
on whichever side learnt it) would otherwise hide what the case sets up (docs/mtu.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers.mtu_network import SILENT_PORT, SMTP_PORT, TLS_PORT, mtu_network
from tests.helpers.topology import R1_4, R1_6

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CONFIG = """modules:
  tls_mtu:
    prober: tcp
    timeout: 10s
    tcp: {tls: true, tls_config: {ca_file: CA_FILE, server_name: tls.test}, mtu_check: true}
  smtp_mtu:
    prober: smtp
    timeout: 10s
    tcp: {mtu_check: true}
    smtp: {starttls: required, tls_config: {ca_file: CA_FILE, server_name: mx.test}}
"""
MODULES = {"tls_mtu": TLS_PORT, "smtp_mtu": SMTP_PORT}

# name: (network shape, expected state, path MTU, reporter, directions tested, the probe succeeds), for IPv4
# with the narrow links at 1200; IPv6 (whose links are at least 1280 bytes) has them at 1280 and r1's IPv6 address.
CASES = {
    "clean": ({}, "ok", 1500, None, ["from_target", "to_target"], True),
    # The middle link at 1200 both ways, routers announce it: PMTUD works, r1 (the client's side) said so.
    "narrow": ({"narrow": True}, "reduced", 1200, R1_4, ["from_target", "to_target"], True),
    # r1 drops its own "fragmentation needed": our full-size segments vanish silently.
    "hole_to_target": (
        {"narrow": True, "drop_frag_needed": ("r1",)},
        "blackhole_to_target",
        None,
        None,
        ["from_target", "to_target"],
        False,
    ),
    # Only the way back is narrow (a second r1–r2 link) and r2 drops its ICMP: the target's large
    # segments (the certificate flight) vanish, the small-MSS retry succeeds.
    "hole_from_target": (
        {"narrow_return": True, "drop_frag_needed": ("r2",)},
        "blackhole_from_target",
        None,
        None,
        ["from_target"],
        False,
    ),
}


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("module", sorted(MODULES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_mtu_state(case: str, module: str, ipv6: bool) -> None:
    shape, state, path_mtu, reporter, tested, success = CASES[case]
    if ipv6:
        path_mtu = 1280 if path_mtu == 1200 else path_mtu
        reporter = R1_6 if reporter == R1_4 else reporter
    suffix = f"m{sorted(CASES).index(case)}{module[0]}{int(ipv6)}"
    with mtu_network(suffix, CONFIG, mtu=1280 if ipv6 else 1200, **shape) as network:
        document = network.check(module, MODULES[module], ipv6=ipv6)
    mtu = document["mtu"]
    assert mtu is not None, document
    assert (mtu["state"], mtu["path_mtu"], mtu["reported_by"]) == (state, path_mtu, reporter), mtu
    assert mtu["tested"] == tested, mtu
    assert document["success"] is success, document
    if state.startswith("blackhole"):
        assert "path-MTU black hole" in document["detail"], document["detail"]
        assert "path-MTU black hole" in mtu["detail"]
    if case == "hole_to_target" and module == "smtp_mtu":
        # The SMTP explanation names what a mail client would see.
        assert "354 then silence" in document["detail"], document["detail"]
        assert document["details"]["stalled_at"].startswith("a full-size NOOP"), document["details"]
    if case == "hole_from_target" and module == "smtp_mtu":
        assert "STARTTLS then silence: large packets from the server are dropped" in document["detail"]


def test_silent_server_is_unknown_with_what_remains_possible() -> None:
    """A server that accepts and never answers: no black hole is claimed, the probe ends by its deadline."""
    with mtu_network("ms", CONFIG.replace("timeout: 10s", "timeout: 4s")) as network:
        document = network.check("tls_mtu", SILENT_PORT)
    mtu = document["mtu"]
    assert mtu["state"] == "unknown", mtu
    assert mtu["tested"] == ["from_target"], mtu
    assert any("slow or stalls" in cause for cause in mtu["possible"]), mtu
    assert document["duration_seconds"] < 4 * 2, document  # bounded by the probe's own deadline (generous slack)


@pytest.mark.slow
def test_no_false_black_hole_on_a_busy_machine() -> None:
    """The clean path stays ok while every core is kept busy: the decisions wait on the kernel's
    acknowledgements and retransmission timers, not on how fast this process runs."""
    burn = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        with mtu_network("mb", CONFIG) as network:
            states = [network.check(module, MODULES[module])["mtu"]["state"] for module in sorted(MODULES) * 3]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=30)
    assert states == ["ok"] * 6, states


def test_probe_endpoint_exposes_the_mtu_families(tmp_path) -> None:
    """/probe of the exporter running in the client namespace: the state one-hot, the path MTU and the
    reporting router, in text promtool accepts."""
    from tests.helpers.topology import SERVER4, ClientExporter

    with mtu_network("mp", CONFIG, narrow=True) as network:
        exporter = ClientExporter(network.topology, str(network.config), port=19117)
        try:
            text = exporter.get(f"/probe?target={SERVER4}:{SMTP_PORT}&module=smtp_mtu", scrape_timeout=15)
        finally:
            exporter.close()
    lines = set(text.splitlines())
    assert 'probe_mtu_state{state="reduced"} 1' in lines, text
    assert {f'probe_mtu_state{{state="{state}"}} 0' for state in ("ok", "unknown")} <= lines
    assert "probe_path_mtu_bytes 1200" in lines, text
    assert f'probe_path_mtu_reported_by_info{{address="{R1_4}"}} 1' in lines, text
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    if promtool.returncode == 127:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; .ci/run installs it)")
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
