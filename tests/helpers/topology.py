"""A routed test network of four namespaces: client — r1 — r2 — server, IPv4 and IPv6.

Built with ``ip netns`` and veth pairs; every name carries "pd" and this process's pid so
concurrent sessions never collide, and ``Topology.close`` removes everything. Addresses are
private ones that exist only inside these namespaces; nothing here can reach another network.

    client 10.61.1.2 ── 10.61.1.1 r1 10.61.2.1 ── 10.61.2.2 r2 10.61.3.1 ── 10.61.3.2 server
           fd61:1::2    fd61:1::1    fd61:2::1    fd61:2::2    fd61:3::1    fd61:3::2
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers.eventually import eventually
from tests.helpers.unprivileged import Runtime, as_user

SERVER4, SERVER6 = "10.61.3.2", "fd61:3::2"
R1_4, R1_6 = "10.61.1.1", "fd61:1::1"  # r1 as the client sees it (the address its ICMP comes from)
R2_4, R2_6 = "10.61.2.2", "fd61:2::2"  # r2 as the client sees it
CLIENT4, CLIENT6 = "10.61.1.2", "fd61:1::2"


ROOT = Path(__file__).resolve().parents[2]
# Run in the client namespace: argv = repository, IPv4 and IPv6 address of the server. IP_RECVERR (11) /
# IPV6_RECVERR (25) queue the ICMP answer on the socket; MSG_ERRQUEUE (0x2000) reads it. A datagram is sent
# again each second (the server rate-limits its ICMP errors), and only while no answer came.
WARM_UP = """
import socket, sys, time
sys.path.insert(0, sys.argv[1])
from tests.helpers.eventually import eventually
for family, level, option, address in (
    (socket.AF_INET, socket.IPPROTO_IP, 11, sys.argv[2]), (socket.AF_INET6, socket.IPPROTO_IPV6, 25, sys.argv[3])
):
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(level, option, 1)
        sent = [0.0]

        def answered() -> bool:
            if time.monotonic() - sent[0] >= 1.0:
                sock.sendto(b"warm-up", (address, 9))
                sent[0] = time.monotonic()
            try:
                sock.recvmsg(512, 1024, 0x2000 | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return False
            return True

        eventually(answered, what=f"{address}'s port unreachable for a warm-up datagram", interval=0.02)
"""


def topology_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (ip netns) and load nftables rules"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian packages iproute2, nftables; .ci/run installs them)"
    return None


def run(*argv: str, check: bool = True, timeout: float = 30, input: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.strip()[:500]}")
    return done


@dataclass
class Topology:
    tag: str = field(default_factory=lambda: f"pd{os.getpid()}")
    created: list[str] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"{self.tag}{role}"

    @property
    def client(self) -> str:
        return self.ns("c")

    @property
    def r1(self) -> str:
        return self.ns("r1")

    @property
    def r2(self) -> str:
        return self.ns("r2")

    @property
    def server(self) -> str:
        return self.ns("s")

    def exec(
        self, role_ns: str, *argv: str, check: bool = True, timeout: float = 30, input: str | None = None
    ) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", role_ns, *argv, check=check, timeout=timeout, input=input)

    # (namespace role, device, IPv4, IPv6) of every link end, and the static routes: build applies
    # them, reset re-applies them (a link taken down loses its IPv6 addresses and its routes).
    def _ends(self) -> list[tuple[str, str, str, str]]:
        return [
            (self.client, "c0", "10.61.1.2/24", "fd61:1::2/64"),
            (self.r1, "a0", "10.61.1.1/24", "fd61:1::1/64"),
            (self.r1, "b0", "10.61.2.1/24", "fd61:2::1/64"),
            (self.r2, "a0", "10.61.2.2/24", "fd61:2::2/64"),
            (self.r2, "b0", "10.61.3.1/24", "fd61:3::1/64"),
            (self.server, "s0", "10.61.3.2/24", "fd61:3::2/64"),
        ]

    def _routes(self) -> list[tuple[str, ...]]:
        return [
            (self.client, "ip", "route", "replace", "default", "via", "10.61.1.1"),
            (self.client, "ip", "-6", "route", "replace", "default", "via", "fd61:1::1"),
            (self.r1, "ip", "route", "replace", "10.61.3.0/24", "via", "10.61.2.2"),
            (self.r1, "ip", "-6", "route", "replace", "fd61:3::/64", "via", "fd61:2::2"),
            (self.r2, "ip", "route", "replace", "10.61.1.0/24", "via", "10.61.2.1"),
            (self.r2, "ip", "-6", "route", "replace", "fd61:1::/64", "via", "fd61:2::1"),
            (self.server, "ip", "route", "replace", "default", "via", "10.61.3.1"),
            (self.server, "ip", "-6", "route", "replace", "default", "via", "fd61:3::1"),
        ]

    def build(self) -> Topology:
        try:
            for name in (self.client, self.r1, self.r2, self.server):
                run("ip", "netns", "add", name)
                self.created.append(name)
                self.exec(name, "ip", "link", "set", "lo", "up")
                self.exec(
                    name,
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.accept_dad=0",
                    "net.ipv6.conf.default.accept_dad=0",
                    "net.ipv6.conf.all.keep_addr_on_down=1",
                    "net.ipv6.conf.default.keep_addr_on_down=1",
                )
            for (left, left_dev, *_), (right, right_dev, *_) in zip(
                self._ends()[0::2], self._ends()[1::2], strict=False
            ):
                run(
                    "ip",
                    "link",
                    "add",
                    f"{self.tag}x",
                    "netns",
                    left,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    f"{self.tag}y",
                    "netns",
                    right,
                )
                self.exec(left, "ip", "link", "set", f"{self.tag}x", "name", left_dev)
                self.exec(right, "ip", "link", "set", f"{self.tag}y", "name", right_dev)
            for router in (self.r1, self.r2):
                self.exec(router, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
            self._apply()
        except BaseException:
            self.close()
            raise
        return self

    def _apply(self) -> None:
        for ns, dev, v4, v6 in self._ends():
            self.exec(ns, "ip", "link", "set", dev, "up")
            self.exec(ns, "ip", "addr", "replace", v4, "dev", dev)
            self.exec(ns, "ip", "-6", "addr", "replace", v6, "dev", dev, "nodad")
        for ns, *argv in self._routes():
            self.exec(ns, *argv)

    def warm_up(self) -> None:
        """Resolve every neighbour once (ARP/ND), so a first probe is not lost to a pending lookup: done when
        the server's answer to a datagram for its closed port 9 (port unreachable) is back, per family."""
        self.exec(self.client, sys.executable, "-c", WARM_UP, str(ROOT), SERVER4, SERVER6, timeout=120)

    def nft(self, role_ns: str, ruleset: str) -> None:
        """Replace the test table of one namespace with ``ruleset`` (a full ``table inet pd { … }``)."""
        self.exec(role_ns, "nft", "delete", "table", "inet", "pd", check=False)
        if ruleset.strip():
            self.exec(role_ns, "nft", "-f", "-", input=ruleset)

    def reset(self) -> None:
        """Back to the plain topology: no firewall rules, links up, default ICMP rate limits."""
        for name in (self.client, self.r1, self.r2, self.server):
            self.exec(name, "nft", "delete", "table", "inet", "pd", check=False)
        self.exec(
            self.r2,
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=1000",
            "net.ipv4.icmp_msgs_per_sec=1000",
            "net.ipv4.icmp_msgs_burst=50",
            "net.ipv6.icmp.ratelimit=1000",
        )
        self._apply()
        for name in (self.client, self.r1, self.r2):  # forget neighbours that failed while a link was down
            self.exec(name, "ip", "neigh", "flush", "all", check=False)
            self.exec(name, "ip", "-6", "neigh", "flush", "all", check=False)

    def close(self) -> None:
        while self.created:
            run("ip", "netns", "del", self.created.pop(), check=False)


@contextlib.contextmanager
def built_topology(suffix: str = "", firewalls: dict[str, str] | None = None) -> Iterator[Topology]:
    """A fresh client — r1 — r2 — server topology with ``firewalls`` ({role: nft ruleset}) applied and
    neighbours warmed up, removed afterwards; the test is skipped, with the reason, where it cannot be built."""
    reason = topology_unavailable_reason()
    if reason:
        pytest.skip(reason)
    topology = Topology(tag=Topology().tag + suffix).build()
    try:
        for role, ruleset in (firewalls or {}).items():
            topology.nft(getattr(topology, role), ruleset)
        if firewalls:
            topology.warm_up()
        yield topology
    finally:
        topology.close()


def in_client(
    topology: Topology, *argv: str, timeout: float = 120, runtime: Runtime | None = None
) -> subprocess.CompletedProcess:
    """Run ``python ARGV`` in the client namespace; with a ``runtime``, as its unprivileged user (no capability
    at all) with the interpreter and readable copy of the exporter it provides."""
    prefix = ["ip", "netns", "exec", topology.client]
    if runtime is None:
        command, env, cwd = [*prefix, sys.executable, *argv], dict(os.environ, PYTHONPATH=str(ROOT)), ROOT
    else:
        command, env, cwd = [*prefix, *as_user(runtime.python, *argv)], runtime.environ(), runtime.root
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)


