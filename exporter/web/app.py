"""The aiohttp application: /metrics, /probe, health endpoints and the landing page."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from exporter import __version__
from exporter.config.access import Denied
from exporter.config.loader import Config, ConfigError, GlobalSettings, default_port, unsupported_reason
from exporter.core.address import AddressError, HostPort, parse_host_port
from exporter.core.deadline import Deadline
from exporter.core.exposition import CONTENT_TYPE
from exporter.core.selfmetrics import ExporterMetrics
from exporter.core.vantage import Site
from exporter.pathdiag.render import summary as path_summary
from exporter.probers.connect.resolve import Resolver
from exporter.probers.module import Module
from exporter.probing.diagnose import diagnose_inline, wants_diagnosis
from exporter.probing.report import debug_report
from exporter.probing.runner import ProbeRunner
from exporter.service.exporter import Exporter, render_single
from exporter.web.config import WebConfig
from exporter.web.continuous_status import continuous_section
from exporter.web.guard import install as install_web_config
from exporter.web.gzip import Body, accepts_gzip
from exporter.web.statuspage import PathWords, render_status_page, render_transcript
from exporter.workers.pool import WorkerOptions, WorkerPool

log = logging.getLogger("exporter.http")

EXPORTER = web.AppKey("exporter", Exporter)
SCRAPE_TIMEOUT_HEADER = "X-Prometheus-Scrape-Timeout-Seconds"
DEFAULT_PROBE_MODULE = "tcp_connect"
MAX_SCRAPE_TIMEOUT = 3600.0
DNS_WORKERS = 64
# /probe is usually called for the same few targets again and again: parse each once (HostPort is
# immutable; invalid input raises and is not cached).
parse_target = functools.lru_cache(maxsize=4096)(parse_host_port)


WORKERS = web.AppKey("workers", WorkerOptions)


def create_app(
    config: Config,
    *,
    registry: CollectorRegistry | None = None,
    web_config: WebConfig | None = None,
    workers: WorkerOptions | None = None,
    site: Site | None = None,
) -> web.Application:
    """Build the application for ``config``. Pass a fresh ``registry`` in tests to avoid globals;
    ``workers`` with ``processes`` > 1 splits scrapes over that many processes; ``site`` (vantage
    point name, central view URL) from the command line wins over the config file's."""
    app = web.Application()
    if web_config is not None:
        install_web_config(app, web_config)
    app[EXPORTER] = Exporter(config, ExporterMetrics(registry), site)
    app[WORKERS] = workers or WorkerOptions()
    app.cleanup_ctx.append(_probe_runner)
    app.cleanup_ctx.append(_probe_workers)
    app.cleanup_ctx.append(_continuous_probing)
    app.router.add_get("/", landing_page)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/probe", probe)
    app.router.add_get("/history", recorded_probe)
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
        await exporter.diagnoses.close()  # background path diagnoses
        resolver.close()


async def _probe_workers(app: web.Application) -> AsyncIterator[None]:
    options = app[WORKERS]
    if options.processes <= 1:
        yield
        return
    exporter = app[EXPORTER]
    pool = WorkerPool(options, exporter.metrics, exporter.continuous.update)
    await pool.start(exporter.plan)
    exporter.pool = pool
    try:
        yield
    finally:
        exporter.pool = None
        await pool.close()


async def _continuous_probing(app: web.Application) -> AsyncIterator[None]:
    """Background probing of targets with an interval (exporter/continuous.py), after the runner."""
    exporter = app[EXPORTER]
    exporter.continuous.start(lambda: exporter.runner)
    try:
        yield
    finally:
        await exporter.continuous.stop()


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


async def metrics(request: web.Request) -> web.StreamResponse:
    exporter = request.app[EXPORTER]
    budget = scrape_budget(request, exporter.config.settings)
    reply = await exporter.scrape(budget)
    try:
        # Streamed (chunked): the targets' families go out as they are rendered, here and in the workers, so
        # the reply is never held whole. Once the headers are out an error can only cut the reply short, which
        # the client sees as a failed scrape (no final chunk), never as a well-formed partial one.
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPE, "Vary": "Accept-Encoding"})
        body = Body(response, accepts_gzip(request.headers.get("Accept-Encoding", "")))
        await response.prepare(request)
        try:
            async for chunk in reply:
                await body.write(chunk)
            # The exporter's own metrics last, so they already count this scrape (its continuous targets'
            # outcomes come with the workers' shards, at their end).
            await body.write(exporter.metrics.exposition(exporter.vantage))
            await body.finish()
        except ConnectionError:
            # The client went away mid-reply (Prometheus gives up at its scrape timeout): one line, not a
            # traceback; the rest is not rendered (aclose, below, stops the workers too).
            log.info("scrape client went away before the end of the reply", extra={"client": request.remote})
    finally:
        await reply.aclose()
    return response


# A /probe query string's (module, target, debug) as aiohttp's ``request.query`` reads them, by the raw query
# string: Prometheus asks for the same few targets again and again (bounded: the oldest entry goes first).
_PROBE_QUERIES: dict[str, tuple[str, str | None, str]] = {}
MAX_PROBE_QUERIES = 4096


