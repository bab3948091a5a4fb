"""``create_app``: the aiohttp application over a :class:`~infra.runtime.Runtime`."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest

from infra.http.auth import Authenticator
from infra.http.channel_routes import setup_channel_routes
from infra.http.errors import error_middleware
from infra.http.keys import AUTH, RUNTIME
from infra.http.routes import setup_routes
from infra.http.routing_routes import setup_routing_routes
from infra.runtime import Runtime
from infra.smtp import SmtpListener


class PathOnlyAccessLogger(AbstractAccessLogger):
    """Access log without query strings or headers: those can carry personal data."""

    def log(self, request: BaseRequest, response: web.StreamResponse, time: float) -> None:
        self.logger.info(
            "%s %s %s %.1fms", request.method, request.path, response.status, time * 1000
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def create_app(runtime: Runtime, *, manage_runtime: bool = True) -> web.Application:
    """Build the web application; with ``manage_runtime`` it starts and stops the runtime."""
    app = web.Application(
        middlewares=[error_middleware],
        client_max_size=runtime.settings.max_body_bytes,
    )
    app[RUNTIME] = runtime
    app[AUTH] = Authenticator(runtime.app)
    setup_routes(app)
    setup_routing_routes(app)
    setup_channel_routes(app)
    if manage_runtime:

        async def lifecycle(app: web.Application) -> AsyncIterator[None]:
            await asyncio.to_thread(runtime.start)
            smtp = SmtpListener(runtime) if runtime.settings.smtp_port is not None else None
            if smtp is not None:
                await asyncio.to_thread(smtp.start)
            yield
            if smtp is not None:
                await asyncio.to_thread(smtp.stop)
            await asyncio.to_thread(runtime.stop)

        app.cleanup_ctx.append(lifecycle)
    return app
