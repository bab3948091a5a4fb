"""The relay: publishes the event store's notification log to ``{prefix}.events``.

It reads the log in order from its durable position (``cc_kafka_relay``), publishes each
event (see :mod:`infra.kafka.messages`) with an idempotent producer (``acks="all"``),
and moves its position only once Kafka has acknowledged everything up to it. After a
crash it starts again from that position: nothing is skipped, and what it publishes a
second time is a duplicate the consumers recognise by its notification id.

Why that is enough for consumers: PostgreSQL writers commit notification ids in order
(the event store's table lock), each relay session publishes a suffix of the log in order,
and an idempotent producer keeps each partition's records in the order they were sent. So
in every partition, the first copy of each event comes after the first copies of all
earlier events of that partition; any record whose notification id is not above the
highest one applied for its partition has been applied already.

One relay publishes at a time: it holds a PostgreSQL advisory lock for the topic, and
others wait as standbys (a crashed relay's lock goes with its connection). Its position
moves by compare-and-set, so even two relays at once would only publish duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

import psycopg
from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from eventsourcing.persistence import ApplicationRecorder, Mapper

from infra.config import Settings
from infra.db import Database, Tx, advisory_key
from infra.kafka.client import MAX_MESSAGE_BYTES, bootstrap, ensure_topic, topic
from infra.kafka.messages import OutgoingMessage, partition_for, to_message
from infra.runtime import SCHEMA_LOCK_KEY

log = logging.getLogger(__name__)

RELAY_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_kafka_relay ("
    " topic TEXT PRIMARY KEY, position BIGINT NOT NULL, partitions INTEGER NOT NULL)"
)


def create_table(tx: Tx) -> None:
    if tx.dialect == "postgres":  # processes starting together (see schema_lock)
        tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
    tx.execute(RELAY_DDL)
    tx.execute(PUBLISHED_DDL)


# The last notification id published to each partition: with the workers' positions per
# partition, it gives each projection's watermark (see ``watermark``), for /ready.
PUBLISHED_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_kafka_published ("
    " topic TEXT NOT NULL, partition INTEGER NOT NULL, position BIGINT NOT NULL,"
    " PRIMARY KEY (topic, partition))"
)


def watermarks(db: Database, topic_name: str) -> tuple[int, dict[str, int]] | None:
    """The relay's position and, per projection, the notification id up to which it has
    applied every event: the lowest applied position among partitions still behind what
    was published to them, else the relay's position. None before the relay first ran."""
    with db.read() as tx:
        tx.execute("SELECT position FROM cc_kafka_relay WHERE topic = ?", (topic_name,))
        row = tx.fetchone()
        if row is None:
            return None
        relay = int(row[0])
        tx.execute(
            "SELECT partition, position FROM cc_kafka_published WHERE topic = ?", (topic_name,)
        )
        published = {int(p): int(n) for p, n in tx.fetchall()}
        tx.execute("SELECT consumer, partition, position FROM cc_tracking")
        applied: dict[str, dict[int, int]] = {}
        for consumer, partition, position in tx.fetchall():
            applied.setdefault(str(consumer), {})[int(partition)] = int(position)
    marks: dict[str, int] = {}
    for consumer, positions in applied.items():
        floor = positions.get(-1, 0)  # a rebuild or embedded history: everything up to it
        mark = relay
        for partition, last in published.items():
            done = max(positions.get(partition, 0), floor)
            if done < last:
                mark = min(mark, done)
        marks[consumer] = mark
    return relay, marks


class RelayDisplacedError(RuntimeError):
    """The relay's position moved under it: another relay is publishing."""


def read_partitions(db: Database, topic_name: str) -> int | None:
    """The partition count the relay publishes with (None before it first ran)."""
    with db.transaction() as tx:
        create_table(tx)
    with db.read() as tx:
        tx.execute("SELECT partitions FROM cc_kafka_relay WHERE topic = ?", (topic_name,))
        row = tx.fetchone()
    return None if row is None else int(row[0])


def read_position(db: Database, topic_name: str) -> int:
    with db.read() as tx:
        tx.execute("SELECT position FROM cc_kafka_relay WHERE topic = ?", (topic_name,))
        row = tx.fetchone()
    return 0 if row is None else int(row[0])


