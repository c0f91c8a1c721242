"""What a target costs on /metrics: series and bytes per target, for each prober and mode, side by side with
blackbox_exporter's tcp module and smokeping_prober, in one run.

    python3 bench/series_cost.py [--before REV] > bench/results/series-cost-DATE.json

Everything on loopback: one listener on 0.0.0.0:P answers every 127.x.y.z; a real SMTP server (aiosmtpd,
STARTTLS with a trustme certificate) in this process. The exporter under test is this checkout's; with
``--before REV`` the same cases run on that revision too (a temporary git worktree, removed afterwards), so
the table shows before and after from the same machine and minute. Series are counted per target from the
real /metrics (every sample carrying the target's ``case`` label); bytes are those samples' lines.
blackbox_exporter 0.23 (Debian) answers /probe for one target: all its series are that target's.
smokeping_prober (Debian) pings N loopback hosts (ICMP, --privileged); series with a ``host`` label count.
Prints JSON on stdout, a Markdown table on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import tools

WAIT = 60.0
CASES = (
    # (case, module, target template): {open} is the listener's port, {smtp} the SMTP server's.
    ("tcp, on scrape, IP literal", "tcp_connect", "127.0.4.1:{open}"),
    ("tcp, on scrape, by name", "tcp_connect", "localhost:{open}"),
    ("tcp, continuous, IP literal", "tcp_every_1s", "127.0.4.2:{open}"),
    ("tcp, continuous, by name", "tcp_every_1s", "localhost:{open}"),
    ("smtp STARTTLS, on scrape", "smtp_starttls", "127.0.0.1:{smtp}"),
    ("smtp STARTTLS, continuous", "smtp_every_1s", "127.0.0.1:{smtp}"),
)


def config_text(open_port: int, smtp_port: int, ca_file: Path) -> str:
    tls = f"{{ca_file: '{ca_file}', server_name: mx.test}}"
    smtp = f"{{starttls: required, ehlo: probe.example.com, tls_config: {tls}}}"
    targets = "\n".join(
        f"  - {{target: '{template.format(open=open_port, smtp=smtp_port)}', module: {module}, labels: {{case: '{case}'}}}}"
        for case, module, template in CASES
    )
    return (
        "modules:\n"
        "  tcp_connect: {prober: tcp, timeout: 2s}\n"
        "  tcp_every_1s: {prober: tcp, timeout: 2s, interval: 1s}\n"
        f"  smtp_starttls: {{prober: smtp, timeout: 5s, smtp: {smtp}}}\n"
        f"  smtp_every_1s: {{prober: smtp, timeout: 5s, interval: 1s, smtp: {smtp}}}\n"
        f"targets:\n{targets}\n"
    )


def per_case(body: str) -> dict[str, dict[str, float]]:
    """case -> {"series": n, "bytes": n} over the sample lines carrying that case's label."""
    out: dict[str, dict[str, float]] = {}
    for line in body.splitlines():
        if line.startswith("#") or 'case="' not in line:
            continue
        case = line.split('case="', 1)[1].split('"', 1)[0]
        entry = out.setdefault(case, {"series": 0, "bytes": 0})
        entry["series"] += 1
        entry["bytes"] += len(line) + 1
    return out


class SmtpServer:
    """aiosmtpd with STARTTLS on 127.0.0.1, in a thread with its own event loop."""

    def __init__(self, workdir: Path):
        import trustme
        from aiosmtpd.smtp import SMTP

        ca = trustme.CA()
        self.ca_file = workdir / "ca.pem"
        ca.cert_pem.write_to_path(str(self.ca_file))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert("mx.test", "127.0.0.1").configure_cert(context)

        class Sink:
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 OK"

        self.loop = asyncio.new_event_loop()
        server = self.loop.run_until_complete(
            self.loop.create_server(lambda: SMTP(Sink(), hostname="mx.test", tls_context=context), "127.0.0.1", 0)
        )
        self.port = server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def measure_exporter(repo: Path | None, open_port: int, smtp: SmtpServer, workdir: Path) -> dict[str, dict[str, float]]:
    port = tools_free_port()
    exporter = tools.start_exporter(config_text(open_port, smtp.port, smtp.ca_file), port, "auto", workdir, repo=repo)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            _, body, _ = tools.http_get(port, "/metrics")
            counts = per_case(body.decode())
            # Continuous targets probed a few times (every series written), SMTP done.
            ready = (
                all(case in counts for case, _, _ in CASES)
                and f'probe_success{{target="127.0.0.1:{smtp.port}"' in body.decode()
            )
            if ready and time.monotonic() > deadline - WAIT + 5 or time.monotonic() > deadline:
                return counts
            time.sleep(0.5)
    finally:
        exporter.stop()


