"""Webhook benchmark: deliveries per second to a local receiver, and the lag from an event
to its delivery, with 100 subscriptions (25 tenants with 4 endpoints each, all on
``contact.created``: every new contact is one delivery to each of its tenant's 4).

Events are made by NDJSON contact imports (one request writes many contacts), so that the
figures are the webhook pipeline's rather than the HTTP ingest's. The server is a
subprocess (``contact-centre serve``); the receiver runs in this process.

1. Baseline: plain aiohttp POSTs from this process to the same receiver (64 at once): what
   the machine's HTTP stack does without signing, state or retries.
2. Throughput: ``--backlog`` contacts per tenant are imported while the endpoints are
   disabled (they become dead letters); then every endpoint is enabled and replays its
   dead letters at once. Prints deliveries/s from the first to the last delivery (the
   dispatcher draining a backlog alone) and the ratio to the baseline.
3. Lag: contacts are imported at a steady rate, ``--rate`` events/s in all (default 500,
   the target load: 2,000 deliveries/s to the 100 endpoints) for ``--seconds``, while
   everything runs; prints the lag from each event's recording (the payload's
   ``timestamp``) to its arrival at the receiver, p50 and p99.

    ./dev bench webhooks [--backend sqlite|postgres] [--seconds 10] [--rate 500] [--backlog 100]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import aiohttp
from aiohttp import web
from common import backend, percentile, server

from infra.config import Settings
from infra.localpg import free_port
from infra.runtime import build

TENANTS = 25
PER_TENANT = 4
TARGET_DELIVERIES = 2_000
TARGET_P99_MS = 1_000


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.seen: set[str] = set()
        self.arrivals: list[float] = []  # monotonic, first receipt of each webhook-id
        self.lags_ms: list[float] = []
        self.duplicates = 0
        self.runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        msg_id = request.headers.get("webhook-id", "")
        if msg_id in self.seen:
            self.duplicates += 1
            return web.Response(status=204)
        self.seen.add(msg_id)
        self.arrivals.append(time.monotonic())
        stamp = json.loads(body)["timestamp"].replace("Z", "+00:00")
        lag = datetime.now(UTC) - datetime.fromisoformat(stamp)
        self.lags_ms.append(lag.total_seconds() * 1000)
        return web.Response(status=204)

    async def plain(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=204)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook/{tenant}/{n}", self.handle)
        app.router.add_post("/baseline", self.plain)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port, backlog=1024).start()

    def reset(self) -> None:
        self.arrivals.clear()
        self.lags_ms.clear()


def prepare(env: dict[str, str], receiver_port: int) -> list[tuple[str, list[UUID]]]:
    """Tenants (admin token, webhook ids), each with 4 disabled subscriptions, written
    before the server starts (the API cannot create tenants)."""
    settings = Settings.from_env(env)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    runtime = build(settings)
    app = runtime.app
    tenants = []
    try:
        for t in range(TENANTS):
            tenant_id, issued = app.register_tenant(f"Bench {t}")
            hooks = []
            for n in range(PER_TENANT):
                url = f"http://127.0.0.1:{receiver_port}/hook/{t}/{n}"
                (hook, _), _ = app.run(
                    lambda uow, tenant_id=tenant_id, url=url: app.create_webhook_in(
                        uow, tenant_id, url, ["contact.created"], [], "bench"
                    )
                )
                app.run(
                    lambda uow, tenant_id=tenant_id, hook=hook: app.change_webhook_in(
                        uow, tenant_id, hook, enabled=False
                    )
                )
                hooks.append(hook)
            tenants.append((issued.token, hooks))
    finally:
        runtime.close()
    return tenants


async def import_contacts(
    session: aiohttp.ClientSession, base: str, token: str, numbers: Any, count: int
) -> int:
    lines = b"".join(
        json.dumps(
            {"identities": [{"kind": "email", "address": f"b{next(numbers)}@x.example"}]}
        ).encode()
        + b"\n"
        for _ in range(count)
    )
    async with session.post(
        f"{base}/v1/contacts/import",
        data=lines,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"},
    ) as response:
        text = await response.text()
        if response.status != 200:
            raise RuntimeError(f"import answered {response.status}")
    return int(json.loads(text.splitlines()[-1])["summary"]["created"])


async def call(session: aiohttp.ClientSession, method: str, url: str, token: str, doc: Any) -> None:
    headers = {"Authorization": f"Bearer {token}"}
    async with session.request(method, url, json=doc, headers=headers) as response:
        await response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {url} answered {response.status}")


async def wait_for(receiver: Receiver, expected: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / 0.05) + 1):  # bounded: polls the receiver's count
        if len(receiver.seen) >= expected or time.monotonic() > deadline:
            return
        await asyncio.sleep(0.05)


async def baseline(receiver: Receiver, seconds: float) -> float:
    url = f"http://127.0.0.1:{receiver.port}/baseline"
    count = 0
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as session:

        async def worker() -> None:
            nonlocal count
            while time.monotonic() < deadline:
                async with session.post(url, data=b"{}") as response:
                    await response.read()
                count += 1

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(64)))
        return count / (time.monotonic() - started)


async def throughput(
    session: aiohttp.ClientSession,
    base: str,
    receiver: Receiver,
    tenants: list[tuple[str, list[UUID]]],
    numbers: Any,
    backlog: int,
) -> tuple[int, int, float]:
    """Import a backlog while the endpoints are off, then drain it: (expected, delivered,
    seconds from the first to the last delivery)."""
    imports = (import_contacts(session, base, token, numbers, backlog) for token, _ in tenants)
    created = sum(await asyncio.gather(*imports))
    receiver.reset()
    before = len(receiver.seen)

    async def drain(token: str, hook: UUID) -> None:
        url = f"{base}/v1/webhooks/{hook}"
        await call(session, "PATCH", url, token, {"enabled": True})
        await call(session, "POST", f"{url}/replay", token, {"dead_letters": True})

    await asyncio.gather(*(drain(token, hook) for token, hooks in tenants for hook in hooks))
    expected = created * PER_TENANT
    await wait_for(receiver, before + expected, 300)
    span = receiver.arrivals[-1] - receiver.arrivals[0] if len(receiver.arrivals) > 1 else 0.0
    return expected, len(receiver.seen) - before, span


async def run(args: argparse.Namespace) -> None:
    receiver = Receiver()
    await receiver.start()
    with backend(args.backend, args.postgres_url) as b:
        env = {
            **b.env,
            "CC_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32",
            "CC_WEBHOOK_INTERVAL_MS": "50",
            "CC_RETENTION_INTERVAL_SECONDS": "0",
        }
        tenants = await asyncio.to_thread(prepare, {**os.environ, **env}, receiver.port)
        base_rate = await baseline(receiver, min(args.seconds, 3))
        label = f"[{args.backend}, {TENANTS * PER_TENANT} subscriptions]"
        print(f"{label} baseline: plain aiohttp POSTs {base_rate:,.0f}/s")
        numbers = itertools.count()
        with server(env) as base:
            connector = aiohttp.TCPConnector(limit=64)
            async with aiohttp.ClientSession(connector=connector) as session:
                expected, delivered, span = await throughput(
                    session, base, receiver, tenants, numbers, args.backlog
                )
                rate = delivered / span if span else float("nan")
                print(
                    f"{label} throughput: {delivered}/{expected} deliveries of a backlog in "
                    f"{span:.1f} s = {rate:,.0f} deliveries/s ({rate / base_rate:.2f}x "
                    f"baseline; target >= {TARGET_DELIVERIES:,})"
                )
                # -- lag: one import every 100 ms, tenants in turn ---------------------------
                receiver.reset()
                before = len(receiver.seen)
                per_tick = max(1, round(args.rate / 10))
                ticks = int(args.seconds * 10)
                started = time.monotonic()
                tasks = []
                for i in range(ticks):
                    delay = started + i * 0.1 - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    token = tenants[i % TENANTS][0]
                    tasks.append(
                        asyncio.create_task(
                            import_contacts(session, base, token, numbers, per_tick)
                        )
                    )
                created = sum(await asyncio.gather(*tasks))
                achieved = created * PER_TENANT / (time.monotonic() - started)
                await wait_for(receiver, before + created * PER_TENANT, 120)
                print(
                    f"{label} lag at {achieved:,.0f} deliveries/s ({achieved / PER_TENANT:,.0f} "
                    f"events/s, each to 4 endpoints) for {args.seconds:.0f} s: "
                    f"p50 {percentile(receiver.lags_ms, 50):.0f} ms, "
                    f"p99 {percentile(receiver.lags_ms, 99):.0f} ms "
                    f"(target p99 < {TARGET_P99_MS} ms); "
                    f"{len(receiver.seen) - before}/{created * PER_TENANT} delivered, "
                    f"{receiver.duplicates} duplicates"
                )
    if receiver.runner is not None:
        await receiver.runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the lag phase")
    parser.add_argument("--rate", type=float, default=500.0, help="events/s, lag phase")
    parser.add_argument("--backlog", type=int, default=100, help="contacts per tenant")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
