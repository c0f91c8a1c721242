"""Scenarios run by tests/helpers/netns.py inside ``unshare -n``; each prints one JSON line.

They drive the real HTTP app (aiohttp test server on lo) against real nftables rules.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time

import aiohttp
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

from exporter.config.loader import parse_config
from exporter.web.app import create_app
from tests.helpers.descriptors import open_fds
from tests.helpers.eventually import eventually
from tests.helpers.metrics_text import samples

FIREWALL = """
table inet test {
  chain input {
    type filter hook input priority 0;
    tcp dport 9001 drop
    tcp dport 9002 reject with tcp reset
    tcp dport 9003 reject with icmpx type admin-prohibited
    tcp dport 9004 reject with icmpx type host-unreachable
    tcp dport 9007 reject with icmpx type no-route
    tcp dport 9008 reject with icmpx type port-unreachable
    tcp dport 10000-10999 drop
    tcp dport 9010 counter drop
  }
  chain output {
    type filter hook output priority 0;
    tcp dport 9009 drop
  }
}
"""


def setup_network() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["nft", "-f", "-"], input=FIREWALL, text=True, check=True)


def per_target(text: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for (name, labels), value in samples(text).items():
        labels = dict(labels)
        if "target" not in labels:
            continue
        entry = out.setdefault(labels["target"], {})
        if name == "probe_tcp_state" and value == 1:
            entry["state"] = labels["state"]
        elif name in ("probe_tcp_connect_duration_seconds", "probe_success", "probe_ip_protocol"):
            entry[name] = value
    return out


async def scrape(config_text: str, scrape_timeout: float) -> tuple[str, float]:
    app = create_app(parse_config(config_text), registry=CollectorRegistry())
    async with TestClient(TestServer(app, host="127.0.0.1")) as client:
        started = time.monotonic()
        response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": str(scrape_timeout)})
        text = await response.text()
        return text, time.monotonic() - started


def firewall_matrix() -> dict:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 9005))
    listener.listen(16)
    targets = [f"127.0.0.1:{port}" for port in (9001, 9002, 9003, 9004, 9005, 9006, 9007, 9008, 9009)]
    targets.append("no-such-host.invalid:25")
    v6 = socket.socket(socket.AF_INET6)
    try:
        v6.bind(("::1", 9005))
        v6.listen(16)
        targets.append("[::1]:9005")
    except OSError:
        pass
    lines = "\n".join(f"  - {{target: '{t}', module: tcp_connect}}" for t in targets)
    try:
        text, elapsed = asyncio.run(
            scrape(
                f"""
modules: {{tcp_connect: {{prober: tcp, timeout: 1s}}}}
targets:
{lines}
""",
                10,
            )
        )
    finally:
        listener.close()
        v6.close()
    return {"targets": per_target(text), "elapsed": elapsed}


def deadline_1000() -> dict:
    targets = "\n".join(f"  - {{target: '127.0.0.1:{port}', module: tcp_connect}}" for port in range(10000, 11000))
    config = f"""
