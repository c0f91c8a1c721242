"""Command line, with Prometheus-style flags; the app factory never sees argv."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from exporter import __version__
from exporter.cli.usage import OneLineArgumentParser
from exporter.config.loader import Config, ConfigError, load_config
from exporter.config.unusable import warning_text
from exporter.core.durations import parse_duration
from exporter.core.logs import LEVELS, setup_logging
from exporter.core.runtime import MAX_PROBE_PROCESSES, EventLoopUnavailable, new_event_loop, raise_fd_limit
from exporter.core.vantage import Site, central_url_problem, vantage_problem

if TYPE_CHECKING:
    from exporter.service.exporter import Exporter
    from exporter.web.config import WebConfig
    from exporter.workers.pool import WorkerOptions

log = logging.getLogger("exporter")

DEFAULT_PORT = 9816
DEFAULT_LISTEN_ADDRESS = f":{DEFAULT_PORT}"
SHUTDOWN_GRACE_SECONDS = 15.0


class UsageError(Exception):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="connectivity-exporter",
        description="Prometheus exporter telling open, refused, filtered (timeout), unreachable and "
        "unresolvable TCP ports apart, with connect times.",
        epilog="To probe one target now and have the outcome explained: "
        "connectivity-exporter check HOST:PORT [--module NAME] (see 'check --help').",
    )
    parser.add_argument(
        "--config.file",
        dest="config_file",
        default="config.yml",
        metavar="PATH",
        help="configuration file (default: config.yml)",
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen_addresses",
        action="append",
        metavar="HOST:PORT",
        help=f"address to listen on; repeat for several (default: {DEFAULT_LISTEN_ADDRESS}, all interfaces)",
    )
    parser.add_argument(
        "--web.config.file",
        dest="web_config_file",
        metavar="PATH",
        help="exporter-toolkit web configuration (TLS, basic auth, headers); read at start only",
    )
    parser.add_argument(
        "--web.shutdown-timeout",
        dest="shutdown_timeout",
        type=_duration,
        default=SHUTDOWN_GRACE_SECONDS,
        metavar="DURATION",
        help=f"on SIGTERM/SIGINT, how long in-flight scrapes may take to finish (default: {SHUTDOWN_GRACE_SECONDS:g}s)",
    )
    parser.add_argument(
        "--config.check",
        dest="config_check",
        action="store_true",
        help="validate the configuration, print 'config OK' or every error, and exit 0/1",
    )
    parser.add_argument("--log.level", dest="log_level", choices=list(LEVELS), default="info")
    parser.add_argument("--log.format", dest="log_format", choices=["logfmt", "json"], default="logfmt")
    parser.add_argument(
        "--runtime.event-loop",
        dest="event_loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop: uvloop when installed (auto), or asyncio",
    )
    parser.add_argument(
        "--runtime.probe-processes",
        dest="probe_processes",
        type=_process_count,
        default=1,
        metavar="N",
        help="processes that share each scrape of the configured targets and the continuous targets, "
        f"this one included (1-{MAX_PROBE_PROCESSES}; default 1). One process uses one core: raise it when "
        "a large scrape is CPU-bound. Each extra process costs ~30-40 MB.",
    )
    parser.add_argument(
        "--probe.vantage",
        dest="vantage",
        type=_checked(vantage_problem),
        metavar="NAME",
        help='the site this exporter probes from: adds vantage="NAME" to every series '
        "(overrides global.vantage); see docs/integration.md, 'Many vantage points'",
    )
    parser.add_argument(
        "--web.central-url",
        dest="central_url",
        type=_checked(central_url_problem),
        metavar="URL",
        help="the all-sites view (e.g. a Grafana dashboard) the status page links to (overrides global.central_url)",
    )
    parser.add_argument("--version", action="version", version=f"connectivity_exporter {__version__}")
    return parser


def _process_count(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_PROBE_PROCESSES:
        raise argparse.ArgumentTypeError(f"{text[:20]!r} is not a whole number from 1 to {MAX_PROBE_PROCESSES}")
    return int(text)


def _checked(problem_of: Callable[[str], str | None]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        problem = problem_of(text)
        if problem is not None:
            raise argparse.ArgumentTypeError(problem)
        return text

    return parse


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parse_listen_address(text: str) -> tuple[str | None, int]:
    """``HOST:PORT``, ``:PORT`` (all interfaces) or ``[V6]:PORT``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not (port_text.isascii() and port_text.isdigit()) or not 0 < int(port_text) < 65536:
        raise UsageError(f"--web.listen-address {text!r}: expected HOST:PORT, :PORT or [IPv6]:PORT")
    return (host or None), int(port_text)


