"""Test helpers: interaction payloads and a small API client."""

from __future__ import annotations

import asyncio
import itertools
import secrets
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from aiohttp.test_utils import TestClient

from infra.runtime import Runtime

_numbers = itertools.count(secrets.randbelow(1000))


def unique_phone() -> str:
    """A fresh number each call (within 1000 calls): +44 7700 900xxx is Ofcom's drama
    range, valid-looking and never a real subscriber."""
    return f"+447700900{next(_numbers) % 1000:03d}"


def interaction(
    *,
    channel: str = "sms",
    body: str = "Hello, where is my parcel?",
    sender: dict[str, Any] | None = None,
    to: dict[str, Any] | None = None,
    provider: str = "twilio",
    provider_message_id: str | None = None,
    occurred_at: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "channel": channel,
        "direction": "inbound",
        "provider": provider,
        "provider_message_id": (
            f"SM{secrets.token_hex(16)}" if provider_message_id is None else provider_message_id
        ),
        "from": sender or {"kind": "phone", "address": unique_phone(), "display_name": "Ann"},
        "to": to if to is not None else {"kind": "phone", "address": "+442071838750"},
        "body": body,
        "occurred_at": occurred_at or datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "attachments": [],
    }
    doc.update(extra)
    return doc


class Api:
    """Calls the API as one token; every call returns (status, json-or-None)."""

    def __init__(self, client: TestClient[Any, Any], token: str, tenant_id: UUID) -> None:
        self.client = client
        self.token = token
        self.tenant_id = tenant_id

    @classmethod
    async def for_new_tenant(cls, client: TestClient[Any, Any], runtime: Runtime, name: str) -> Api:
        tenant_id, issued = await asyncio.to_thread(runtime.app.register_tenant, name)
        return cls(client, issued.token, tenant_id)

    def as_token(self, token: str) -> Api:
        return Api(self.client, token, self.tenant_id)

    async def call(
        self,
        method: str,
        path: str,
        json: Any = None,
        headers: dict[str, str] | None = None,
        data: Any = None,
    ) -> tuple[int, Any]:
        all_headers = {"Authorization": f"Bearer {self.token}"}
        all_headers.update(headers or {})
        async with self.client.request(
            method, path, json=json, data=data, headers=all_headers
        ) as response:
            body = await response.read()
            parsed = None
            if body and response.content_type == "application/json":
                parsed = await response.json()
            return response.status, parsed

    async def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> tuple[int, Any]:
        return await self.call("POST", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> tuple[int, Any]:
        return await self.call("DELETE", path, **kw)

    async def receive(self, **kw: Any) -> dict[str, Any]:
        status, body = await self.post("/v1/interactions", interaction(**kw))
        assert status == 201, body
        return dict(body)

    async def issue_token(self, role: str, **extra: Any) -> str:
        status, body = await self.post("/v1/tokens", {"role": role, **extra})
        assert status == 201, body
        return str(body["token"])


async def settle(runtime: Runtime, timeout: float = 5.0) -> None:
    """Wait until every projection has processed everything recorded so far."""
    latest = await asyncio.to_thread(runtime.app.recorder.max_notification_id) or 0
    for consumer in runtime.consumers:
        ok = await runtime.feed.progress.wait(consumer.name, latest, timeout)
        assert ok, f"projection {consumer.name} did not reach {latest}"


async def until(done: Any, what: str, timeout: float = 30.0) -> Any:
    """Poll the plain predicate ``done()`` until it gives something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := done()):
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)
    return found


async def eventually(check: Any, seconds: float = 10) -> Any:
    """Await ``check()`` until it returns something truthy (bounded by ``seconds``)."""
    async with asyncio.timeout(seconds):
        while True:
            found = await check()
            if found:
                return found
            await asyncio.sleep(0.05)


def read_model_dump(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every projection's tables, in a stable order."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with rt.readdb.read() as tx:
        for consumer in rt.consumers:
            for table in consumer.projection.tables:
                tx.execute(f"SELECT * FROM {table}")
                dump[table] = sorted(tx.fetchall(), key=repr)
    return dump