modules: {{tcp_connect: {{prober: tcp, timeout: 30s}}}}
targets:
{targets}
"""

    async def run() -> dict:
        app = create_app(parse_config(config), registry=CollectorRegistry())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await client.get("/-/healthy")  # open the keep-alive connection before counting fds
            before = open_fds()
            tasks_before = len(asyncio.all_tasks())
            started = time.monotonic()
            response = await client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "2.5"})
            text = await response.text()
            elapsed = time.monotonic() - started
            after = open_fds()
            tasks_after = len(asyncio.all_tasks())
        states = per_target(text)
        return {
            "status": response.status,
            "elapsed": elapsed,
            "fds_before": before,
            "fds_after": after,
            "states": sorted({entry.get("state", "missing") for entry in states.values()}),
            "count": len(states),
            "tasks_before": tasks_before,
            "tasks_after": tasks_after,
            "min_connect": min(
                e["probe_tcp_connect_duration_seconds"]
                for e in states.values()
                if "probe_tcp_connect_duration_seconds" in e
            ),
        }

    return asyncio.run(run())


def counted_syns() -> int:
    """Packets the ``counter drop`` rule for port 9010 has seen (the probes' SYNs)."""
    ruleset = subprocess.run(["nft", "-j", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    rules = [item["rule"] for item in json.loads(ruleset)["nftables"] if "rule" in item]
    return sum(expr["counter"]["packets"] for rule in rules for expr in rule["expr"] if "counter" in expr)


def overlap() -> dict:
    """Two overlapping scrapes of one filtered target: one SYN, one shared result."""
    # Under the kernel's 1 s initial SYN retransmission (a retransmit would count as a second SYN), and long
    # enough for the second request to arrive once the first SYN has been seen.
    config = """
modules: {tcp_connect: {prober: tcp, timeout: 700ms}}
targets:
  - {target: '127.0.0.1:9010', module: tcp_connect}
"""

    async def run() -> dict:
        app = create_app(parse_config(config), registry=CollectorRegistry())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            first = asyncio.ensure_future(client.get("/metrics"))

            async def syns() -> int:
                return await asyncio.to_thread(counted_syns)

            # The second request arrives while the first probe is in flight: its SYN has been dropped.
            await eventually(syns, until=lambda n: n >= 1, what="the first probe's SYN at the firewall")
            second = asyncio.ensure_future(client.get("/probe", params={"target": "127.0.0.1:9010"}))
            texts = [await (await request).text() for request in (first, second)]
        return {
            "first": per_target(texts[0])["127.0.0.1:9010"],
            "second_state": [
                dict(lab)["state"] for (n, lab), v in samples(texts[1]).items() if n == "probe_tcp_state" and v == 1
            ],
            "second_connect": samples(texts[1])[("probe_tcp_connect_duration_seconds", frozenset())],
        }

    result = asyncio.run(run())
    result["syn_packets"] = counted_syns()
    return result


def faults() -> dict:
    """A resolver that never answers, and a destination with no route."""
    # A UDP "DNS server" on loopback that reads queries and never replies.
    silent_dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent_dns.bind(("127.0.0.53", 53))
    with open("/tmp/netns-resolv.conf", "w") as handle:
        handle.write("nameserver 127.0.0.53\noptions timeout:2 attempts:1\n")
    subprocess.run(["mount", "--make-rprivate", "/"], check=True)
    subprocess.run(["mount", "--bind", "/tmp/netns-resolv.conf", "/etc/resolv.conf"], check=True)
    config = """
modules: {tcp_connect: {prober: tcp, timeout: 500ms}}
targets:
  - {target: 'slow-dns.example:25', module: tcp_connect}
  - {target: '192.0.2.1:25', module: tcp_connect}
"""
    # 192.0.2.1 is TEST-NET-1 (RFC 5737); the namespace has no route to it, so connect() fails locally.
    try:
        text, elapsed = asyncio.run(scrape(config, 10))
    finally:
        silent_dns.close()
    result = per_target(text)
    result["elapsed"] = elapsed
    return result


def emfile() -> dict:
    """Probes hitting the file descriptor limit are 'error', and the exporter keeps serving."""
    import resource

    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))  # inside the namespace: answers all of 127.0.0.0/8 and nothing else
    listener.listen(512)
    port = listener.getsockname()[1]
    targets = "\n".join(f"  - {{target: '127.0.0.{i}:{port}', module: tcp_connect}}" for i in range(1, 201))
    config = parse_config(f"""
modules: {{tcp_connect: {{prober: tcp, timeout: 2s}}}}
targets:
{targets}
""")

    async def run() -> dict:
        app = create_app(config, registry=CollectorRegistry())
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            await client.get("/-/healthy")
            # Leave room for only a few probe sockets: connects start a few per event-loop iteration
            # and loopback ones finish at once, so only about a dozen are ever open together.
            resource.setrlimit(resource.RLIMIT_NOFILE, (open_fds() + 4, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            starved = per_target(await (await client.get("/metrics")).text())
            resource.setrlimit(resource.RLIMIT_NOFILE, (4096, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
            healthy = (await client.get("/-/healthy")).status
            recovered = per_target(await (await client.get("/metrics")).text())

        def counts(states):
            return {
                s: sum(1 for e in states.values() if e["state"] == s) for s in {e["state"] for e in states.values()}
            }

        return {"starved": counts(starved), "healthy": healthy, "recovered": counts(recovered)}

    try:
        return asyncio.run(run())
    finally:
        listener.close()


ACCEPT_AND_CLOSE = """
import socket, sys
listener = socket.socket()
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", int(sys.argv[1])))
listener.listen(4096)
while True:
    listener.accept()[0].close()
"""


def rss_kib() -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith("VmRSS:"))


def soak(total_probes: int) -> dict:
    """Many probes of mixed outcomes through repeated scrapes: no fd, task or memory growth."""
    # A separate process accepts and closes, so the backlog never fills and its sockets are not ours.
    acceptor = subprocess.Popen([sys.executable, "-c", ACCEPT_AND_CLOSE, "9005"])

    def accepts() -> bool:
        if acceptor.poll() is not None:
            raise RuntimeError(f"the acceptor exited with {acceptor.returncode}")
        socket.create_connection(("127.0.0.1", 9005), timeout=2).close()
        return True

    eventually(accepts, what="the acceptor on port 9005", ignoring=(OSError,))

    # Per 1,000 targets: open, refused (reset and closed), unreachable, timeout, dns_error.
    kinds = [(9005, "open"), (9002, "refused"), (9006, "refused"), (9003, "unreachable"), (9001, "timeout")]
    lines = [f"  - {{target: '127.{i // 250}.{i % 250}.1:{kinds[i % 5][0]}', module: tcp_connect}}" for i in range(990)]
    lines += [f"  - {{target: 'missing-{i}.invalid:1', module: tcp_connect}}" for i in range(10)]
    config = parse_config("modules: {tcp_connect: {prober: tcp, timeout: 100ms}}\ntargets:\n" + "\n".join(lines))

    async def run() -> dict:
        app = create_app(config, registry=CollectorRegistry())
        states: dict[str, int] = {}
        rss = []
        # A plain ClientSession: aiohttp's TestClient keeps every response it returned, which would
        # look like a leak of ~1 MB per scrape.
        async with TestServer(app, host="127.0.0.1") as server, aiohttp.ClientSession(server.make_url("")) as client:
            await client.get("/-/healthy")
            scrapes = total_probes // len(lines)
            for index in range(scrapes):
                async with client.get("/metrics", headers={"X-Prometheus-Scrape-Timeout-Seconds": "5"}) as response:
                    text = await response.text()
                if index == 0:
                    fds_before, tasks_before = open_fds(), len(asyncio.all_tasks())
                    for entry in per_target(text).values():
                        states[entry["state"]] = states.get(entry["state"], 0) + 1
                rss.append(rss_kib())
            fds_after, tasks_after = open_fds(), len(asyncio.all_tasks())
        return {
            "probes": scrapes * len(lines),
            "states": states,
            "fds_before": fds_before,
            "fds_after": fds_after,
            "tasks_before": tasks_before,
            "tasks_after": tasks_after,
            "rss_kib": rss,
        }

    try:
        return asyncio.run(run())
    finally:
        acceptor.kill()
        acceptor.wait()


if __name__ == "__main__":
    setup_network()
    result = {
        "emfile": emfile,
        "firewall_matrix": firewall_matrix,
        "deadline_1000": deadline_1000,
        "overlap": overlap,
        "faults": faults,
        "soak": lambda: soak(int(sys.argv[2])),
    }[sys.argv[1]]()
    print(json.dumps(result))