def probe_query(request: web.Request) -> tuple[str, str | None, str]:
    raw = request.rel_url.raw_query_string
    parsed = _PROBE_QUERIES.get(raw)
    if parsed is None:
        query = request.query
        parsed = (query.get("module", DEFAULT_PROBE_MODULE), query.get("target"), query.get("debug", "false"))
        if len(_PROBE_QUERIES) >= MAX_PROBE_QUERIES:
            del _PROBE_QUERIES[next(iter(_PROBE_QUERIES))]
        _PROBE_QUERIES[raw] = parsed
    return parsed


async def probe(request: web.Request) -> web.Response:
    exporter = request.app[EXPORTER]
    config = exporter.config
    module_name, target_text, debug = probe_query(request)
    module = config.modules.get(module_name)
    if module is None and module_name in config.unsupported_modules:
        raise _bad_request(unsupported_reason(module_name, config.unsupported_modules[module_name]))
    if module is None:
        raise _bad_request(f"unknown module {module_name[:100]!r} (defined: {', '.join(sorted(config.modules))})")
    if not target_text:
        raise _bad_request("missing parameter 'target' (expected target=HOST:PORT)")
    try:
        address = parse_target(target_text, default_port(module))
    except AddressError as exc:
        raise _bad_request(f"invalid parameter 'target': {exc}") from None
    try:
        exporter.gate.check(address, module.name, request.remote or "unknown")
    except Denied as denied:
        exporter.metrics.probe_requests_denied.labels(denied.reason).inc()
        log.info(
            "probe request denied",
            extra={"client": request.remote, "reason": denied.reason, "target": str(address), "module": module.name},
        )
        refusal = web.HTTPTooManyRequests if denied.status == 429 else web.HTTPForbidden
        raise refusal(text=denied.message + "\n") from None
    debug = debug.lower()
    if debug not in ("true", "false"):
        raise _bad_request(f"invalid parameter 'debug' {debug[:20]!r}: expected true or false")

    scrape_seconds = scrape_budget(request, config.settings)
    # Path diagnosis runs inline, in what the scrape timeout leaves after the probe.
    diagnosis_deadline = Deadline.after(scrape_seconds)
    result = await exporter.probe(address, module, min(scrape_seconds, module.timeout))
    if wants_diagnosis(result, module.tcp.diagnose):
        await diagnose_inline(result, address.port, diagnosis_deadline, source=module.tcp.source_ip_address)
    text = render_single(result, module, exporter.vantage)
    if debug == "true":
        report = debug_report([f"Probe of {address} with module {module.name}"], result, module, text)
        return web.Response(text=report, content_type="text/plain", charset="utf-8")
    return web.Response(body=text.encode(), headers={"Content-Type": CONTENT_TYPE})


async def healthy(request: web.Request) -> web.Response:
    return web.Response(text="Healthy\n")


async def ready(request: web.Request) -> web.Response:
    if request.app[EXPORTER].runner is None:
        raise web.HTTPServiceUnavailable(text="Not ready: starting\n")
    return web.Response(text="Ready\n")


async def reload(request: web.Request) -> web.Response:
    try:
        config = await request.app[EXPORTER].reload()
    except ConfigError as exc:
        log.error("configuration reload failed; still serving the previous configuration:\n%s", exc)
        raise web.HTTPBadRequest(
            text="reload failed, the previous configuration stays in use:\n" + "\n".join(exc.errors) + "\n"
        ) from None
    return web.Response(text=f"config reloaded: {len(config.modules)} modules, {len(config.targets)} targets\n")


MAX_REFRESH = 3600


async def landing_page(request: web.Request) -> web.Response:
    """The live status page: latest state of every target, recent probes and failures."""
    exporter = request.app[EXPORTER]
    refresh = request.query.get("refresh", "")
    seconds = int(refresh) if refresh.isascii() and refresh.isdigit() else 0
    page = render_status_page(
        version=__version__,
        config=exporter.config,
        path_words=path_words(exporter),
        rows=[*exporter.history.latest(exporter.plan.targets), *exporter.continuous.latest_rows()],
        ad_hoc=exporter.history.ad_hoc([*exporter.plan.targets, *(t for t, _ in exporter.plan.continuous)]),
        sections=continuous_section(
            exporter.continuous,
            elsewhere=sum(n for process, n in exporter.pool.spread.owners.items() if process)
            if exporter.pool is not None
            else 0,
        ),
        recent=exporter.history.recent,
        failures=exporter.history.failures,
        refresh=min(max(seconds, 5), MAX_REFRESH) if seconds else None,
        vantage=exporter.vantage,
        central_url=exporter.central_url,
    )
    return web.Response(text=page, content_type="text/html")


def path_words(exporter: Exporter) -> PathWords:
    """The status page's words for a target's latest path diagnosis (made in the background)."""

    def words(address: HostPort, module: Module) -> str | None:
        diagnosis = exporter.diagnoses.latest((str(address), module.name))
        return None if diagnosis is None else path_summary(diagnosis)

    return words


async def recorded_probe(request: web.Request) -> web.Response:
    """The transcript of a probe from the status page's history (``/history?id=N``)."""
    raw = request.query.get("id", "")
    exporter = request.app[EXPORTER]
    entry = exporter.history.find(int(raw)) if raw.isascii() and raw.isdigit() and len(raw) < 20 else None
    if entry is None:
        raise web.HTTPNotFound(
            text=f"no probe {raw[:20]!r} in the history (it keeps the latest probes and failures only)\n"
        )
    text = render_transcript(entry, render_single(entry.result, entry.module, exporter.vantage))
    return web.Response(
        text=text, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"}
    )