async def serve(
    config: Config,
    addresses: list[tuple[str | None, int]],
    web_config: WebConfig | None = None,
    shutdown_timeout: float = SHUTDOWN_GRACE_SECONDS,
    workers: WorkerOptions | None = None,
    site: Site | None = None,
) -> int:
    from aiohttp import web

    from exporter.web.app import EXPORTER, create_app

    app = create_app(config, web_config=web_config, workers=workers, site=site)
    ssl_context = web_config.ssl_context if web_config is not None else None
    runner = web.AppRunner(
        app, handle_signals=False, shutdown_timeout=shutdown_timeout, access_log=logging.getLogger("aiohttp.access")
    )
    await runner.setup()
    sites: list[web.TCPSite] = []
    try:
        for host, port in addresses:
            try:
                listener = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
                await listener.start()
                sites.append(listener)
            except OSError as exc:
                reason = os.strerror(exc.errno) if exc.errno else str(exc)
                log.error("cannot listen on %s:%d: %s", host or "*", port, reason)
                return 1
            log.info("listening", extra={"address": f"{host or '*'}:{port}", "tls": ssl_context is not None})
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        reloads: set[asyncio.Task[None]] = set()  # referenced until done, so they are not collected mid-way
        loop.add_signal_handler(signal.SIGHUP, _start_reload, app[EXPORTER], reloads)
        await stop.wait()
        for listener in sites:  # closes the listening sockets: new connections are refused from here on
            await listener.stop()
        log.info("shutting down: no new connections, in-flight scrapes get up to %gs", shutdown_timeout)
    finally:
        await runner.cleanup()
    return 0


def _start_reload(exporter: Exporter, reloads: set[asyncio.Task[None]]) -> None:
    task = asyncio.ensure_future(_reload(exporter))
    reloads.add(task)
    task.add_done_callback(reloads.discard)


async def _reload(exporter: Exporter) -> None:
    try:
        await exporter.reload()
    except ConfigError as exc:
        log.error("configuration reload failed; still serving the previous configuration:\n%s", exc)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["check"]:
        from exporter.cli.check import main as check

        return check(argv[1:])
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level, args.log_format)
    try:
        config = load_config(args.config_file)
    except ConfigError as exc:
        print("\n".join(exc.errors), file=sys.stderr)
        return 1
    web_config = None
    if args.web_config_file:
        from exporter.web.config import load_web_config

        try:
            web_config = load_web_config(args.web_config_file)
        except ConfigError as exc:
            print("\n".join(exc.errors), file=sys.stderr)
            return 1
    if args.config_check:
        # An unreadable file is an error here (as in `promtool check config`), reported once per file
        # instead of the module's warning; the server itself loads such a config (exporter/config/unusable.py).
        unusable_warnings = {
            f"{config.source}: modules.{name}: {warning_text(module.unusable)}"
            for name, module in config.modules.items()
            if module.unusable is not None
        }
        for warning in config.warnings:
            if warning not in unusable_warnings:
                print(f"warning: {warning}", file=sys.stderr)
        if config.unreadable_files:
            print("\n".join(config.unreadable_files), file=sys.stderr)
            return 1
        print("config OK")
        return 0
    for warning in config.warnings:
        log.warning(warning)
    try:
        addresses = [parse_listen_address(a) for a in args.listen_addresses or [DEFAULT_LISTEN_ADDRESS]]
        loop = new_event_loop(args.event_loop)
    except (UsageError, EventLoopUnavailable) as exc:
        print(f"connectivity-exporter: {exc}", file=sys.stderr)
        return 2
    raise_fd_limit(config.settings.max_concurrency)
    log.info(
        "starting connectivity_exporter",
        extra={
            "version": __version__,
            "config": args.config_file,
            "event_loop": type(loop).__module__.split(".")[0],
            "pid": os.getpid(),
        },
    )
    try:
        from exporter.workers.pool import WorkerOptions

        workers = WorkerOptions(args.probe_processes, args.event_loop, args.log_level, args.log_format)
        site = Site(args.vantage, args.central_url)
        code = loop.run_until_complete(serve(config, addresses, web_config, args.shutdown_timeout, workers, site))
    finally:
        loop.close()
    log.info("stopped", extra={"exit_code": code})
    return code


if __name__ == "__main__":
    sys.exit(main())
