"""The aiohttp application: /metrics, /probe, health endpoints and the landing page."""

from __future__ import annotations

import html
import logging
import math
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from exporter import __version__
from exporter.address import AddressError, parse_host_port
from exporter.config import Config, ConfigError, GlobalSettings, default_port
from exporter.exposition import CONTENT_TYPE
from exporter.probers.resolve import Resolver
from exporter.runner import ProbeRunner
from exporter.selfmetrics import ExporterMetrics
from exporter.service import Exporter, render_single
from exporter.webconfig import WebConfig
from exporter.webconfig import install as install_web_config

log = logging.getLogger("exporter.http")

EXPORTER = web.AppKey("exporter", Exporter)
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
DEFAULT_PROBE_MODULE = "tcp_connect"
MAX_SCRAPE_TIMEOUT = 3600.0
DNS_WORKERS = 64


def create_app(config: Config, *, registry: CollectorRegistry | None = None,
               web_config: WebConfig | None = None) -> web.Application:
    """Build the application for ``config``. Pass a fresh ``registry`` in tests to avoid globals."""
    app = web.Application()
    if web_config is not None:
        install_web_config(app, web_config)
    app[EXPORTER] = Exporter(config, ExporterMetrics(registry))
    app.cleanup_ctx.append(_probe_runner)
    app.router.add_get("/", landing_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/-/healthy", healthy)
    app.router.add_get("/-/ready", ready)
    app.router.add_post("/-/reload", reload)
    return app


async def _probe_runner(app: web.Application) -> AsyncIterator[None]:
    exporter = app[EXPORTER]
    resolver = Resolver(max_workers=DNS_WORKERS)
    exporter.runner = ProbeRunner(resolver, exporter.config.settings.max_concurrency)
    try:
        yield
    finally:
        exporter.runner = None
        resolver.close()


def _bad_request(reason: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=reason + "\n")


def scrape_budget(request: web.Request, settings: GlobalSettings) -> float:
    """Seconds the probes may take so the reply reaches Prometheus before its scrape timeout."""
    raw = request.headers.get(SCRAPE_TIMEOUT_HEADER)
    if raw is None:
        timeout = settings.default_scrape_timeout
    else:
        try:
            timeout = float(raw)
        except ValueError:
            raise _bad_request(f"invalid {SCRAPE_TIMEOUT_HEADER} header {raw[:50]!r}: expected seconds") from None
        if not math.isfinite(timeout) or timeout <= 0:
            raise _bad_request(f"invalid {SCRAPE_TIMEOUT_HEADER} header {raw[:50]!r}: must be a positive number")
        timeout = min(timeout, MAX_SCRAPE_TIMEOUT)
    # A short scrape timeout keeps at least half of itself rather than going to zero.
    return max(timeout - settings.scrape_timeout_offset, timeout / 2)


async def metrics(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    budget = scrape_budget(request, exporter.config.settings)
    targets_text = await exporter.scrape(budget)
    body = generate_latest(exporter.metrics.registry) + targets_text.encode()
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


async def probe(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    config = exporter.config
    query = request.query
    module_name = query.get("module", DEFAULT_PROBE_MODULE)
    module = config.modules.get(module_name)
    if module is None:
        raise _bad_request(f"unknown module {module_name[:100]!r} (defined: {', '.join(sorted(config.modules))})")
    target_text = query.get("target")
    if not target_text:
        raise _bad_request("missing parameter 'target' (expected target=HOST:PORT)")
    try:
        address = parse_host_port(target_text, default_port(module))
    except AddressError as exc:
        raise _bad_request(f"invalid parameter 'target': {exc}") from None
    debug = query.get("debug", "false").lower()
    if debug not in ("true", "false"):
        raise _bad_request(f"invalid parameter 'debug' {debug[:20]!r}: expected true or false")

    budget = min(scrape_budget(request, config.settings), module.timeout)
    result = await exporter.probe(address, module, budget)
    text = render_single(result, module)
    if debug == "true":
        return web.Response(text=debug_report(str(address), module.name, result, text),
                            content_type="text/plain", charset="utf-8")
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


def debug_report(target: str, module: str, result, metrics_text: str) -> str:
    verdict = "SUCCESS" if result.success else "FAILURE"
    lines = [f"Probe of {target} with module {module}",
             f"Verdict: {verdict}, state {result.state}: {result.detail}",
             f"Duration: {result.duration_seconds * 1000:.2f} ms",
             "",
             "Transcript:"]
    lines += [f"  {line}" for line in result.transcript]
    lines += ["", "Metrics:", metrics_text]
    return "\n".join(lines)


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[EXPORTER].runner is None:
        raise web.HTTPServiceUnavailable(text="Not ready: starting\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    try:
        config = request.app[EXPORTER].reload()
    except ConfigError as exc:
        log.error("configuration reload failed; still serving the previous configuration:\n%s", exc)
        raise web.HTTPBadRequest(text="reload failed, the previous configuration stays in use:\n"
                                      + "\n".join(exc.errors) + "\n") from None
    return web.Response(text=f"config reloaded: {len(config.modules)} modules, {len(config.targets)} targets\n")


async def landing_page(request: web.Request) -> web.Response:
    config = request.app[EXPORTER].config
    example = next(iter(config.targets), None)
    probe_link = (f"/probe?target={example.address}&amp;module={example.module}&amp;debug=true"
                  if example else "/probe?target=127.0.0.1:22&amp;module=tcp_connect&amp;debug=true")
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>connectivity_exporter</title></head>
<body>
<h1>connectivity_exporter {html.escape(__version__)}</h1>
<p>{len(config.targets)} configured targets, {len(config.modules)} modules
(config <code>{html.escape(config.source)}</code>).</p>
<ul>
<li><a href="/metrics">Metrics</a>: every configured target, probed now</li>
<li><a href="{html.escape(probe_link, quote=False)}">Debug probe</a>: one target with its transcript</li>
<li><a href="/-/healthy">Health</a> and <a href="/-/ready">readiness</a></li>
</ul>
</body></html>
"""
    return web.Response(text=body, content_type="text/html")