def tools_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measure_blackbox(open_port: int, workdir: Path) -> dict[str, float] | None:
    binary = tools.blackbox_binary()
    if binary is None:
        return None
    port = tools_free_port()
    blackbox = tools.start_blackbox(binary, port, workdir)
    try:
        _, body, _ = tools.http_get(port, f"/probe?module=tcp_connect&target=127.0.4.1:{open_port}")
    finally:
        blackbox.stop()
    lines = [line for line in body.decode().splitlines() if line and not line.startswith("#")]
    return {
        "series": len(lines),
        "bytes": sum(len(line) + 1 for line in lines),
        "version": tools.version_of([binary, "--version"]),
    }


def measure_smokeping(hosts: int, workdir: Path) -> dict[str, float | str] | None:
    binary = shutil.which("prometheus-smokeping-prober") or shutil.which("smokeping_prober")
    if binary is None:
        return None
    port = tools_free_port()
    addresses = [f"127.0.5.{i}" for i in range(1, hosts + 1)]
    proc = tools.Proc(
        "smokeping_prober",
        [binary, "--privileged", "--ping.interval=1s", f"--web.listen-address=127.0.0.1:{port}", *addresses],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        tools.wait_ready(proc, port, "/metrics", seconds=60)
        time.sleep(5)  # a few pings each: every series written
        _, body, _ = tools.http_get(port, "/metrics")
    finally:
        proc.stop()
    lines = [line for line in body.decode().splitlines() if 'host="127.0.5.' in line and not line.startswith("#")]
    return {
        "series": len(lines) / hosts,
        "bytes": sum(len(line) + 1 for line in lines) / hosts,
        "version": tools.version_of([binary, "--version"]),
    }


def markdown(report: dict) -> str:
    after, before = report["after"], report.get("before") or {}
    rows = ["| target | series before | series after | bytes before | bytes after |", "|---|---|---|---|---|"]
    for case, _, _ in CASES:
        b, a = before.get(case, {}), after.get(case, {})
        rows.append(
            f"| {case} | {b.get('series', '–')} | {a.get('series', '–')} | {b.get('bytes', '–')} | {a.get('bytes', '–')} |"
        )
    for name in ("blackbox_exporter tcp_connect (/probe)", "smokeping_prober (per host)"):
        key = "blackbox" if name.startswith("blackbox") else "smokeping"
        other = report.get(key)
        if other:
            rows.append(f"| {name} | | {other['series']:g} | | {other['bytes']:.0f} |")
        else:
            rows.append(f"| {name} | | not installed | | |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", help="a git revision to measure too (e.g. the commit before issue 23)")
    parser.add_argument("--smokeping-hosts", type=int, default=10)
    args = parser.parse_args()
    report: dict = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    with tools.scratch_dir() as scratch, socket.socket() as listener:
        workdir = Path(scratch)
        listener.bind(("0.0.0.0", 0))
        listener.listen(1024)
        open_port = listener.getsockname()[1]
        smtp = SmtpServer(workdir)
        try:
            report["after"] = measure_exporter(None, open_port, smtp, workdir)
            if args.before:
                old = Path(tempfile.mkdtemp(prefix="series-before-"))
                subprocess.run(
                    ["git", "-C", str(tools.REPO), "worktree", "add", "--detach", str(old), args.before],
                    check=True,
                    capture_output=True,
                )
                try:
                    report["before_revision"] = args.before
                    report["before"] = measure_exporter(old, open_port, smtp, workdir)
                finally:
                    subprocess.run(
                        ["git", "-C", str(tools.REPO), "worktree", "remove", "--force", str(old)],
                        check=False,
                        capture_output=True,
                    )
        finally:
            smtp.stop()
        report["blackbox"] = measure_blackbox(open_port, workdir)
        report["smokeping"] = measure_smokeping(args.smokeping_hosts, workdir)
    print(markdown(report), file=sys.stderr)
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
