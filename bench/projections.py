"""Projection benchmarks.

rebuild: writes a log of N events (interactions from a pool of senders, many per
    transaction), then, on SQLite and PostgreSQL, times (1) reading the notification log
    (select only, and select + decode: the ceiling of any rebuild), (2) rebuilding every
    projection of ``all_projections()`` from scratch (``feed.rebuild``, as
    `contact-centre projections rebuild NAME` does), one after the other, and (3) all of
    them in one pass over the log (``feed.rebuild_together``, as `... rebuild all` does),
    and prints events/s for each beside the ceiling.

lag: scaled mode end to end. Starts PostgreSQL (durable) and a Kafka broker, one HTTP
    process, the relay and W projection workers; posts interactions at a steady rate
    (open loop: one every 1/R s whatever the answers) for S seconds, and for each one
    measures the time from sending the request until its message is in the inbox read
    model (polled every 5 ms), printing p50/p99/max beside the HTTP latency (the part of
    the lag that is the write itself), and where the machine's CPU went from the first
    request until the read model had them all: each process's share of the cores (HTTP
    process, relay, workers, PostgreSQL, the broker, this benchmark) and CPU time per
    interaction, with the rate at which all the cores would be busy.

    ./dev bench projections rebuild [--events 200000] [--backend sqlite|postgres|both]
    ./dev bench projections lag [--rate 1000] [--seconds 20] [--workers 2] [--senders 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import aiohttp
import psycopg
from common import ROOT, CpuMeter, backend, create_tenant, percentile, server, summary

from contact_centre.application import Receive
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import Settings
from infra.localkafka import LocalKafka
from infra.runtime import Runtime, build


# -- rebuild ------------------------------------------------------------------------------
def write_log(runtime: Runtime, events: int, senders: int = 20_000) -> int:
    """At least ``events`` events, 200 interactions per transaction."""
    runtime.app.listeners.clear()  # no projection while writing: the rebuild does it all
    tenant, _ = runtime.app.register_tenant("Bench")
    i = 0
    start = time.perf_counter()
    while (runtime.app.recorder.max_notification_id() or 0) < events:
        batch = []
        for _ in range(200):
            who = (i * 7919) % senders
            batch.append(
                Receive(
                    runtime.app,
                    Interaction(
                        tenant_id=tenant,
                        channel=Channel.SMS,
                        direction=Direction.INBOUND,
                        provider="twilio",
                        provider_message_id=f"SM{uuid.uuid4().hex}",
                        sender=Identity(IdentityKind.PHONE, f"+4477009{who:05d}", "Bench"),
                        recipient=Identity(IdentityKind.PHONE, "+442071838750"),
                        body=f"Benchmark message {i}",
                        occurred_at=datetime.now(UTC),
                    ),
                )
            )
            i += 1
        for outcome in runtime.app.run_batch(batch):
            if outcome.error is not None:
                raise outcome.error
    total = runtime.app.recorder.max_notification_id() or 0
    print(f"  wrote {total} events in {time.perf_counter() - start:.1f} s")
    return total


def read_rate(runtime: Runtime, decode: bool) -> float:
    recorder, mapper = runtime.app.recorder, runtime.app.mapper
    position, count = 0, 0
    start = time.perf_counter()
    while True:
        batch = recorder.select_notifications(start=position, limit=500, inclusive_of_start=False)
        if not batch:
            break
        if decode:
            for n in batch:
                mapper.to_domain_event(n)
        count += len(batch)
        position = batch[-1].id
    return count / (time.perf_counter() - start)


def bench_rebuild(name: str, events: int, postgres_url: str | None) -> None:
    with backend(name, postgres_url) as b:
        settings = Settings(
            data_dir=b.data_dir,
            database_url=b.database_url,
            master_key=os.urandom(32) if b.database_url else None,
        )
        runtime = build(settings)
        try:
            print(f"{name}:")
            total = write_log(runtime, events)
            plain = read_rate(runtime, decode=False)
            decoded = read_rate(runtime, decode=True)
            print(f"  read the log:             {plain:10,.0f} events/s (select only)")
            print(f"  read + decode (ceiling):  {decoded:10,.0f} events/s")
            overall = 0.0
            for consumer in runtime.consumers:
                start = time.perf_counter()
                read = runtime.feed.rebuild(consumer)
                elapsed = time.perf_counter() - start
                overall += elapsed
                assert read == total, (consumer.name, read, total)
                print(
                    f"  rebuild {consumer.name:<16} {total / elapsed:10,.0f} events/s"
                    f"  ({total / elapsed / decoded:.0%} of the ceiling: it decodes only"
                    " the events it handles)"
                )
            count = len(runtime.consumers)
            print(
                f"  rebuild all {count} projections one after the other: {total / overall:,.0f}"
                f" events/s of log ({overall:.1f} s for {total} events;"
                f" {total / overall / decoded:.0%} of the ceiling)"
            )
            start = time.perf_counter()
            read = runtime.feed.rebuild_together(runtime.consumers)
            together = time.perf_counter() - start
            assert read == total, ("all", read, total)
            print(
                f"  rebuild all {count} projections in one pass: {total / together:,.0f} events/s"
                f" of log ({together:.1f} s; {total / together / decoded:.0%} of the ceiling;"
                f" {overall / together:.1f}x one after the other)"
            )
        finally:
            runtime.close()


# -- lag ----------------------------------------------------------------------------------
@contextmanager
def kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    broker = LocalKafka(heap_mb=768)
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@contextmanager
def worker(kind: str, env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "infra.cli", "worker", kind],
        env={**os.environ, **env, "CC_LOG_LEVEL": "WARNING"},
        cwd=ROOT,
    )
    try:
        yield process
    finally:
        process.terminate()
        process.wait(timeout=30)


class Sampler(threading.Thread):
    """Notes when each sent message first shows in the inbox read model."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        # (conversation id, message id) -> time its request was sent
        self.pending: dict[tuple[str, str], float] = {}
        self.lags: list[float] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def add(self, conversation_id: str, message_id: str, sent: float) -> None:
        with self.lock:
            self.pending[(conversation_id, message_id)] = sent

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                with self.lock:
                    keys = list(self.pending)
                if keys:
                    # by the table's key: (conversation, message)
                    rows = conn.execute(
                        "SELECT conversation_id, id FROM rm_messages"
                        " WHERE conversation_id = ANY(%s) AND id = ANY(%s)",
                        ([c for c, _ in keys], [m for _, m in keys]),
                    ).fetchall()
                    now = time.perf_counter()
                    with self.lock:
                        for conversation, found in rows:
                            sent = self.pending.pop((str(conversation), str(found)), None)
                            if sent is not None:
                                self.lags.append((now - sent) * 1000)
                time.sleep(0.005)


