"""What a Kafka worker runs on each batch: a projection or a workflow policy, unchanged.

This module knows nothing of the Kafka client: a target is handed the records of its
assigned partitions and makes them durable, so it can be tested on its own.

For every partition a target keeps, in the same transaction as what it writes:

* the **notification id** of the last event it applied (its tracking position: for a
  projection ``cc_tracking (consumer, partition)``; for a policy the event store's
  tracking under ``"<policy>#<partition>"``), used to skip duplicates. The relay
  publishes in log order and may publish a suffix of the log again after a crash, so
  within a partition a record whose notification id is not above the last applied one
  has been applied already;
* the **offset** of the last record it read (for a projection ``cc_kafka_offsets`` in the
  read-model database; for a policy an entry of the event store's ``cc_index``), where a
  new owner of the partition seeks to (offset + 1).

The notification id is read again, and locked, inside each transaction, so a worker that
lost its partitions without knowing it (a "zombie" after a session timeout) can never
apply an event twice: what it would repeat is filtered out, or its tracking write fails.
A position the embedded feed (or a rebuild from the log) recorded for the whole log
(``LOG_PARTITION``) is a floor too: every event up to it is already applied.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import Mapper, Tracking
from eventsourcing.utils import resolve_topic

from contact_centre.application import AlreadyTrackedError, ContactCentre, UnitOfWork
from contact_centre.errors import DomainError
from contact_centre.ports import IndexOp, IndexOpKind
from infra.db import Database, Tx, advisory_key, is_write_conflict
from infra.feed import (
    LOG_PARTITION,
    OFFSETS_DDL,
    TRACKING_DDL,
    AlreadyProcessedError,
    read_tracking,
    write_tracking,
)
from infra.kafka.messages import EventMessage
from infra.runtime import SCHEMA_LOCK_KEY
from projections.base import Projection
from workflows.base import Policy

log = logging.getLogger(__name__)
SETUP_ATTEMPTS = 10  # a set-up that deadlocks with running workers is run again this often

NS_KAFKA_OFFSET = "kafka-offset"  # cc_index namespace of workflow offsets

Batch = Mapping[int, Sequence[EventMessage]]


class Target(Protocol):
    """One projection or policy, run by a Kafka consumer group of its own."""

    name: str
    kind: str  # "projection" or "workflow": part of the consumer group id

    def setup(self) -> None: ...

    def assigned(self, partitions: Sequence[int]) -> dict[int, int | None]:
        """The last offset read in each partition (None: never read), to seek past."""
        ...

    def process(self, batch: Batch) -> None:
        """Apply a batch durably (rows, notification ids and offsets together)."""
        ...


@dataclass(frozen=True, slots=True)
class Fresh:
    """The records of one partition that are not duplicates, and where it ends."""

    messages: list[EventMessage]
    last_notification_id: int | None  # highest new notification id (None: none new)
    last_offset: int


def fresh(messages: Sequence[EventMessage], applied: int | None) -> Fresh:
    """Drop every record whose notification id is not above the highest applied so far."""
    top = applied if applied is not None else 0
    kept: list[EventMessage] = []
    for message in messages:
        if message.notification_id > top:
            kept.append(message)
            top = message.notification_id
    return Fresh(kept, kept[-1].notification_id if kept else None, messages[-1].offset)


def _floor(values: Sequence[int | None]) -> int | None:
    present = [v for v in values if v is not None]
    return max(present) if present else None


class ProjectionTarget:
    """Runs a :class:`Projection` on the read-model database."""

    kind = "projection"

    MAX_CONFLICT_RETRIES = 50
    # A batch waits this long at most for a row or table lock (PostgreSQL), then fails
    # and the worker retries it after a backoff: a batch stuck behind a lock would
    # otherwise hold up its consumer group's rebalance, which waits for the batch.
    LOCK_WAIT_MS = 10_000
    # Say so while a batch keeps conflicting, not only once it is through.
    CONFLICTS_TO_REPORT = 10

    def __init__(self, projection: Projection, db: Database, mapper: Mapper[Any], topic: str):
        self.projection = projection
        self.db = db
        self.mapper = mapper
        self.topic = topic
        self.name = projection.name
        self.lock_key = advisory_key(f"projection {projection.name}")
        self.applied = 0  # events handed to the projection by this instance (for logs)
        self.duplicates = 0
        self.conflicts = 0  # deadlocks (and serialization failures), retried
        self._log_floor: int | None = None
        self._floor_read = False

    def setup(self) -> None:
        # CREATE ... IF NOT EXISTS still locks its table: a worker joining while others
        # apply batches can deadlock with them; the set-up is idempotent, so run it again.
        for attempt in range(1, SETUP_ATTEMPTS + 1):
            try:
                with self.db.transaction() as tx:
                    if tx.dialect == "postgres":  # processes starting together (schema_lock)
                        tx.execute("SELECT pg_advisory_xact_lock(?)", (SCHEMA_LOCK_KEY,))
                    tx.execute(TRACKING_DDL)
                    tx.execute(OFFSETS_DDL)
                    self.projection.setup(tx)
                return
            except Exception as error:
                if not is_write_conflict(error) or attempt == SETUP_ATTEMPTS:
                    raise
                log.info("projection %s: set-up collided with a worker; again", self.name)
                time.sleep(0.05 * attempt)

    def assigned(self, partitions: Sequence[int]) -> dict[int, int | None]:
        with self.db.read() as tx:
            self._log_floor = read_tracking(tx, self.name, LOG_PARTITION)
            self._floor_read = True
            return {p: self._last_offset(tx, p) for p in partitions}

    def _last_offset(self, tx: Tx, partition: int) -> int | None:
        tx.execute(
            "SELECT last_offset FROM cc_kafka_offsets"
            " WHERE consumer = ? AND topic = ? AND partition = ?",
            (self.name, self.topic, partition),
        )
        row = tx.fetchone()
        return None if row is None else int(row[0])

    def _applied(self, tx: Tx, partition: int) -> int | None:
        """The partition's durable notification id, locked until commit on PostgreSQL
        (SQLite's write transaction already excludes other writers). Partitions are
        locked in ascending order, so two workers can never deadlock."""
        lock = " FOR UPDATE" if tx.dialect == "postgres" else ""
        tx.execute(
            f"SELECT position FROM cc_tracking WHERE consumer = ? AND partition = ?{lock}",
            (self.name, partition),
        )
        row = tx.fetchone()
        # The whole-log position changes only in a rebuild, which runs with the workers
        # stopped: it is read at assignment, not locked in every transaction.
        return _floor([None if row is None else int(row[0]), self._log_floor])

    def process(self, batch: Batch) -> None:
        if not self._floor_read:
            self.assigned([])
        started = time.monotonic()
        conflicts = 0
        # Decoded before the transaction waits for the projection's turn (and once,
        # however often it is retried): other workers' batches need not wait for that.
        decoded = self._decode(batch)
        while True:
            try:
                with self.db.transaction() as tx:
                    if tx.dialect == "postgres":
                        # As the embedded read models (SQLite synchronous=NORMAL): a server
                        # crash may lose the last commits, rows and positions together, and
                        # they are applied again from the stored offsets; never half.
                        tx.execute("SET LOCAL synchronous_commit = off")
                        tx.execute(f"SET LOCAL lock_timeout = {int(self.LOCK_WAIT_MS)}")
                        # One batch of a projection at a time across all workers, as the
                        # embedded feed applies it: a projection may join aggregates (a
                        # contact's row counts its conversations, whose events come through
                        # another partition), and such a read-then-write step is safe only
                        # if no other batch of the projection runs meanwhile. Serializable
                        # transactions made it safe too, but their predicate locks (whole
                        # small tables, pages of big ones) had nearly every pair of
                        # concurrent batches conflict, and a big batch applied again and
                        # again held up its consumer group's rebalance for minutes.
                        tx.execute("SELECT pg_advisory_xact_lock(?)", (self.lock_key,))
                    for partition, messages in sorted(batch.items()):
                        if messages:
                            self._partition(tx, partition, messages, decoded)
            except AlreadyProcessedError:
                # Another worker inserted this partition's first tracking row while we
                # read it as missing: nothing was written; filter again on its position.
                continue
            except Exception as error:
                if not is_write_conflict(error) or conflicts >= self.MAX_CONFLICT_RETRIES:
                    raise
                conflicts += 1
                self.conflicts += 1
                if conflicts % self.CONFLICTS_TO_REPORT == 0:
                    log.warning(
                        "projection %s: a batch of %d has met %d write conflicts in %.1f s;"
                        " still retrying",
                        self.name,
                        sum(map(len, batch.values())),
                        conflicts,
                        time.monotonic() - started,
                    )
                time.sleep(random.uniform(0, 0.01 * conflicts))
                continue
            if conflicts:
                # A deadlock (with a joining worker's set-up, say): rare; many (or a slow
                # batch) say why a consumer fell behind.
                log.info(
                    "projection %s: batch of %d applied after %d write conflicts in %.1f s",
                    self.name,
                    sum(map(len, batch.values())),
                    conflicts,
                    time.monotonic() - started,
                )
            return

    def _decode(self, batch: Batch) -> dict[int, Any]:
        """The events of the batch this projection handles, by notification id."""
        interested = self.projection.interested_in
        return {
            m.notification_id: self.mapper.to_domain_event(m.notification)
            for messages in batch.values()
            for m in messages
            if interested(resolve_topic(m.notification.topic))
        }

    def _partition(
        self, tx: Tx, partition: int, messages: Sequence[EventMessage], decoded: dict[int, Any]
    ) -> None:
        todo = fresh(messages, self._applied(tx, partition))
        self.duplicates += len(messages) - len(todo.messages)
        # as the embedded feed: runs of one command's events take set-based statements
        events = [
            (decoded[m.notification_id], m.notification_id)
            for m in todo.messages
            if m.notification_id in decoded
        ]
        self.projection.apply_all(tx, events)
        self.applied += len(events)
        if todo.last_notification_id is not None:
            write_tracking(tx, self.name, partition, todo.last_notification_id)
        self._write_offset(tx, partition, todo.last_offset)

    def _write_offset(self, tx: Tx, partition: int, offset: int) -> None:
        # Only forwards: a zombie's late commit of an older batch must not move it back.
        tx.execute(
            "INSERT INTO cc_kafka_offsets (consumer, topic, partition, last_offset)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (consumer, topic, partition) DO UPDATE"
            " SET last_offset = excluded.last_offset"
            " WHERE cc_kafka_offsets.last_offset < excluded.last_offset",
            (self.name, self.topic, partition, offset),
        )


class PolicyTarget:
    """Runs a workflow :class:`Policy`: its reactions, its notification id per partition
    (the event store's tracking) and its offset (``cc_index``) commit in one transaction
    on the event store, through an application instance of its own."""

    kind = "workflow"

    def __init__(self, policy: Policy, app: ContactCentre, topic: str) -> None:
        self.policy = policy
        self.app = app
        self.topic = topic
        self.name = policy.name
        self.skipped = 0
        self.duplicates = 0

    def tracking_name(self, partition: int) -> str:
        # the same name PolicyConsumer uses for a partition
        return f"{self.name}#{partition}"

    def _offset_key(self, partition: int) -> str:
        return f"{self.topic}|{self.tracking_name(partition)}"

    def setup(self) -> None:
        return None

    def assigned(self, partitions: Sequence[int]) -> dict[int, int | None]:
        keys = {p: self._offset_key(p) for p in partitions}
        found = self.app.index.get_many(NS_KAFKA_OFFSET, list(keys.values()))
        return {p: int(found[k]) if k in found else None for p, k in keys.items()}

    def _applied(self, partition: int) -> int | None:
        return _floor(
            [
                self.app.tracked_position(self.tracking_name(partition)),
                self.app.tracked_position(self.name),  # the embedded feed's position
            ]
        )

    def process(self, batch: Batch) -> None:
        for partition, messages in sorted(batch.items()):
            if messages:
                self._partition(partition, messages)

    def _partition(self, partition: int, messages: Sequence[EventMessage]) -> None:
        while True:
            todo = fresh(messages, self._applied(partition))
            self.duplicates += len(messages) - len(todo.messages)
            try:
                self._commit(partition, todo)
            except AlreadyProcessedError:
                continue  # another worker got there first: filter again on its position
            return

    def _commit(self, partition: int, todo: Fresh) -> None:
        if todo.last_notification_id is None:
            return  # only duplicates: the offset may lag, they are skipped again
        name = self.tracking_name(partition)
        interested = self.policy.interested_in
        relevant = [m for m in todo.messages if interested(resolve_topic(m.notification.topic))]
        try:
            self.app.run(
                self._reacting(partition, relevant, todo.last_offset),
                tracking=Tracking(name, todo.last_notification_id),
            )
        except AlreadyTrackedError as error:
            raise AlreadyProcessedError(str(error)) from error
        except DomainError:
            # One reaction the domain refuses must not stall the others (as embedded).
            self._one_by_one(partition, relevant, todo)

    def _reacting(
        self, partition: int, messages: Sequence[EventMessage], last_offset: int
    ) -> Callable[[UnitOfWork], None]:
        def command(uow: UnitOfWork) -> None:
            for message in messages:
                n = message.notification
                self.policy.react(uow, self.app.mapper.to_domain_event(n), n.id)
            key = self._offset_key(partition)
            uow.index(IndexOp(IndexOpKind.UPSERT, NS_KAFKA_OFFSET, key, str(last_offset)))

        return command

    def _one_by_one(self, partition: int, messages: Sequence[EventMessage], todo: Fresh) -> None:
        name = self.tracking_name(partition)
        for message in messages:
            n = message.notification
            try:
                self.app.run(
                    self._reacting(partition, [message], message.offset),
                    tracking=Tracking(name, n.id),
                )
            except AlreadyTrackedError:
                continue  # done before a crash
            except DomainError as error:
                self.skipped += 1
                log.warning(
                    "workflow %s refused the event at %d (%s): skipped", self.name, n.id, error.code
                )
                self._advance(partition, n.id, message.offset)
        assert todo.last_notification_id is not None
        self._advance(partition, todo.last_notification_id, todo.last_offset)

    def _advance(self, partition: int, notification_id: int, offset: int) -> None:
        try:
            self.app.run(
                self._reacting(partition, [], offset),
                tracking=Tracking(self.tracking_name(partition), notification_id),
            )
        except AlreadyTrackedError:
            return
