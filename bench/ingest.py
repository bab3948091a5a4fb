"""Ingest benchmark: N concurrent HTTP clients post distinct interactions for a fixed time.

Prints interactions/s and p50/p99 latency, and, in the same run, the rate of the plain
eventsourcing library saving one event per transaction on the same backend (baseline),
and where the machine's CPU went meanwhile: each process group's share of the cores and
the CPU time per interaction, with the rate at which the cores (or the one core of the
``serve`` process, bound by the interpreter lock) would be fully busy. The read models
are applied apart from ingest (the projector process), so it also samples how far they
trail the log during the load (``/ready``) and how soon after it they show all of it.

    ./dev bench ingest [--backend sqlite|postgres|both] [--clients 32] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
from common import (  # noqa: F401
    ROOT,
    CpuMeter,
    backend,
    create_tenant,
    percentile,
    server,
    summary,
)
from eventsourcing.application import Application
from eventsourcing.domain import Aggregate, event

from infra.runtime import EVENTS_TABLE, postgres_datastore  # noqa: F401


class Counter(Aggregate):
    @event("Created")
    def __init__(self, n: int) -> None:
        self.n = n


def baseline(b: Any, seconds: float) -> float:
    """Plain eventsourcing: one new aggregate (one event) per save, i.e. per transaction."""
    if b.database_url:
        from psycopg.conninfo import conninfo_to_dict

        p = conninfo_to_dict(b.database_url)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": str(p["dbname"]),
            "POSTGRES_HOST": str(p["host"]),
            "POSTGRES_PORT": str(p["port"]),
            "POSTGRES_USER": str(p["user"]),
            "POSTGRES_PASSWORD": "",
        }
    else:
        b.data_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": str(b.data_dir / "baseline.sqlite"),
        }
    app = Application(env=env)
    try:
        count = 0
        deadline = time.perf_counter() + seconds
        start = time.perf_counter()
        while time.perf_counter() < deadline:
            app.save(Counter(count))
            count += 1
        return count / (time.perf_counter() - start)
    finally:
        app.close()


def make_interaction(i: int, senders: int) -> dict[str, Any]:
    sender = f"+447700{(i * 7919) % senders:06d}" if senders else f"+4477{i:08d}"[:13]
    return {
        "channel": "sms",
        "direction": "inbound",
        "provider": "twilio",
        "provider_message_id": f"SM{uuid.uuid4().hex}",
        "from": {"kind": "phone", "address": sender, "display_name": "Bench Customer"},
        "to": {"kind": "phone", "address": "+442071838750"},
        "body": f"Benchmark message {i}: where is my order {secrets.token_hex(4)}?",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


LAG_SAMPLE_SECONDS = 0.25
CATCH_UP_LIMIT_SECONDS = 60.0


async def load(base: str, token: str, clients: int, seconds: float, senders: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    connector = aiohttp.TCPConnector(limit=clients)
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def client() -> None:
            while time.perf_counter() < deadline:
                doc = make_interaction(next(counter), senders)
                started = time.perf_counter()
                async with session.post(f"{base}/v1/interactions", json=doc) as response:
                    await response.read()
                    statuses[response.status] = statuses.get(response.status, 0) + 1
                latencies.append((time.perf_counter() - started) * 1000)

        started = time.perf_counter()
        lags: list[int] = []
        watcher = asyncio.create_task(watch_lag(session, base, lags))
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
        watcher.cancel()
        caught_up = await catch_up_time(session, base)
    return {
        "latencies": latencies,
        "statuses": statuses,
        "elapsed": elapsed,
        "lags": lags,
        "caught_up": caught_up,
    }


async def _behind(session: aiohttp.ClientSession, base: str) -> int:
    """How many events the furthest-behind read model is short of the log (/ready)."""
    async with session.get(f"{base}/ready") as response:
        state = await response.json()
    return max((p["lag"] for p in state["projections"].values()), default=0)


async def watch_lag(session: aiohttp.ClientSession, base: str, lags: list[int]) -> None:
    """Sample the read models' lag while the load runs: writes answered 201 are only
    worth counting if the read models keep up with them."""
    while True:
        lags.append(await _behind(session, base))
        await asyncio.sleep(LAG_SAMPLE_SECONDS)


async def catch_up_time(session: aiohttp.ClientSession, base: str) -> float | None:
    """Seconds from the end of the load until every read model shows the whole log."""
    started = time.perf_counter()
    while time.perf_counter() - started < CATCH_UP_LIMIT_SECONDS:
        if await _behind(session, base) == 0:
            return time.perf_counter() - started
        await asyncio.sleep(0.01)
    return None


def durable_count(b: Any, tenant_token: str) -> int:
    """Messages actually in the event store after the server stopped."""
    import sqlite3

    import psycopg

    topic = "contact_centre.conversations:Conversation.MessageReceived"
    if b.database_url:
        with psycopg.connect(b.database_url) as conn:
            row = conn.execute(
                f"SELECT count(*) FROM {EVENTS_TABLE} WHERE topic = %s", (topic,)
            ).fetchone()
            return int(row[0]) if row else 0
    with sqlite3.connect(b.data_dir / "events.sqlite") as conn:
        return int(
            conn.execute("SELECT count(*) FROM stored_events WHERE topic = ?", (topic,)).fetchone()[
                0
            ]
        )


def run(name: str, args: argparse.Namespace) -> None:
    with backend(name, args.postgres_url) as b:
        tenant = create_tenant(b.env)
        with server(b.env) as base:
            # warm up (connections, caches, JIT-free but page cache)
            asyncio.run(load(base, tenant["admin_token"], 4, 1.0, args.senders))
            meter = CpuMeter()
            meter.start()
            result = asyncio.run(
                load(base, tenant["admin_token"], args.clients, args.seconds, args.senders)
            )
            meter.stop()
        created = result["statuses"].get(201, 0)
        in_store = durable_count(b, tenant["admin_token"])
        base_rate = baseline(b, min(args.seconds, 10))
    rate = created / result["elapsed"]
    print(
        f"\n== ingest on {name}: {args.clients} clients, {args.seconds:.0f} s, "
        f"{'distinct senders' if not args.senders else f'{args.senders} senders'}"
    )
    print(f"statuses: {dict(sorted(result['statuses'].items()))}")
    print(f"interactions/s: {rate:,.0f}   latency {summary(result['latencies'])}")
    print(
        f"durable: {in_store:,} messages in the event store for {created + 0:,} answered 201 "
        f"(after warm-up of the same run)"
    )
    lags = sorted(float(lag) for lag in result["lags"])
    if lags:
        print(
            f"read models behind the log (sampled every {LAG_SAMPLE_SECONDS} s, events): "
            f"p50 {percentile(lags, 50):,.0f}, p99 {percentile(lags, 99):,.0f}, "
            f"max {lags[-1]:,.0f}"
        )
    caught = result["caught_up"]
    print(
        "read models showed the whole log "
        + (f"{1000 * caught:,.0f} ms after the load" if caught is not None else "never (60 s)")
    )
    for line in meter.report(created, "interaction"):
        print(line)
    print(f"baseline (eventsourcing, one event per transaction): {base_rate:,.0f} events/s")
    print(f"ratio interactions/s : baseline events/s = {rate / base_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument(
        "--senders",
        type=int,
        default=5000,
        help="distinct sender numbers (0: every interaction from a new sender)",
    )
    parser.add_argument("--postgres-url", help="an existing server (default: start a durable one)")
    args = parser.parse_args()
    for name in ["sqlite", "postgres"] if args.backend == "both" else [args.backend]:
        run(name, args)


if __name__ == "__main__":
    main()