def interaction(i: int, senders: int) -> dict[str, Any]:
    return {
        "channel": "sms",
        "direction": "inbound",
        "provider": "twilio",
        "provider_message_id": f"SM{uuid.uuid4().hex}",
        "from": {"kind": "phone", "address": f"+4477009{i % senders:05d}", "display_name": "B"},
        "to": {"kind": "phone", "address": "+442071838750"},
        "body": f"Lag benchmark {i} {secrets.token_hex(4)}",
        "occurred_at": datetime.now(UTC).isoformat(),
    }


async def steady_load(
    base: str, token: str, rate: float, seconds: float, sampler: Sampler, senders: int
) -> tuple[int, int, list[float]]:
    headers = {"Authorization": f"Bearer {token}"}
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=512)
    async with aiohttp.ClientSession(base, headers=headers, connector=connector) as session:

        async def post(i: int) -> None:
            nonlocal errors
            sent = time.perf_counter()
            try:
                doc = interaction(i, senders)
                async with session.post("/v1/interactions", json=doc) as response:
                    body = await response.json()
                    if response.status != 201:
                        errors += 1
                        return
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append((time.perf_counter() - sent) * 1000)
            sampler.add(body["conversation_id"], body["message_id"], sent)

        tasks = []
        start = time.perf_counter()
        total = int(rate * seconds)
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
    return total, errors, latencies


def bench_lag(
    rate: float,
    seconds: float,
    workers: int,
    senders: int,
    postgres_url: str | None,
    bootstrap: str | None,
) -> None:
    with backend("postgres", postgres_url) as b, kafka(bootstrap) as servers:
        assert b.database_url is not None
        env = {
            **b.env,
            "CC_KAFKA_BOOTSTRAP": servers,
            "CC_KAFKA_TOPIC_PREFIX": f"bench-{secrets.token_hex(3)}",
            "CC_KAFKA_PARTITIONS": "12",
        }
        token = create_tenant(env)["admin_token"]
        with contextlib.ExitStack() as stack:
            base = stack.enter_context(server(env))
            stack.enter_context(worker("relay", env))
            for _ in range(workers):
                stack.enter_context(worker("projections", env))
            sampler = Sampler(b.database_url)
            sampler.start()
            # warm-up: the first messages wait for the consumer groups to form
            asyncio.run(steady_load(base, token, 20, 3, sampler, senders))
            deadline = time.monotonic() + 60
            while sampler.pending and time.monotonic() < deadline:
                time.sleep(0.1)
            sampler.lags.clear()
            meter = CpuMeter()  # from the first request until the read model has them all
            meter.start()
            load = steady_load(base, token, rate, seconds, sampler, senders)
            sent, errors, latencies = asyncio.run(load)
            deadline = time.monotonic() + 30
            while sampler.pending and time.monotonic() < deadline:
                time.sleep(0.05)
            meter.stop()
            sampler.stop.set()
            sampler.join()
            lags = sampler.lags
            print(
                f"scaled mode, {workers} projection workers, {rate:.0f} interactions/s for "
                f"{seconds:.0f} s: {sent} sent, {errors} errors, {len(lags)} in the read model, "
                f"{len(sampler.pending)} missing after 30 s"
            )
            print(f"  HTTP ingest latency:           {summary(latencies)}")
            worst = max(lags or [0.0])
            print(f"  end-to-end lag to read model:  {summary(lags)}, max {worst:.1f} ms")
            print(
                f"  lag beyond the write itself:   p50 "
                f"{percentile(lags, 50) - percentile(latencies, 50):.1f} ms, p99 "
                f"{percentile(lags, 99) - percentile(latencies, 99):.1f} ms"
            )
            for line in meter.report(sent - errors, "interaction"):
                print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    rebuild = sub.add_parser("rebuild")
    rebuild.add_argument("--events", type=int, default=200_000)
    rebuild.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="both")
    rebuild.add_argument("--postgres-url", help="an existing server (default: start one)")
    lag = sub.add_parser("lag")
    lag.add_argument("--rate", type=float, default=1000)
    lag.add_argument("--seconds", type=float, default=20)
    lag.add_argument("--workers", type=int, default=2)
    lag.add_argument("--senders", type=int, default=5000, help="distinct senders (contacts)")
    lag.add_argument("--postgres-url")
    lag.add_argument("--kafka-bootstrap", help="an existing broker (default: start one)")
    args = parser.parse_args()
    if args.what == "rebuild":
        names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
        for name in names:
            bench_rebuild(name, args.events, args.postgres_url)
    else:
        bench_lag(
            args.rate,
            args.seconds,
            args.workers,
            args.senders,
            args.postgres_url,
            args.kafka_bootstrap,
        )


if __name__ == "__main__":
    main()
