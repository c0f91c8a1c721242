"""``connectivity-exporter check TARGET``: one probe now, explained for a person (better than telnet).

Exit codes: 0 the probe succeeded, 1 it failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys

from exporter.cli.usage import OneLineArgumentParser
from exporter.config.loader import ConfigError, Module, default_port, load_config, parse_config, unsupported_reason
from exporter.core.address import AddressError, HostPort, parse_host_port
from exporter.core.deadline import Deadline
from exporter.core.durations import format_duration
from exporter.core.logs import setup_logging
from exporter.core.transcript import printable
from exporter.pathdiag.render import path_json
from exporter.pathdiag.trace import DEFAULT_SETTINGS as PATH_SETTINGS
from exporter.probers.connect.addresses import to_json as addresses_json
from exporter.probers.connect.dial import EXPLANATIONS, TIMEOUT_CAUSES
from exporter.probers.connect.mtu_report import mtu_json
from exporter.probers.connect.resolve import Resolver
from exporter.probers.connect.result import ProbeResult, TcpState
from exporter.probing.diagnose import diagnosable, diagnose_inline
from exporter.probing.report import details_lines, path_lines
from exporter.probing.runner import ProbeRunner

EXIT_SUCCESS, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2
DEFAULT_MODULE = "tcp_connect"
# Usable without any config file.
BUILTIN_MODULES = {
    "tcp_connect": "{prober: tcp, timeout: 5s}",
    "smtp_banner": "{prober: smtp, timeout: 10s}",
}


class UsageError(Exception):
    """Exit 2 with these lines on stderr."""

    def __init__(self, *lines: str):
        super().__init__("\n".join(lines))
        self.lines = lines


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="connectivity-exporter check",
        description="Probe one target now and explain the outcome: a telnet-like transcript, a verdict in "
        "plain words and its likely causes. Exit 0 on success, 1 on failure, 2 on a usage or "
        "configuration error.",
    )
    parser.add_argument("target", metavar="TARGET", help="HOST:PORT ([IPv6]:PORT)")
    parser.add_argument(
        "--module",
        default=DEFAULT_MODULE,
        help=f"module to probe with (default: {DEFAULT_MODULE}; built in without a config "
        f"file: {', '.join(BUILTIN_MODULES)})",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        metavar="PATH",
        help="take modules from this configuration file (built-in ones stay available)",
    )
    parser.add_argument("--json", action="store_true", help="print the full result as JSON")
    parser.add_argument(
        "--no-diagnose",
        dest="diagnose",
        action="store_false",
        help="skip the path diagnosis (TCP traceroute and UDP probes of the host, up to "
        f"{PATH_SETTINGS.max_packets} packets and {PATH_SETTINGS.max_seconds:g} s)",
    )
    return parser


def builtin_module(name: str) -> Module:
    text = f"modules:\n  {name}: {BUILTIN_MODULES[name]}\n"
    return parse_config(text, source=f"<built-in module {name}>", blackbox=False).modules[name]


def find_module(name: str, config_file: str | None) -> Module:
    modules: dict[str, Module] = {}
    if config_file is not None:
        try:
            config = load_config(config_file)
        except ConfigError as exc:
            raise UsageError(*exc.errors) from None
        modules = dict(config.modules)
        if name in config.unsupported_modules:  # a blackbox_exporter module of another prober
            raise UsageError(
                f"connectivity-exporter check: {unsupported_reason(name, config.unsupported_modules[name])}"
            )
    if name in modules:
        return modules[name]
    if name in BUILTIN_MODULES:
        return builtin_module(name)
    known = sorted(set(modules) | set(BUILTIN_MODULES))
    raise UsageError(f"connectivity-exporter check: unknown module {name!r} (available: {', '.join(known)})")


async def run_probe(address: HostPort, module: Module, diagnose: bool = False) -> ProbeResult:
    resolver = Resolver(max_workers=2)
    try:
        runner = ProbeRunner(resolver, max_concurrency=1)
        result = await runner.probe(address, module, Deadline.after(module.timeout))
    finally:
        resolver.close()
    if diagnose and diagnosable(result):  # inline, within its own budget
        await diagnose_inline(
            result,
            address.port,
            asyncio.get_running_loop().time() + PATH_SETTINGS.max_seconds,
            source=module.tcp.source_ip_address,
        )
    return result


def verdict(result: ProbeResult, module: Module) -> str:
    """What happened, in plain words, with the likely causes."""
    if result.tcp_state is TcpState.TIMEOUT and result.state == TcpState.TIMEOUT:
        waited = "before the scrape deadline" if result.cut_at_deadline else f"within {format_duration(module.timeout)}"
        return f"nothing answered {waited}: {TIMEOUT_CAUSES}"
    return result.detail or EXPLANATIONS.get(result.tcp_state, "")


def human_report(address: HostPort, module: Module, result: ProbeResult) -> str:
    lines = [
        f"Probing {address} with module {module.name} (prober {module.prober}, "
        f"timeout {format_duration(module.timeout)})",
        "",
    ]
    lines += [printable(line) for line in result.transcript]
    lines.append("")
    outcome = "SUCCESS" if result.success else "FAILURE"
    lines.append(
        f"{outcome}: {result.state}"
        + ("" if result.state == result.tcp_state else f" (TCP: {result.tcp_state})")
        + ("" if result.addresses is None else f" (every address: {result.addresses.state})")
    )
    explanation = printable(verdict(result, module))
    lines.append(explanation[:1].upper() + explanation[1:])
    lines += details_lines(result)
    timings = [f"total {result.duration_seconds * 1000:.2f} ms"]
    if result.dns_lookup_seconds:
        timings.insert(0, f"DNS {result.dns_lookup_seconds * 1000:.2f} ms")
    if result.connect_seconds is not None:
        timings.insert(-1, f"connect {result.connect_seconds * 1000:.2f} ms")
    lines.append("Timings: " + ", ".join(timings))
    lines += path_lines(result)
    return "\n".join(lines) + "\n"


def json_report(address: HostPort, module: Module, result: ProbeResult) -> str:
    fields = {
        f.name: getattr(result, f.name)
        for f in dataclasses.fields(result)
        if f.name not in ("details", "icmp", "path", "addresses", "mtu")
    }
    document = {
        "target": str(address),  # as written on the command line (or in the config)
        "port": address.port,  # the port connected to, the module's default when the target has none
        "module": module.name,
        "prober": module.prober,
        "timeout_seconds": module.timeout,
        "verdict": verdict(result, module),
        **fields,
        "details": result.details.contract(),
        "icmp": None
        if result.icmp is None
        else {
            "type": result.icmp.type,
            "code": result.icmp.code,
            "sender": result.icmp.sender,
            "description": result.icmp.description,
            "by": "host" if result.address and result.icmp.sent_by_host(result.address) else "network",
        },
        "path": None if result.path is None else path_json(result.path),
        # tcp.probe_addresses: all (docs/metrics.md, "Every address of a name"); null with "one".
        "addresses": None if result.addresses is None else addresses_json(result.addresses),
        "mtu": mtu_json(result.mtu),
    }
    document.update(result.details.json_sections())
    return json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n"


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)  # exits 2 on a usage error
    setup_logging("warn")
    try:
        module = find_module(args.module, args.config_file)
        try:
            address = parse_host_port(args.target, default_port(module))
        except AddressError as exc:
            raise UsageError(f"connectivity-exporter check: {exc}") from None
    except UsageError as exc:
        print("\n".join(exc.lines), file=sys.stderr)
        return EXIT_USAGE
    result = asyncio.run(run_probe(address, module, diagnose=args.diagnose))
    sys.stdout.write(json_report(address, module, result) if args.json else human_report(address, module, result))
    return EXIT_SUCCESS if result.success else EXIT_FAILURE
