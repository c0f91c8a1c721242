"""Applies a web config to the aiohttp application: basic auth, allowed client SANs, response headers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from exporter.web.auth import BasicAuth
from exporter.web.config import WebConfig
from exporter.web.tls import allowed_san

log = logging.getLogger("exporter.web")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def install(app: web.Application, web_config: WebConfig) -> None:
    """Apply auth, allowed client SANs and response headers to every endpoint of ``app``."""
    if web_config.headers:
        headers = dict(web_config.headers)

        async def add_headers(request: web.Request, response: web.StreamResponse) -> None:
            response.headers.update(headers)

        app.on_response_prepare.append(add_headers)

    allowed_sans = web_config.tls.client_allowed_sans if web_config.tls else ()
    if allowed_sans:

        @web.middleware
        async def require_allowed_san(request: web.Request, handler: Handler) -> web.StreamResponse:
            if not allowed_san(request, allowed_sans):
                log.debug(
                    "client certificate has no allowed subject alternative name", extra={"remote": request.remote}
                )
                raise web.HTTPForbidden(text="client certificate not allowed\n")
            return await handler(request)

        app.middlewares.append(require_allowed_san)

    if web_config.users:
        auth = BasicAuth(web_config.users)

        @web.middleware
        async def require_basic_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
            if await auth.verify(request.headers.get("Authorization")) is None:
                log.debug("HTTP basic authentication failed", extra={"remote": request.remote, "path": request.path})
                raise web.HTTPUnauthorized(text="Unauthorized\n", headers={"WWW-Authenticate": "Basic"})
            return await handler(request)

        async def close_auth(app: web.Application) -> None:
            auth.close()

        app.middlewares.append(require_basic_auth)
        app.on_cleanup.append(close_auth)
