"""tcp.mtu_check on a routed network (client — r1 — r2 — server) with real servers: every state, for a TLS
module (tcp with tls: true, a certificate chain of several full-size segments) and an SMTP module
(aiosmtpd with STARTTLS), over IPv4 and IPv6, the reported path MTU and router, no false black hole on a
clean path (also while the machine is busy), and a silent server that leaves the result ``unknown``.

One network per shape (the narrow links at 1280 bytes, IPv6's minimum, for both families), shared by its
checks; before each check both hosts forget the path MTUs they learnt (``MtuNetwork.forget``): a learnt
one (kept ~10 minutes, on whichever side learnt it) would otherwise hide what the next check sets up.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.helpers.mtu_network import SILENT_PORT, SMTP_PORT, TLS_PORT, MtuNetwork, mtu_network
from tests.helpers.topology import R1_4, R1_6

pytestmark = [pytest.mark.netns, pytest.mark.slow]

CONFIG = """modules:
  tls_mtu:
    prober: tcp
    timeout: 10s
    tcp: {tls: true, tls_config: {ca_file: CA_FILE, server_name: tls.test}, mtu_check: true}
  tls_mtu_short:
    prober: tcp
    timeout: 4s
    tcp: {tls: true, tls_config: {ca_file: CA_FILE, server_name: tls.test}, mtu_check: true}
  smtp_mtu:
    prober: smtp
    timeout: 10s
    tcp: {mtu_check: true}
    smtp: {starttls: required, tls_config: {ca_file: CA_FILE, server_name: mx.test}}
"""
MODULES = {"tls_mtu": TLS_PORT, "smtp_mtu": SMTP_PORT}
MTU = 1280

SHAPES = {
    "clean": {},
    "narrow": {"narrow": True},
    "hole_to_target": {"narrow": True, "drop_frag_needed": ("r1",)},
    "hole_from_target": {"narrow_return": True, "drop_frag_needed": ("r2",)},
}
# shape: (expected state, path MTU, reporter (IPv4, IPv6), directions tested, the probe succeeds)
CASES = {
    "clean": ("ok", 1500, (None, None), ["from_target", "to_target"], True),
    # The middle link narrow both ways, routers announce it: PMTUD works, r1 (the client's side) said so.
    "narrow": ("reduced", MTU, (R1_4, R1_6), ["from_target", "to_target"], True),
    # r1 drops its own "fragmentation needed": our full-size segments vanish silently.
    "hole_to_target": ("blackhole_to_target", None, (None, None), ["from_target", "to_target"], False),
    # Only the way back is narrow (a second r1–r2 link) and r2 drops its ICMP: the target's large
    # segments (the certificate flight) vanish; the small-MSS retry succeeds, the full-MSS control does not.
    "hole_from_target": ("blackhole_from_target", None, (None, None), ["from_target"], False),
}


class Networks:
    """One network per shape, built when first needed and shared by the module's tests."""

    def __init__(self, stack: contextlib.ExitStack):
        self.stack = stack
        self.built: dict[str, MtuNetwork] = {}

    def __getitem__(self, shape: str) -> MtuNetwork:
        if shape not in self.built:
            suffix = f"m{sorted(SHAPES).index(shape)}"
            self.built[shape] = self.stack.enter_context(mtu_network(suffix, CONFIG, mtu=MTU, **SHAPES[shape]))
        network = self.built[shape]
        network.forget()
        return network


@pytest.fixture(scope="module")
def networks() -> Iterator[Networks]:
    with contextlib.ExitStack() as stack:
        yield Networks(stack)


@pytest.mark.parametrize("ipv6", [False, True], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize("module", sorted(MODULES))
@pytest.mark.parametrize("case", list(CASES))
def test_mtu_state(networks: Networks, case: str, module: str, ipv6: bool) -> None:
    state, path_mtu, reporters, tested, success = CASES[case]
    reporter = reporters[ipv6]
    document = networks[case].check(module, MODULES[module], ipv6=ipv6)
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


def test_silent_server_is_unknown_with_what_remains_possible(networks: Networks) -> None:
    """A server that accepts and never answers: no black hole is claimed, the probe ends by its deadline."""
    document = networks["clean"].check("tls_mtu_short", SILENT_PORT)
    mtu = document["mtu"]
    assert mtu["state"] == "unknown", mtu
    assert mtu["tested"] == ["from_target"], mtu
    assert any("slow or stalls" in cause for cause in mtu["possible"]), mtu
    assert document["duration_seconds"] < 4 * 2, document  # bounded by the probe's own deadline (generous slack)


def test_no_false_black_hole_on_a_busy_machine(networks: Networks) -> None:
    """The clean path stays ok while every core is kept busy: the decisions wait on the kernel's
    acknowledgements and retransmission timers, not on how fast this process runs."""
    burn = "import time\nend = time.monotonic() + 120\nwhile time.monotonic() < end: pass\n"
    burners = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2 * (os.cpu_count() or 1))]
    try:
        network = networks["clean"]
        states = [network.check(module, MODULES[module])["mtu"]["state"] for module in sorted(MODULES) * 3]
    finally:
        for burner in burners:
            burner.kill()
            burner.wait(timeout=30)
    assert states == ["ok"] * 6, states


def test_probe_endpoint_exposes_the_mtu_families(networks: Networks) -> None:
    """/probe of the exporter running in the client namespace: the state one-hot, the path MTU and the
    reporting router, in text promtool accepts."""
    from tests.helpers.topology import SERVER4, ClientExporter

    network = networks["narrow"]
    exporter = ClientExporter(network.topology, str(network.config), port=19117)
    try:
        text = exporter.get(f"/probe?target={SERVER4}:{SMTP_PORT}&module=smtp_mtu", scrape_timeout=15)
    finally:
        exporter.close()
    lines = set(text.splitlines())
    assert 'probe_mtu_state{state="reduced"} 1' in lines, text
    assert {f'probe_mtu_state{{state="{state}"}} 0' for state in ("ok", "unknown")} <= lines
    assert f"probe_path_mtu_bytes {MTU}" in lines, text
    assert f'probe_path_mtu_reported_by_info{{address="{R1_4}"}} 1' in lines, text
    promtool = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
    if promtool.returncode == 127:
        pytest.skip("promtool is not installed (Debian package 'prometheus'; .ci/run installs it)")
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
