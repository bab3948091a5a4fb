"""Webhook tests: a real receiver on 127.0.0.1 that verifies every delivery with the
``standardwebhooks`` library, and a runtime whose dispatcher looks for due work often and
gives up on a slow receiver after one second."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from infra.config import Settings
from tests.channels.fakes import free_port

READ_TIMEOUT_S = 1


@dataclass
class Delivery:
    """One request the receiver accepted as authentic."""

    headers: dict[str, str]
    body: bytes
    verified_with: list[str]  # which of the receiver's secrets verified it
    answer: int | str = 0  # what the receiver answered (a status, "timeout", "redirect")

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def payload(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A webhook endpoint. ``plan`` holds the answers to give next (a status, "timeout"
    or "redirect"); when it is empty it answers ``default``. Requests that no secret
    verifies are counted and refused (never recorded as deliveries)."""

    port: int = 0
    secrets: list[str] = field(default_factory=list)
    plan: list[int | str] = field(default_factory=list)
    default: int | str = 200
    deliveries: list[Delivery] = field(default_factory=list)  # answered 2xx
    requests: list[Delivery] = field(default_factory=list)  # every verified request
    unverified: int = 0
    redirected_to: int = 0

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = []
        for secret in self.secrets:
            try:
                Webhook(secret).verify(body, headers)
            except WebhookVerificationError:
                continue
            verified.append(secret)
        if not verified:
            self.unverified += 1
            return web.Response(status=401)
        delivery = Delivery(headers, body, verified)
        self.requests.append(delivery)
        behaviour = self.plan.pop(0) if self.plan else self.default
        delivery.answer = behaviour
        if behaviour == "timeout":
            await asyncio.sleep(READ_TIMEOUT_S + 1.5)
            return web.Response(status=200)
        if behaviour == "redirect":
            raise web.HTTPFound(self.url("/elsewhere"))
        status = int(behaviour)
        if 200 <= status < 300:
            self.deliveries.append(delivery)
        return web.Response(status=status, text="receiver says hello")

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.redirected_to += 1
        return web.Response(status=200)

    def unique(self) -> list[Delivery]:
        """Deliveries deduplicated by webhook-id, in the order first received."""
        seen: set[str] = set()
        unique = []
        for delivery in self.deliveries:
            if delivery.id not in seen:
                seen.add(delivery.id)
                unique.append(delivery)
        return unique

    def of_type(self, event_type: str) -> list[Delivery]:
        return [d for d in self.unique() if d.payload["type"] == event_type]


@contextlib.asynccontextmanager
async def running_receiver() -> AsyncIterator[Receiver]:
    """A receiver listening on a free port of 127.0.0.1 while the block runs."""
    receiver = Receiver(port=free_port())
    app = web.Application()
    app.router.add_post("/hook", receiver.handle)
    app.router.add_post("/other", receiver.handle)
    app.router.add_post("/elsewhere", receiver.elsewhere)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", receiver.port).start()
    try:
        yield receiver
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as receiver:
        yield receiver


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(
        webhook_interval_ms=50,
        webhook_connect_timeout_s=1,
        webhook_read_timeout_s=READ_TIMEOUT_S,
    )
