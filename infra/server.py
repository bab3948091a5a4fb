"""Running the HTTP server until a signal arrives."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable

from aiohttp import web

from infra.http.app import PathOnlyAccessLogger


async def serve_until_stopped(
    app: web.Application,
    host: str,
    port: int,
    *,
    after_start: Callable[[str], Awaitable[None]] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    runner = web.AppRunner(app, access_log_class=PathOnlyAccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    await site.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        bound = runner.addresses[0] if runner.addresses else (host, port)
        base = f"http://{bound[0]}:{bound[1]}"
        if after_start is not None:
            await after_start(base)
        await stop.wait()
    finally:
        await runner.cleanup()