def check_json(topology: Topology, target: str, config: str, module: str = "diag") -> dict:
    import json

    done = in_client(topology, "-m", "exporter", "check", "--json", "--config.file", config, "--module", module, target)
    if done.returncode not in (0, 1):
        raise AssertionError(f"check {target} failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    if not done.stdout:
        raise AssertionError(f"check {target}: no output ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def check_text(topology: Topology, target: str, config: str, module: str = "diag") -> str:
    done = in_client(topology, "-m", "exporter", "check", "--config.file", config, "--module", module, target)
    if done.returncode not in (0, 1):
        raise AssertionError(f"check {target} failed ({done.returncode}): {done.stdout}\n{done.stderr}")
    return done.stdout


FETCH = (
    "import sys, urllib.request\n"
    "request = urllib.request.Request(sys.argv[1], headers={'X-Prometheus-Scrape-Timeout-Seconds': sys.argv[2]})\n"
    "sys.stdout.write(urllib.request.urlopen(request, timeout=120).read().decode())\n"
)


class ClientExporter:
    """The exporter serving inside the client namespace on 127.0.0.1:``port``."""

    def __init__(self, topology: Topology, config: str, port: int = 19115):
        self.topology, self.port = topology, port
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                topology.client,
                sys.executable,
                "-m",
                "exporter",
                "--config.file",
                config,
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )

        def ready() -> bool:
            if self.process.poll() is not None:
                raise RuntimeError(f"the exporter exited: {self.process.stderr.read()[:2000]}")
            return in_client(topology, "-c", FETCH, f"http://127.0.0.1:{port}/-/ready", "5", timeout=30).returncode == 0

        try:
            eventually(ready, what=f"the exporter in the client namespace to serve on port {port}")
        except BaseException:
            self.close()
            raise

    def get(self, path: str, scrape_timeout: float = 10) -> str:
        done = in_client(self.topology, "-c", FETCH, f"http://127.0.0.1:{self.port}{path}", str(scrape_timeout))
        if done.returncode != 0:
            raise AssertionError(f"GET {path} failed: {done.stderr[-2000:]}")
        return done.stdout

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=20)
