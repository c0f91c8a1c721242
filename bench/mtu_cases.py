"""What tcp.mtu_check costs and finds, per case, on the routed test network (needs root).

    sudo .venv/bin/python bench/mtu_cases.py [--ipv6] [--rounds N]

For every case of tests/test_mtu_paths.py (a clean path, a narrow middle link, a black hole toward and
from the server) and both kinds of module (tcp with TLS; SMTP with STARTTLS), a fresh network is built
(nothing learnt carries over) and ``check --json`` runs once with ``mtu_check`` on and once with it off.
An nftables counter in the client namespace counts the packets the client sent to the server (TCP and
UDP); the difference is the check's real cost in packets, beside what the check itself accounts
(``extra_packets``, which leaves out a repeated small-MSS exchange). Prints a markdown table.
Network: only the namespaces this script creates (addresses 10.61.0.0/16, fd61::/16 inside them).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.helpers.mtu_network import SMTP_PORT, TLS_PORT, mtu_network

CONFIG = """modules:
  tls_mtu:
    prober: tcp
    timeout: 10s
    tcp: {tls: true, tls_config: {ca_file: CA_FILE, server_name: tls.test}, mtu_check: CHECK}
  smtp_mtu:
    prober: smtp
    timeout: 10s
    tcp: {mtu_check: CHECK}
    smtp: {starttls: required, tls_config: {ca_file: CA_FILE, server_name: mx.test}}
"""
COUNTER = """table inet pd {
  counter sent { }
  chain output {
    type filter hook output priority 0;
    ip daddr 10.61.3.2 counter name sent
    ip6 daddr fd61:3::2 counter name sent
  }
}
"""
CASES = {
    "clean path": {},
    "narrow link, ICMP passes": {"narrow": True},
    "r1 drops its frag-needed": {"narrow": True, "drop_frag_needed": ("r1",)},
    "narrow return path, r2 drops": {"narrow_return": True, "drop_frag_needed": ("r2",)},
}
MODULES = {"tls_mtu": TLS_PORT, "smtp_mtu": SMTP_PORT}


def run_once(shape: dict, module: str, check: bool, ipv6: bool) -> tuple[dict, int]:
    config = CONFIG.replace("CHECK", "true" if check else "false")
    with mtu_network("bn", config, mtu=1280 if ipv6 else 1200, client_ruleset=COUNTER, **shape) as network:
        topology = network.topology
        before = _count(topology)
        document = network.check(module, MODULES[module], ipv6=ipv6)
        return document, _count(topology) - before


def _count(topology) -> int:
    text = topology.exec(topology.client, "nft", "list", "counter", "inet", "pd", "sent").stdout
    match = re.search(r"packets (\d+)", text)
    return int(match.group(1)) if match else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ipv6", action="store_true")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    print(
        "| case | module | state | path MTU | reported by | tested | probe s (check on / off) | check s | packets sent (on / off) | extra (accounted) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case, shape in CASES.items():
        for module in MODULES:
            on = [run_once(shape, module, True, args.ipv6) for _ in range(args.rounds)]
            off = [run_once(shape, module, False, args.ipv6) for _ in range(args.rounds)]
            mtu = on[-1][0]["mtu"] or {}
            probe_on = statistics.median(doc["duration_seconds"] for doc, _ in on)
            probe_off = statistics.median(doc["duration_seconds"] for doc, _ in off)
            check_s = statistics.median((doc["mtu"] or {}).get("seconds", 0.0) for doc, _ in on)
            sent_on = statistics.median(count for _, count in on)
            sent_off = statistics.median(count for _, count in off)
            print(
                f"| {case} | {module} | {mtu.get('state')} | {mtu.get('path_mtu')} | {mtu.get('reported_by') or '—'} | "
                f"{', '.join(mtu.get('tested', []))} | {probe_on:.3f} / {probe_off:.3f} | {check_s:.3f} | "
                f"{sent_on:g} / {sent_off:g} | {mtu.get('extra_packets')} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
