"""The routed test network (tests/helpers/topology.py) shaped for path-MTU cases, with real servers.

    client — r1 ══ r2 — server          ══ : the middle link, at MTU 1200 when ``narrow`` (like a tunnel)
              ╰── r1 b1 ─ r2 a1 ──╯     a second r1–r2 link at MTU 1200 that carries only the way back
                                        (server -> client) when ``narrow_return``: an asymmetric path

``drop_frag_needed(router)`` makes that router's ICMP "fragmentation needed" vanish (nftables in its
``output`` chain): a path-MTU black hole. ``forget()`` clears what client and server learnt (a route
exception, ~10 minutes), so no earlier check hides anything from the next. The servers run in the server
namespace: a TLS server whose certificate chain fills several full-size segments, and aiosmtpd with
STARTTLS (tests/scenarios/mtu_servers.py).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.helpers.topology import ROOT, Topology, built_topology

TLS_PORT, SMTP_PORT, SILENT_PORT = 8443, 8025, 8444
R1_RETURN, R1_RETURN6 = "10.61.4.1", "fd61:4::1"  # r1's end of the return-only link
DROP_FRAG_NEEDED = """table inet pd {
  chain output {
    type filter hook output priority 0;
    icmp type destination-unreachable icmp code frag-needed drop
    icmpv6 type packet-too-big drop
  }
}
"""


@dataclass
class MtuNetwork:
    topology: Topology
    directory: Path
    ca_file: Path
    config: Path
    servers: subprocess.Popen[str]

    def forget(self) -> None:
        """Make both hosts forget every path MTU they learnt. A learnt path MTU lives ~10 minutes in a route
        exception on the host that received the ICMP (client or server) and shrinks later connections; a
        link taken down and up drops its routes with their exceptions (tests only). Routes are put back and
        the neighbours resolved again."""
        topology = self.topology
        for ns, dev, gateways in (
            (topology.client, "c0", ("10.61.1.1", "fd61:1::1")),
            (topology.server, "s0", ("10.61.3.1", "fd61:3::1")),
        ):
            topology.exec(ns, "ip", "link", "set", dev, "down")
            topology.exec(ns, "ip", "link", "set", dev, "up")
            topology.exec(ns, "ip", "route", "replace", "default", "via", gateways[0])
            topology.exec(ns, "ip", "-6", "route", "replace", "default", "via", gateways[1])
        topology.warm_up()

    def check(self, module: str, port: int, ipv6: bool = False) -> dict:
        from tests.helpers.topology import SERVER4, SERVER6, check_json

        target = f"[{SERVER6}]:{port}" if ipv6 else f"{SERVER4}:{port}"
        return check_json(self.topology, target, str(self.config), module)


def _narrow(topology: Topology, mtu: int) -> None:
    topology.exec(topology.r1, "ip", "link", "set", "b0", "mtu", str(mtu))
    topology.exec(topology.r2, "ip", "link", "set", "a0", "mtu", str(mtu))


def _narrow_return(topology: Topology, mtu: int) -> None:
    """A second r1–r2 link at ``mtu``; r2 sends everything for the client over it."""
    run = subprocess.run
    tag = topology.tag
    done = run(
        [
            "ip",
            "link",
            "add",
            f"{tag}v",
            "netns",
            topology.r1,
            "type",
            "veth",
            "peer",
            "name",
            f"{tag}w",
            "netns",
            topology.r2,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"veth for the return path: {done.stderr.strip()[:300]}")
    topology.exec(topology.r1, "ip", "link", "set", f"{tag}v", "name", "b1")
    topology.exec(topology.r2, "ip", "link", "set", f"{tag}w", "name", "a1")
    for ns, dev, address, address6 in (
        (topology.r1, "b1", f"{R1_RETURN}/24", f"{R1_RETURN6}/64"),
        (topology.r2, "a1", "10.61.4.2/24", "fd61:4::2/64"),
    ):
        topology.exec(ns, "ip", "link", "set", dev, "mtu", str(mtu), "up")
        topology.exec(ns, "ip", "addr", "add", address, "dev", dev)
        if mtu >= 1280:  # IPv6 needs links of at least 1280 bytes (RFC 8200)
            topology.exec(ns, "ip", "-6", "addr", "add", address6, "dev", dev, "nodad")
    # r1 receives the server's packets on b1 although its route to the server is via b0: no reverse-path filter.
    for key in ("all", "default", "b1", "b0"):
        topology.exec(topology.r1, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
    topology.exec(topology.r2, "ip", "route", "replace", "10.61.1.0/24", "via", R1_RETURN)
    if mtu >= 1280:
        topology.exec(topology.r2, "ip", "-6", "route", "replace", "fd61:1::/64", "via", R1_RETURN6)


@contextlib.contextmanager
def mtu_network(
    suffix: str,
    module_config: str,
    narrow: bool = False,
    narrow_return: bool = False,
    drop_frag_needed: tuple[str, ...] = (),
    mtu: int = 1200,
    client_ruleset: str = "",
) -> Iterator[MtuNetwork]:
    """A fresh network shaped as asked, the servers running, and the exporter's config written
    (``module_config``'s CA_FILE replaced by the test CA's path)."""
    firewalls = dict.fromkeys(drop_frag_needed, DROP_FRAG_NEEDED)
    if client_ruleset:
        firewalls["client"] = client_ruleset
    with built_topology(suffix, firewalls) as topology:
        if narrow:
            _narrow(topology, mtu)
        if narrow_return:
            _narrow_return(topology, mtu)
        directory = Path(tempfile.mkdtemp(prefix="mtu-"))
        os.chmod(directory, 0o755)
        ca_file = directory / "ca.pem"
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        servers = subprocess.Popen(
            ["ip", "netns", "exec", topology.server, sys.executable, str(ROOT / "tests/scenarios/mtu_servers.py")]
            + [str(ca_file), str(TLS_PORT), str(SMTP_PORT), str(SILENT_PORT)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert servers.stdout is not None
            line = servers.stdout.readline()  # the script prints "ready" once both servers listen
            if line.strip() != "ready":
                servers.kill()
                raise RuntimeError(f"the test servers did not start: {line!r} {servers.stderr.read()[-2000:]}")
            config = directory / "config.yml"
            config.write_text(module_config.replace("CA_FILE", str(ca_file)))
            topology.warm_up()
            yield MtuNetwork(topology, directory, ca_file, config, servers)
        finally:
            servers.kill()
            servers.wait(timeout=30)
            for path in sorted(directory.iterdir()):
                path.unlink()
            directory.rmdir()