class Relay:
    def __init__(
        self,
        settings: Settings,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        db: Database,
        *,
        listen_channel: str,
        batch_size: int = 1_000,
        idle_wait: float = 0.5,
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.mapper = mapper
        self.db = db
        self.topic = topic(settings)
        self.listen_channel = listen_channel
        self.batch_size = batch_size
        self.idle_wait = idle_wait
        self.position = 0
        self.published = 0  # records Kafka acknowledged to this instance
        self.active = asyncio.Event()  # set while this relay holds the lock and publishes

    async def run(self, stop: asyncio.Event) -> None:
        """Publish until ``stop`` is set; on any failure start again from the durable
        position (with a growing pause), so a broker or database outage is ridden out."""
        backoff = 0.2
        while not stop.is_set():
            try:
                await self._session(stop)
            except Exception as error:  # log by type and retry: the relay must not stop
                name = type(error).__name__
                log.warning("relay for %s failed (%s); restarting", self.topic, name)
                log.debug("relay failure", exc_info=True)
                self.active.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), backoff)
                backoff = min(backoff * 2, 10.0)
            else:
                return

    async def _session(self, stop: asyncio.Event) -> None:
        assert self.settings.database_url is not None
        async with await psycopg.AsyncConnection.connect(
            self.settings.database_url, autocommit=True
        ) as conn:
            if not await self._acquire(conn, stop):
                return
            await conn.execute(f'LISTEN "{self.listen_channel}"')
            await ensure_topic(self.settings)
            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap(self.settings),
                client_id="contact-centre-relay",
                enable_idempotence=True,
                acks="all",
                max_request_size=MAX_MESSAGE_BYTES,
                linger_ms=1,
            )
            await producer.start()
            try:
                partitions = len(await producer.partitions_for(self.topic))
                self.position = await asyncio.to_thread(self._start, partitions)
                log.info(
                    "relay publishing to %s (%d partitions) from position %d",
                    self.topic,
                    partitions,
                    self.position,
                )
                self.active.set()
                await self._publish_until(stop, conn, producer, partitions)
            finally:
                self.active.clear()
                await producer.stop()

    async def _acquire(self, conn: psycopg.AsyncConnection[Any], stop: asyncio.Event) -> bool:
        waiting = False
        while not stop.is_set():
            cursor = await conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (advisory_key(f"relay {self.topic}"),)
            )
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return True
            if not waiting:
                log.info("another relay publishes %s: standing by", self.topic)
                waiting = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 1.0)
        return False

    def _start(self, partitions: int) -> int:
        with self.db.transaction() as tx:
            create_table(tx)
            tx.execute(
                "INSERT INTO cc_kafka_relay (topic, position, partitions) VALUES (?, 0, ?)"
                " ON CONFLICT (topic) DO UPDATE SET partitions = excluded.partitions",
                (self.topic, partitions),
            )
        return read_position(self.db, self.topic)

    async def _publish_until(
        self,
        stop: asyncio.Event,
        conn: psycopg.AsyncConnection[Any],
        producer: Any,
        partitions: int,
    ) -> None:
        while not stop.is_set():
            batch = await asyncio.to_thread(self._read, self.position)
            if batch:
                sent = await self._publish(producer, batch, partitions)
                last = batch[-1][0]
                await asyncio.to_thread(self._save, self.position, last, sent)
                self.position = last
                self.published += len(batch)
            if len(batch) < self.batch_size:
                # Wait for a commit (the event store NOTIFYs on every insert) or time out.
                async for _ in conn.notifies(timeout=self.idle_wait, stop_after=1):
                    pass

    def _read(self, position: int) -> list[tuple[int, OutgoingMessage]]:
        notifications = self.recorder.select_notifications(
            start=position, limit=self.batch_size, inclusive_of_start=False
        )
        return [(n.id, to_message(n, self.mapper.to_domain_event(n))) for n in notifications]

    async def _publish(
        self, producer: Any, batch: Sequence[tuple[int, OutgoingMessage]], partitions: int
    ) -> dict[int, int]:
        """Publish ``batch``; the last notification id it put in each partition."""
        last: dict[int, int] = {}
        sent = []
        for notification_id, message in batch:
            partition = partition_for(message.key, partitions)
            last[partition] = max(notification_id, last.get(partition, 0))
            sent.append(
                await producer.send(
                    self.topic,
                    value=message.value,
                    key=message.key,
                    partition=partition,
                    headers=message.headers,
                )
            )
        await asyncio.gather(*sent)  # every record acknowledged by all in-sync replicas
        return last

    def _save(self, previous: int, position: int, sent: dict[int, int] | None = None) -> None:
        with self.db.transaction() as tx:
            if tx.dialect == "postgres":
                # a position lost in a server crash only means publishing again (deduped)
                tx.execute("SET LOCAL synchronous_commit = off")
            tx.execute(
                "UPDATE cc_kafka_relay SET position = ? WHERE topic = ? AND position = ?",
                (position, self.topic, previous),
            )
            if tx.rowcount != 1:
                raise RelayDisplacedError(f"relay position of {self.topic} moved under it")
            for partition, last in sorted((sent or {}).items()):
                tx.execute(
                    "INSERT INTO cc_kafka_published (topic, partition, position) VALUES (?, ?, ?)"
                    " ON CONFLICT (topic, partition) DO UPDATE SET position = excluded.position"
                    " WHERE cc_kafka_published.position < excluded.position",
                    (self.topic, partition, last),
                )
