"""A mail lab in a network namespace: a real DNS server (Debian's dnsmasq) serving test zones,
reached through the normal resolver configuration, and room for SMTP servers on distinct addresses.

``ip netns add mdPID`` gets ``lo`` with documentation addresses (192.0.2.0/24, only inside this
namespace); ``/etc/netns/mdPID/resolv.conf`` points at dnsmasq, and ``ip netns exec`` makes it the
``/etc/resolv.conf`` of every process run there. Everything is removed by ``close()``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.helpers.eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
DNS_ADDRESS = "192.0.2.53"


def lab_unavailable_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create a network namespace (ip netns) and run dnsmasq on port 53"
    for tool, package in (("ip", "iproute2"), ("dnsmasq", "dnsmasq-base")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}; .ci/run installs it)"
    return None


class MailLab:
    """One namespace; ``run``/``popen`` execute commands inside it."""

    def __init__(self, tmp_path: Path) -> None:
        self.name = f"md{os.getpid()}"
        self.tmp = tmp_path
        self.processes: list[subprocess.Popen] = []
        self.etc = Path("/etc/netns") / self.name
        self.addresses: list[str] = []

    # --- setup ---------------------------------------------------------------------------

    def create(self, addresses: list[str]) -> None:
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)  # a leftover of a killed run
        self._ip("netns", "add", self.name)
        self._ip("-n", self.name, "link", "set", "lo", "up")
        for address in [DNS_ADDRESS, *addresses]:
            self._ip(
                "-n",
                self.name,
                "addr",
                "add",
                f"{address}/{128 if ':' in address else 32}",
                "dev",
                "lo",
                *(["nodad"] if ":" in address else []),
            )
        self.addresses = addresses
        self.etc.mkdir(parents=True, exist_ok=True)
        (self.etc / "resolv.conf").write_text(f"nameserver {DNS_ADDRESS}\noptions timeout:2 attempts:1\n")

    def start_dns(self, *options: str) -> None:
        """dnsmasq with only the given records (``--mx-host=…``, ``--host-record=…``, ``--local=/test/``)."""
        self.popen(
            [
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--no-resolv",
                "--no-hosts",
                "--port=53",
                f"--listen-address={DNS_ADDRESS}",
                "--bind-interfaces",
                "--log-facility=-",
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.wait_for(
            f"import socket, dns.message, dns.query\n"
            f"dns.query.udp(dns.message.make_query('ready.invalid', 'A'), '{DNS_ADDRESS}', timeout=1)"
        )

    def wait_for(self, code: str) -> None:
        """Run ``code`` in the namespace until it succeeds (bounded)."""
        eventually(
            lambda: self.run([sys.executable, "-c", code], timeout=20),
            until=lambda done: done.returncode == 0,
            what=f"{code!r} to succeed in namespace {self.name}",
            interval=0.25,
        )

    # --- running things inside -------------------------------------------------------------

    def command(self, args: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *args]

    def popen(self, args: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(self.command(args), **kwargs)
        self.processes.append(process)
        return process

    def run(self, args: list[str], timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        return subprocess.run(
            self.command(args), capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, **kwargs
        )

    # --- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.processes):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        shutil.rmtree(self.etc, ignore_errors=True)

    @staticmethod
    def _ip(*args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError(f"ip {' '.join(args)} failed: {done.stderr.strip()}")
