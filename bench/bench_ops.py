"""Numbers behind docs/operations.md: basic-auth cost with and without the verified-password cache,
history recording cost on the hot path, and status page render time. Prints a markdown table.

    python3 bench/bench_ops.py
"""

from __future__ import annotations

import asyncio
import base64
import statistics
import sys
import time
from pathlib import Path
from types import MappingProxyType

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bcrypt

from exporter.config.loader import Config, Module, TargetConfig
from exporter.core.address import parse_host_port
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probing.plan import build_plan
from exporter.service.history import ProbeHistory
from exporter.web import auth as webauth
from exporter.web.auth import BasicAuth
from exporter.web.statuspage import render_status_page


def timed(fn, repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return samples


def row(name: str, samples: list[float], per: int = 1, unit: str = "ms") -> str:
    scale = 1e3 if unit == "ms" else 1e6
    median = statistics.median(samples) / per * scale
    best = min(samples) / per * scale
    return f"| {name} | {median:,.3f} {unit} | {best:,.3f} {unit} | {len(samples)} |"


async def auth_numbers() -> list[str]:
    password = b"correct horse battery staple"
    hashed = bcrypt.hashpw(password, bcrypt.gensalt(10)).replace(b"$2b$", b"$2y$")
    header = "Basic " + base64.b64encode(b"alice:" + password).decode()
    out = []
    uncached = []
    for _ in range(10):
        auth = BasicAuth({"alice": hashed})  # a fresh cache: every verify runs bcrypt
        started = time.perf_counter()
        assert await auth.verify(header) == "alice"
        uncached.append(time.perf_counter() - started)
        auth.close()
    out.append(row("basic auth, bcrypt cost 10, first request (bcrypt runs)", uncached))
    runs = []
    real_checkpw = webauth.checkpw
    webauth.checkpw = lambda password, hashed: runs.append(1) or real_checkpw(password, hashed)
    auth = BasicAuth({"alice": hashed})
    await auth.verify(header)
    cached = []
    for _ in range(2000):
        started = time.perf_counter()
        await auth.verify(header)
        cached.append(time.perf_counter() - started)
    assert len(runs) == 1
    webauth.checkpw = real_checkpw
    auth.close()
    out.append(row("basic auth, same password again (remembered, HMAC + compare_digest)", cached, unit="µs"))
    return out


def plan_of(count: int):
    module = Module(name="tcp_connect", prober="tcp")
    targets = tuple(
        TargetConfig(parse_host_port(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:25"), "tcp_connect")
        for i in range(count)
    )
    return build_plan(Config(modules=MappingProxyType({"tcp_connect": module}), targets=targets, source="bench.yml"))


def results_for(count: int) -> list[ProbeResult]:
    out = []
    for i in range(count):
        ok = i % 4 != 0
        state = TcpState.OPEN if ok else TcpState.REFUSED
        out.append(
            ProbeResult(
                success=ok,
                state=state,
                tcp_state=state,
                connect_seconds=0.0004,
                duration_seconds=0.0005,
                detail="the port accepted the connection"
                if ok
                else "the host refused the connection (ECONNREFUSED (Connection refused) from x)",
                transcript=["Trying 10.0.0.1:25...", "Connected"],
            )
        )
    return out


def history_numbers() -> list[str]:
    out = []
    for count in (1_000, 10_000):
        plan = plan_of(count)
        results = results_for(count)
        history = ProbeHistory()
        out.append(
            row(
                f"history: record a scrape of {count:,} targets (per probe)",
                timed(lambda: history.record_scrape(plan.targets, results, time.time()), 50),
                per=count,
                unit="µs",
            )
        )
    history = ProbeHistory()
    address, module, result = plan_of(1).targets[0].address, Module("m", "tcp"), results_for(1)[0]
    out.append(
        row(
            "history: record one /probe result",
            timed(lambda: history.record_probe(address, module, result, 0.0), 20_000),
            unit="µs",
        )
    )
    return out


def render_numbers() -> list[str]:
    out = []
    for count in (1_000, 10_000):
        plan = plan_of(count)
        results = results_for(count)
        history = ProbeHistory()
        history.record_scrape(plan.targets, results, time.time())

        def render() -> int:
            return len(
                render_status_page(
                    version="bench",
                    config=plan.config,
                    rows=history.latest(plan.targets),
                    recent=history.recent,
                    failures=history.failures,
                )
            )

        size = render()
        out.append(row(f"status page render, {count:,} targets ({size / 1024:,.0f} KiB)", timed(render, 20)))
    return out


def main() -> None:
    print("| what | median | best | runs |")
    print("|---|---|---|---|")
    for line in asyncio.run(auth_numbers()) + history_numbers() + render_numbers():
        print(line)


if __name__ == "__main__":
    main()
