"""Kafka workers: one consumer group per projection or policy, any number of members.

Each :class:`PartitionWorker` is a member of the group ``{prefix}.{kind}.{name}`` and runs
one :class:`~infra.kafka.targets.Target` on the partitions the group gives it:

* Kafka's auto-commit is off and nothing is committed to Kafka: the target stores each
  partition's offset and notification id with its rows, in one transaction.
* On assignment it seeks every partition to the stored offset + 1 (the beginning when
  there is none). On revocation it first lets the batch in flight commit, then forgets
  the partitions; a batch fetched before a rebalance is dropped, never applied late.
* Batches are at most ``max_records`` records, well inside ``max_poll_interval_ms``.
* A failed batch is not skipped: the worker seeks back to what is durable and retries
  with a growing pause (a projection error must not lose events). If it cannot even read
  what is durable, the worker stops (its process exits) rather than read on unseeked.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.abc import ConsumerRebalanceListener  # type: ignore[import-untyped]

from infra.config import Settings
from infra.kafka.client import bootstrap, ensure_topic, topic
from infra.kafka.messages import from_record
from infra.kafka.targets import Target

log = logging.getLogger(__name__)
SLOW_BATCH_SECONDS = 10.0  # a third of the rebalance timeout


def group_id(settings: Settings, target: Target) -> str:
    return f"{settings.kafka_topic_prefix}.{target.kind}.{target.name}"


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, worker: PartitionWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.revoked(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.worker.assigned(assigned)


class PartitionWorker:
    def __init__(
        self,
        settings: Settings,
        target: Target,
        *,
        max_records: int = 500,
        poll_timeout_ms: int = 200,
        max_poll_interval_ms: int = 120_000,
    ) -> None:
        self.settings = settings
        self.target = target
        self.topic = topic(settings)
        self.max_records = max_records
        self.poll_timeout_ms = poll_timeout_ms
        self.max_poll_interval_ms = max_poll_interval_ms
        self.partitions: frozenset[int] = frozenset()
        self.assignments = 0
        self.batches = 0
        self.records = 0
        self._lock = asyncio.Lock()  # held while a batch is applied; rebalances wait on it
        self._consumer: Any = None
        self._fatal: Exception | None = None

    @property
    def group(self) -> str:
        return group_id(self.settings, self.target)

    async def run(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.target.setup)
        await ensure_topic(self.settings)
        session_ms = self.settings.kafka_session_timeout_ms
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap(self.settings),
            group_id=self.group,
            client_id=f"contact-centre-{self.target.kind}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=self.max_records,
            max_poll_interval_ms=self.max_poll_interval_ms,
            session_timeout_ms=session_ms,
            heartbeat_interval_ms=max(100, session_ms // 3),
            # how long the group waits for members to rejoin: a member finishing its
            # batch first must fit in it
            rebalance_timeout_ms=max(session_ms, 30_000),
            fetch_max_wait_ms=100,
        )
        self._consumer = consumer
        consumer.subscribe([self.topic], listener=_Listener(self))
        await consumer.start()
        try:
            await self._loop(consumer, stop)
        finally:
            await consumer.stop()  # leaves the group, so the others rebalance at once
            self._consumer = None

    async def _loop(self, consumer: Any, stop: asyncio.Event) -> None:
        backoff = 0.2
        while not stop.is_set():
            if self._fatal is not None:
                raise self._fatal
            fetched = await consumer.getmany(
                timeout_ms=self.poll_timeout_ms, max_records=self.max_records
            )
            if not fetched:
                continue
            async with self._lock:
                # A rebalance may have come since the fetch: records of partitions no
                # longer ours are left to their new owner (who seeks to what is stored);
                # the rest are applied now (anything applied already is skipped by its
                # notification id, inside the transaction).
                mine = {tp: rs for tp, rs in fetched.items() if tp.partition in self.partitions}
                if not any(mine.values()):
                    continue
                try:
                    batch = {
                        tp.partition: [
                            from_record(tp.partition, r.offset, r.value, r.headers) for r in rs
                        ]
                        for tp, rs in mine.items()
                        if rs
                    }
                    started = time.monotonic()
                    await asyncio.to_thread(self.target.process, batch)
                    took = time.monotonic() - started
                    if took > SLOW_BATCH_SECONDS:  # a rebalance waits for it: say so
                        log.warning(
                            "%s %s: a batch of %d records took %.1f s",
                            self.target.kind,
                            self.target.name,
                            sum(map(len, batch.values())),
                            took,
                        )
                except Exception as error:  # retry from what is durable; never skip
                    log.warning(
                        "%s %s failed on a batch (%s); retrying",
                        self.target.kind,
                        self.target.name,
                        type(error).__name__,
                    )
                    log.debug("batch failure", exc_info=True)
                    await self._seek_to_stored(consumer, sorted(tp.partition for tp in mine))
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                backoff = 0.2
                self.batches += 1
                self.records += sum(len(m) for m in batch.values())

    async def revoked(self, revoked: Sequence[TopicPartition]) -> None:
        async with self._lock:  # the batch in flight has committed when this is acquired
            self.partitions = frozenset()
        if revoked:
            log.info(
                "%s %s: partitions %s revoked",
                self.target.kind,
                self.target.name,
                ",".join(str(tp.partition) for tp in sorted(revoked)),
            )

    async def assigned(self, assigned: Sequence[TopicPartition]) -> None:
        async with self._lock:
            partitions = sorted(tp.partition for tp in assigned if tp.topic == self.topic)
            try:
                await self._seek_to_stored(self._consumer, partitions)
            except Exception as error:
                # Without seeking, the consumer would read from wherever it was: stop
                # instead (the main loop raises this), and a restart seeks from what is
                # stored.
                self._fatal = error
                return
            self.partitions = frozenset(partitions)
            self.assignments += 1
        log.info(
            "%s %s: partitions %s assigned",
            self.target.kind,
            self.target.name,
            ",".join(map(str, partitions)) or "none",
        )

    async def _seek_to_stored(self, consumer: Any, partitions: Sequence[int]) -> None:
        stored = await asyncio.to_thread(self.target.assigned, partitions)
        for partition, last in stored.items():
            tp = TopicPartition(self.topic, partition)
            if last is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, last + 1)


async def run_workers(settings: Settings, targets: Sequence[Target], stop: asyncio.Event) -> None:
    """Run one group member per target until ``stop`` is set (or one of them fails)."""
    workers = [PartitionWorker(settings, target) for target in targets]
    if not workers:
        await stop.wait()
        return
    tasks = [asyncio.create_task(w.run(stop), name=f"worker-{w.group}") for w in workers]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            task.result()
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
