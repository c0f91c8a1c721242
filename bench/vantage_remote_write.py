"""What one site costs the central Prometheus: series per target and remote-write bytes per sample, with the
shipped deploy/vantage/site-agent.yml (its queue_config) at realistic scrape intervals and target counts.

    sudo python3 bench/vantage_remote_write.py [--seconds 120] [--interval 15s] [--targets 10,100,1000]

Starts one central Prometheus (remote-write receiver) and, per target count, one exporter and one agent-mode
Prometheus with its own `vantage` name, all at once, in a private network namespace (``unshare -n``, only
``lo``; so it needs root). Targets are distinct addresses 127.x.y.z answered by one listener.
After ``--seconds`` it reads each agent's prometheus_remote_storage_bytes_total / samples_total and the series
per target stored centrally, and prints a markdown table. Not part of the test suite; docs/integration.md
quotes a run.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from exporter.core.durations import parse_duration
from tests.helpers.e2e_stack import Processes, binary, free_port, readdress, wait_until_ready
from tests.scenarios.vantage import VANTAGE, agent_metric_at, query


def listener() -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("0.0.0.0", 0))  # inside the private namespace: answers every 127.x.y.z
    sock.listen(1024)

    def serve():
        while True:
            connection, _ = sock.accept()
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    return sock.getsockname()[1]


def run(seconds: float, interval: str, counts: list[int], workdir: Path) -> list[dict]:
    port = listener()
    timeout = interval if parse_duration(interval) < 10 else "10s"
    with Processes(workdir) as processes:
        deadline = time.monotonic() + 60
        central_port = free_port()
        central = yaml.safe_load((VANTAGE / "central.yml").read_text())
        central["rule_files"] = [str(VANTAGE / "rules" / "vantage.rules.yml")]
        central.pop("alerting")
        readdress(central, {"localhost:9090": f"127.0.0.1:{central_port}"})
        (workdir / "central.yml").write_text(yaml.safe_dump(central, sort_keys=False))
        processes.start(
            "central",
            [
                binary("prometheus"),
                f"--config.file={workdir / 'central.yml'}",
                f"--storage.tsdb.path={workdir / 'central'}",
                "--log.level=warn",
                f"--web.listen-address=127.0.0.1:{central_port}",
                "--web.enable-remote-write-receiver",
            ],
            cwd=workdir,
        )
        base = f"http://127.0.0.1:{central_port}"
        wait_until_ready(f"{base}/-/ready", processes, deadline)
        agents = {}
        for count in counts:
            name = f"t{count}"
            targets = [f"127.{1 + i // 62500}.{i // 250 % 250}.{i % 250 + 1}:{port}" for i in range(count)]
            config = workdir / f"{name}.yml"
            config.write_text(
                "modules:\n  tcp_connect: {prober: tcp, timeout: 2s}\ntargets:\n"
                + "".join(f"  - {{target: '{t}', module: tcp_connect}}\n" for t in targets)
            )
            exporter_port, agent_port = free_port(), free_port()
            processes.start(
                f"exporter-{name}",
                [
                    sys.executable,
                    "-m",
                    "exporter",
                    f"--config.file={config}",
                    f"--web.listen-address=127.0.0.1:{exporter_port}",
                    f"--probe.vantage={name}",
                    "--log.level=warn",
                ],
            )
            agent = yaml.safe_load((VANTAGE / "site-agent.yml").read_text())
            agent["global"].update(scrape_interval=interval, scrape_timeout=timeout, external_labels={"vantage": name})
            readdress(
                agent,
                {
                    "localhost:9816": f"127.0.0.1:{exporter_port}",
                    "central-prometheus:9090": f"127.0.0.1:{central_port}",
                },
            )
            (workdir / f"agent-{name}.yml").write_text(yaml.safe_dump(agent, sort_keys=False))
            processes.start(
                f"agent-{name}",
                [
                    binary("prometheus"),
                    "--enable-feature=agent",
                    f"--config.file={workdir / f'agent-{name}.yml'}",
                    f"--storage.agent.path={workdir / f'agent-{name}'}",
                    f"--web.listen-address=127.0.0.1:{agent_port}",
                    "--log.level=warn",
                ],
                cwd=workdir,
            )
            agents[count] = (name, f"http://127.0.0.1:{agent_port}")
        for _, url in agents.values():
            wait_until_ready(f"{url}/-/ready", processes, deadline)
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            processes.check_alive()
            time.sleep(1)
        rows = []
        for count, (name, url) in agents.items():
            sent = agent_metric_at(url, "prometheus_remote_storage_bytes_total")
            samples = agent_metric_at(url, "prometheus_remote_storage_samples_total")
            per_target = query(
                base, f'count({{vantage="{name}", target="{targets_first(count, port)}", __name__!~".*:.*"}})'
            )
            per_site = query(base, f'count({{vantage="{name}", job="connectivity", __name__!~"ALERTS.*"}})')
            rows.append(
                {
                    "targets": count,
                    "series_per_target": int(per_target[0]["value"][1]) if per_target else 0,
                    "series_per_site": int(per_site[0]["value"][1]) if per_site else 0,
                    "samples": samples,
                    "bytes": sent,
                    "bytes_per_sample": sent / samples if samples else 0,
                }
            )
        return rows


def targets_first(count: int, port: int) -> str:
    return f"127.1.0.1:{port}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--interval", default="15s")
    parser.add_argument("--targets", default="10,100,1000")
    args = parser.parse_args()
    if not os.environ.get("VP_BENCH_NETNS"):
        if os.geteuid() != 0:
            print("needs root: it runs in a private network namespace (unshare -n)", file=sys.stderr)
            return 2
        env = dict(os.environ, VP_BENCH_NETNS="1")
        return subprocess.call(["unshare", "-n", sys.executable, *sys.argv], env=env)
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    counts = [int(c) for c in args.targets.split(",")]
    with tempfile.TemporaryDirectory(prefix="vp-bench-") as workdir:
        rows = run(args.seconds, args.interval, counts, Path(workdir))
    print(f"\nscrape interval {args.interval}, {args.seconds:g} s, shipped queue_config\n")
    print("| targets per site | series per target | series per site | samples sent | bytes sent | bytes/sample |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['targets']} | {row['series_per_target']} | {row['series_per_site']} | {row['samples']:.0f} "
            f"| {row['bytes']:.0f} | {row['bytes_per_sample']:.2f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
