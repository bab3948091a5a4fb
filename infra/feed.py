"""The event feed: delivers (position, event) in log order to consumers.

A consumer keeps its own tracking position, written in the same transaction as its rows,
so that a restart neither skips nor repeats an event. This module holds the consumer side
shared by every feed, and the embedded, in-process feed: one thread per consumer reading
the event store's notification log, woken by the writer after each commit (and polling,
so writes by other processes, such as the CLI, are picked up too).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    Mapper,
    Notification,
    Tracking,
)
from eventsourcing.utils import get_topic, resolve_topic

from contact_centre.application import AlreadyTrackedError, ContactCentre, UnitOfWork
from contact_centre.errors import DomainError
from infra.db import Database, Tx, is_write_conflict
from projections.base import Projection
from workflows.base import Policy

log = logging.getLogger(__name__)

LOG_PARTITION = -1  # the event store's own notification log, as opposed to a Kafka partition
CONFLICT_RETRIES = 20  # a catch-up runs a batch again this often after a deadlock

VERSIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_projection_versions ("
    " name TEXT PRIMARY KEY, version INTEGER NOT NULL)"
)
TRACKING_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_tracking ("
    " consumer TEXT NOT NULL, partition INTEGER NOT NULL, position BIGINT NOT NULL,"
    " PRIMARY KEY (consumer, partition))"
)
# Scaled mode: the Kafka offset each projection worker last read, per partition. Emptying
# a projection forgets them too, so its workers read the topic again from the start.
OFFSETS_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_kafka_offsets ("
    " consumer TEXT NOT NULL, topic TEXT NOT NULL, partition INTEGER NOT NULL,"
    " last_offset BIGINT NOT NULL, PRIMARY KEY (consumer, topic, partition))"
)


@dataclass(frozen=True, slots=True)
class FeedItem:
    position: int
    event: Any


class Consumer(Protocol):
    name: str
    # Whether the writer may apply fresh events to it in its own thread (projections); a
    # workflow runs its own commands, so it is only woken.
    inline: bool

    def interested_in(self, event_type: type[Any]) -> bool: ...

    def position(self, partition: int = LOG_PARTITION) -> int | None: ...

    def process(
        self, items: Sequence[FeedItem], last_position: int, partition: int = LOG_PARTITION
    ) -> None: ...


def read_tracking(tx: Tx, consumer: str, partition: int, *, lock: bool = False) -> int | None:
    """The consumer's durable position; ``lock``: in a write transaction, held until it
    ends (PostgreSQL's row lock; SQLite's write transaction excludes other writers from
    its start), so no other process moves it meanwhile."""
    locking = " FOR UPDATE" if lock and tx.dialect == "postgres" else ""
    tx.execute(
        f"SELECT position FROM cc_tracking WHERE consumer = ? AND partition = ?{locking}",
        (consumer, partition),
    )
    row = tx.fetchone()
    return None if row is None else int(row[0])


def derived_only(tx: Tx) -> None:
    """Mark a transaction that writes only read models (rows and their positions): on
    PostgreSQL its commit does not wait for the flush to disk. Read models are derived
    from the log; after a crash that loses the last such commits (never a part of one:
    rows and position stay together) the feed applies those events again from the
    position that did survive. (SQLite read models make the same trade with
    ``synchronous=NORMAL``.) The event store's and the vault's commits stay synchronous."""
    if tx.dialect == "postgres":
        tx.execute("SET LOCAL synchronous_commit TO OFF")


class AlreadyProcessedError(IntegrityError):
    """The consumer's durable position is already at or past this one (another process
    applied it): nothing was written, and the caller should re-read the position."""


def write_tracking(tx: Tx, consumer: str, partition: int, position: int) -> None:
    """Advance the position; refuse to move backwards or stand still (a double apply)."""
    tx.execute(
        "UPDATE cc_tracking SET position = ? WHERE consumer = ? AND partition = ? AND position < ?",
        (position, consumer, partition, position),
    )
    if tx.rowcount == 1:
        return
    tx.execute(
        "INSERT INTO cc_tracking (consumer, partition, position) VALUES (?, ?, ?)"
        " ON CONFLICT (consumer, partition) DO NOTHING",
        (consumer, partition, position),
    )
    if tx.rowcount != 1:
        raise AlreadyProcessedError(f"{consumer} already processed position {position}")


class ProjectionConsumer:
    """Runs a projection against the read-model database."""

    # A batch with no relevant event only moves the position; writing that down can wait
    # (a restart re-reads at most this many irrelevant notifications).
    IDLE_TRACKING_STRIDE = 5_000
    inline = True

    def __init__(self, projection: Projection, db: Database) -> None:
        self.projection = projection
        self.db = db
        self.name = projection.name
        self._written: dict[int, int] = {}

    def setup(self) -> None:
        """Create the tables; if the projection's version changed, drop and rebuild them."""
        with self.db.transaction() as tx:
            tx.execute(TRACKING_DDL)
            tx.execute(VERSIONS_DDL)
            tx.execute("SELECT version FROM cc_projection_versions WHERE name = ?", (self.name,))
            row = tx.fetchone()
            if row is not None and int(row[0]) != self.projection.version:
                log.warning(
                    "projection %s changed from version %s to %s: rebuilding it from the log",
                    self.name,
                    row[0],
                    self.projection.version,
                )
                self.projection.drop(tx)
                self._forget_positions(tx)
            self.projection.setup(tx)
            tx.execute(
                "INSERT INTO cc_projection_versions (name, version) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET version = excluded.version",
                (self.name, self.projection.version),
            )

    def interested_in(self, event_type: type[Any]) -> bool:
        return self.projection.interested_in(event_type)

    def position(self, partition: int = LOG_PARTITION) -> int | None:
        with self.db.read() as tx:
            position = read_tracking(tx, self.name, partition)
        if position is not None:
            self._written[partition] = position
        return position

    def needs_writing(
        self, items: Sequence[FeedItem], last_position: int, partition: int = LOG_PARTITION
    ) -> bool:
        """False when the batch holds nothing for this projection and its durable position
        is recent enough to stay where it is."""
        written = self._written.get(partition)
        return (
            bool(items) or written is None or last_position - written >= self.IDLE_TRACKING_STRIDE
        )

    def process(
        self, items: Sequence[FeedItem], last_position: int, partition: int = LOG_PARTITION
    ) -> None:
        if not self.needs_writing(items, last_position, partition):
            return
        with self.db.transaction() as tx:
            derived_only(tx)
            self.apply(tx, items, last_position, partition)
        self.committed(last_position, partition)

    def apply(
        self, tx: Tx, items: Sequence[FeedItem], last_position: int, partition: int = LOG_PARTITION
    ) -> None:
        """Apply ``items`` and advance the position to ``last_position`` in ``tx``.

        The position is taken first (read and locked): several processes applying one
        projection (``serve`` processes sharing a database) take turns, and each lock
        their positions before any row, so none holds rows while it waits for a
        position another holds (a deadlock with :func:`process_together`, which locks
        the positions of its projections first too).
        """
        stored = read_tracking(tx, self.name, partition, lock=True)
        if stored is not None and stored >= last_position:
            raise AlreadyProcessedError(f"{self.name} already processed position {last_position}")
        self.apply_in(tx, items, last_position, stored, partition)

    def apply_in(
        self,
        tx: Tx,
        items: Sequence[FeedItem],
        last_position: int,
        stored: int | None,
        partition: int = LOG_PARTITION,
    ) -> None:
        """Apply ``items`` and move the position to ``last_position`` in ``tx``, where the
        position was read (and locked) as ``stored``, below it, earlier in ``tx``. Items
        at or below ``stored`` are left out: another process applied them after this one
        last saw the position (its view of the log starts from what it saw)."""
        floor = -1 if stored is None else stored
        self.projection.apply_all(
            tx, [(item.event, item.position) for item in items if item.position > floor]
        )
        if stored is None:  # the first position: a racing first one refuses this
            write_tracking(tx, self.name, partition, last_position)
            return
        tx.execute(
            "UPDATE cc_tracking SET position = ? WHERE consumer = ? AND partition = ?",
            (last_position, self.name, partition),
        )

    def committed(self, position: int, partition: int = LOG_PARTITION) -> None:
        """The transaction that applied events up to ``position`` committed (this
        consumer's own, or a shared one: :func:`process_together`, a rebuild)."""
        self._written[partition] = position

    def reset(self, *, rebuilding: bool = False) -> None:
        """Empty the rows and forget the positions; ``rebuilding``: also drop the indexes
        only queries read, which :meth:`restore_indexes` makes again after the rebuild."""
        with self.db.transaction(pipeline=not rebuilding) as tx:
            if rebuilding:  # first: the rows then go without their entries in these
                self.projection.drop_query_indexes(tx)
            self.projection.reset(tx)
            self._forget_positions(tx)
        self._written.clear()

    def restore_indexes(self) -> None:
        with self.db.transaction(pipeline=False) as tx:
            self.projection.setup(tx)  # CREATE ... IF NOT EXISTS: the dropped ones only

    def _forget_positions(self, tx: Tx) -> None:
        tx.execute("DELETE FROM cc_tracking WHERE consumer = ?", (self.name,))
        tx.execute(OFFSETS_DDL)
        tx.execute("DELETE FROM cc_kafka_offsets WHERE consumer = ?", (self.name,))


def process_together(
    db: Database, batch: Sequence[tuple[ProjectionConsumer, Sequence[FeedItem]]], last_position: int
) -> dict[str, Exception | None]:
    """Apply one stretch of the log to several projections in one read-model transaction
    (one commit, instead of one per projection: on PostgreSQL a round trip and a flush
    each). Each projection's rows and position still commit together. A projection that
    another process has already moved past ``last_position`` is left out; if any other
    fails, the shared transaction is undone and each projection runs again in a
    transaction of its own (the old way), so that one failure is the failing one's alone.

    Returns, by projection name, None for the applied ones and the error of the others.
    """
    outcome: dict[str, Exception | None] = {}
    names = sorted(consumer.name for consumer, _ in batch)
    try:
        with db.transaction() as tx:
            derived_only(tx)
            # The positions of all of them in one read, their rows locked (PostgreSQL; a
            # SQLite write transaction excludes other writers anyway) so that none can move
            # before this commits: then no per-projection check of a row count is needed.
            lock = " FOR UPDATE" if db.dialect == "postgres" else ""
            tx.execute(
                "SELECT consumer, position FROM cc_tracking WHERE partition = ?"
                f" AND consumer IN ({', '.join('?' * len(names))}) ORDER BY consumer{lock}",
                (LOG_PARTITION, *names),
            )
            stored = {str(name): int(position) for name, position in tx.fetchall()}
            for consumer, items in batch:
                name = consumer.name
                if stored.get(name, -1) >= last_position:
                    outcome[name] = AlreadyProcessedError(
                        f"{name} already processed position {last_position}"
                    )
                    continue
                consumer.apply_in(tx, items, last_position, stored.get(name))
                outcome[name] = None
    except Exception:
        return {
            consumer.name: _attempt(consumer, items, last_position) for consumer, items in batch
        }
    for consumer, _ in batch:
        if outcome[consumer.name] is None:
            consumer.committed(last_position)
    return outcome


class PolicyConsumer:
    """Runs a workflow policy: its reactions and its position commit together, in the
    event store, through an application instance of its own."""

    IDLE_TRACKING_STRIDE = 5_000
    inline = False

    def __init__(self, policy: Policy, app: ContactCentre) -> None:
        self.policy = policy
        self.app = app
        self.name = policy.name
        # what it reads of the log: a policy reacts to a few kinds of events only
        self.topics = sorted(get_topic(t) for t in policy.event_types())
        self._written: dict[int, int] = {}
        self.skipped = 0

    def _tracking_name(self, partition: int) -> str:
        return self.name if partition == LOG_PARTITION else f"{self.name}#{partition}"

    def interested_in(self, event_type: type[Any]) -> bool:
        return self.policy.interested_in(event_type)

    def position(self, partition: int = LOG_PARTITION) -> int | None:
        position = self.app.tracked_position(self._tracking_name(partition))
        if position is not None:
            self._written[partition] = position
        return position

    def process(
        self, items: Sequence[FeedItem], last_position: int, partition: int = LOG_PARTITION
    ) -> None:
        written = self._written.get(partition)
        if (
            not items
            and written is not None
            and last_position - written < self.IDLE_TRACKING_STRIDE
        ):
            return
        name = self._tracking_name(partition)
        try:
            self.app.run(self._reacting(items), tracking=Tracking(name, last_position))
        except AlreadyTrackedError as error:
            raise AlreadyProcessedError(str(error)) from error
        except DomainError:
            # One reaction the domain refuses must not stall the others: react to each
            # event in a transaction of its own (with its position) and pass over the
            # refused ones, logged by position.
            self._one_by_one(items, name, last_position)
        self._written[partition] = last_position

    def _reacting(self, items: Sequence[FeedItem]) -> Callable[[UnitOfWork], None]:
        def command(uow: UnitOfWork) -> None:
            for item in items:
                self.policy.react(uow, item.event, item.position)

        return command

    def _one_by_one(self, items: Sequence[FeedItem], name: str, last_position: int) -> None:
        for item in items:
            try:
                self.app.run(self._reacting([item]), tracking=Tracking(name, item.position))
            except AlreadyTrackedError:
                continue  # done before a crash
            except DomainError as error:
                self.skipped += 1
                log.warning(
                    "workflow %s refused the event at %d (%s): skipped",
                    self.name,
                    item.position,
                    error.code,
                )
                self._advance(name, item.position)
        self._advance(name, last_position)

    def _advance(self, name: str, position: int) -> None:
        with contextlib.suppress(AlreadyTrackedError):
            self.app.run(_nothing, tracking=Tracking(name, position))


def _nothing(uow: UnitOfWork) -> None:
    return None


class Progress:
    """Where each consumer has got to, with async waiters (read-your-writes in the API)."""

    def __init__(self) -> None:
        self._positions: dict[str, int] = {}
        self._lock = threading.Lock()
        self._waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        # told of every advance (name, position), in the advancing thread
        self.listeners: list[Callable[[str, int], None]] = []

    def get(self, consumer: str) -> int:
        with self._lock:
            return self._positions.get(consumer, 0)

    def shows(self, consumer: str, position: int) -> bool:
        """Whether ``consumer`` has applied the save whose last notification id is
        ``position`` (a save of this process)."""
        return self.get(consumer) >= position

    def advance(self, consumer: str, position: int) -> None:
        with self._lock:
            self._positions[consumer] = max(position, self._positions.get(consumer, 0))
            ready: list[tuple[str, int, asyncio.Future[None]]] = []
            waiting: list[tuple[str, int, asyncio.Future[None]]] = []
            for w in self._waiters:  # one pass: every open socket may be waiting
                (ready if w[0] == consumer and w[1] <= position else waiting).append(w)
            self._waiters = waiting
        for _, _, future in ready:
            # a waiter whose loop has closed (serve stopping) has nobody left to tell
            with contextlib.suppress(RuntimeError):
                future.get_loop().call_soon_threadsafe(_resolve, future)
        for listener in self.listeners:
            listener(consumer, position)

    async def wait(self, consumer: str, position: int, timeout: float) -> bool:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        with self._lock:
            if self._positions.get(consumer, 0) >= position:
                return True
            self._waiters.append((consumer, position, future))
        try:
            await asyncio.wait_for(asyncio.shield(future), timeout)
        except TimeoutError:
            return False
        finally:  # resolved, timed out or cancelled: no longer waiting
            if not future.done():
                with self._lock:
                    self._waiters = [w for w in self._waiters if w[2] is not future]
        return True


def _attempt(consumer: Consumer, items: Sequence[FeedItem], last: int) -> Exception | None:
    try:
        consumer.process(items, last)
    except Exception as error:
        return error
    return None


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class InProcessFeed:
    """The embedded feed.

    Events are fed to consumers as they are saved: the writer (and every workflow's
    application) hands over what it just recorded (:meth:`publish`), and it is applied at
    once, from memory, to every consumer it continues; a consumer a little behind (another
    thread's save committed just before, not yet published) first takes the events in
    between from the log. Anything else (events written by another process, such as the
    CLI, a consumer far behind, or one that failed) is caught up by the consumer's own
    thread, which reads the notification log from the durable position. A lock per
    consumer keeps the two paths from interleaving.
    """

    # A consumer at most this many notifications short of fresh events reads them from the
    # log and takes them with the fresh ones, so that when the save that published them
    # returns the read models show it; further behind, its own thread catches up.
    INLINE_GAP = 1_000

    def __init__(
        self,
        recorder: ApplicationRecorder,
        mapper: Mapper[Any],
        *,
        batch_size: int = 500,
        poll_interval: float = 0.5,
    ) -> None:
        self.recorder = recorder
        self.mapper = mapper
        self.batch_size = batch_size
        self.poll_interval = poll_interval
        self.progress = Progress()
        self._consumers: list[Consumer] = []
        self._locks: dict[str, threading.Lock] = {}
        self._positions: dict[str, int] = {}
        self._wake: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self.errors: dict[str, str] = {}
        # told of every publish, before it is applied here (the projector process's wake-up)
        self.watchers: list[Callable[[], None]] = []

    # A rebuild reads and commits in bigger batches than live catching up: fewer commits,
    # and nobody waits on its positions.
    REBUILD_BATCH = 5_000

    def add(self, consumer: Consumer) -> None:
        self._consumers.append(consumer)
        self._locks[consumer.name] = threading.Lock()
        self._wake[consumer.name] = threading.Event()

    @property
    def consumers(self) -> list[Consumer]:
        return list(self._consumers)

    def start(self, *, when_woken: bool = False) -> None:
        """One thread per consumer, reading the log from its position at once, or
        (``when_woken``: whoever publishes keeps them up to date) only once :meth:`publish`
        wakes it (a consumer far behind, or one that failed) or its poll comes round."""
        self._stop.clear()
        for consumer in self._consumers:
            thread = threading.Thread(
                target=self._run,
                args=(consumer, when_woken),
                name=f"feed-{consumer.name}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def notify(self) -> None:
        for wake in self._wake.values():
            wake.set()

    def stop(self) -> None:
        self._stop.set()
        self.notify()
        for thread in self._threads:
            thread.join(timeout=10)
        self._threads.clear()

    def publish(self, recorded: Sequence[tuple[int, Any]]) -> None:
        """Apply events just recorded (in log order) to every consumer they continue.

        The projections among them that share a database take the events in one
        transaction (:func:`process_together`). Their locks are all taken, in the feed's
        order, before it begins, so two publishing threads cannot deadlock, nor can a
        consumer's own thread (which holds one lock only).
        """
        if not recorded:
            return
        for watcher in self.watchers:
            watcher()
        first, last = recorded[0][0], recorded[-1][0]
        types = {type(e) for _, e in recorded}  # a few: each consumer asks of these only
        held: dict[str, int] = {}  # consumer → its position
        try:
            for consumer in self._consumers:
                name = consumer.name
                if not consumer.inline:
                    # a workflow reads the log itself, for the events it reacts to: wake
                    # it only when there are some (its poll reads past the others)
                    if any(consumer.interested_in(t) for t in types):
                        self._wake[name].set()
                    continue
                self._locks[name].acquire()
                try:
                    position = self._position(consumer)
                except Exception as error:
                    self._failed(name, error)
                    self._locks[name].release()
                    continue
                if position >= last:
                    self._locks[name].release()
                elif first - 1 - position > self.INLINE_GAP:
                    self._wake[name].set()  # far behind: the thread reads the log
                    self._locks[name].release()
                else:
                    held[name] = position
            applied = self._apply_fresh(held, recorded) if held else []
        finally:
            for name in held:
                self._locks[name].release()
        for name in applied:
            self.progress.advance(name, last)

    def _apply_fresh(self, held: dict[str, int], recorded: Sequence[tuple[int, Any]]) -> list[str]:
        """Apply ``recorded`` to the consumers ``held`` (by name, their locks held, with
        their positions), after what the log holds between their positions and it (events
        another thread recorded just before, and has not published yet); returns the names
        of those applied."""
        first, last = recorded[0][0], recorded[-1][0]
        since = min(held.values())
        before: list[tuple[int, Any]] = []
        if since < first - 1:
            before = [
                (n.id, self.mapper.to_domain_event(n))
                for n in self.recorder.select_notifications(
                    start=since, limit=first - 1 - since, inclusive_of_start=False
                )
                if n.id < first
            ]
        consumers = [c for c in self._consumers if c.name in held]
        outcome: dict[str, Exception | None] = {}
        together: dict[int, list[tuple[ProjectionConsumer, list[FeedItem]]]] = {}
        every = [FeedItem(p, e) for p, e in (*before, *recorded)]
        types = {type(item.event) for item in every}
        for consumer in consumers:
            position = held[consumer.name]
            wanted = {t for t in types if consumer.interested_in(t)}
            items = [i for i in every if type(i.event) in wanted and i.position > position]
            if isinstance(consumer, ProjectionConsumer):
                if consumer.needs_writing(items, last):
                    together.setdefault(id(consumer.db), []).append((consumer, items))
                else:
                    outcome[consumer.name] = None
                continue
            outcome[consumer.name] = _attempt(consumer, items, last)
        for batch in together.values():
            if len(batch) == 1:  # nothing to share
                consumer, items = batch[0]
                outcome[consumer.name] = _attempt(consumer, items, last)
            else:
                outcome.update(process_together(batch[0][0].db, batch, last))
        applied = []
        for consumer in consumers:
            failure = outcome[consumer.name]
            if failure is None:
                self._positions[consumer.name] = last
                applied.append(consumer.name)
            else:
                self._failed(consumer.name, failure)
        return applied

    def _failed(self, name: str, error: Exception) -> None:
        """A consumer could not take fresh events: the write is committed, so its thread
        catches up from the log (from the durable position, read again)."""
        if not isinstance(error, AlreadyProcessedError):  # another process applied them
            log.error("consumer %s failed on fresh events", name, exc_info=error)
            self.errors[name] = type(error).__name__
        self._positions.pop(name, None)
        self._wake[name].set()

    def _position(self, consumer: Consumer) -> int:
        position = self._positions.get(consumer.name)
        if position is None:
            position = consumer.position() or 0
            self._positions[consumer.name] = position
            self.progress.advance(consumer.name, position)
        return position

    def reset(self, consumer: ProjectionConsumer) -> None:
        """Empty a consumer's rows and position (before a rebuild from the start)."""
        with self._locks.setdefault(consumer.name, threading.Lock()):
            consumer.reset()
            self._positions.pop(consumer.name, None)

    def rebuild(
        self, consumer: ProjectionConsumer, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Empty a projection and apply the whole log to it again; returns events read.
        ``progress(position, read)`` is called after every batch."""
        return self.rebuild_together([consumer], progress)

    def rebuild_together(
        self,
        consumers: Sequence[ProjectionConsumer],
        progress: Callable[[int, int], None] | None = None,
    ) -> int:
        """Empty the projections and apply the whole log to all of them in one pass;
        returns events read. Each batch of the log is read once and each event in it
        decoded once (only if one of them handles it); the projections' rows and tracking
        positions of a batch commit in one transaction per read-model database. Their
        query-only indexes are dropped first and built once at the end."""
        by_db: dict[int, tuple[Database, list[ProjectionConsumer]]] = {}
        for consumer in consumers:
            by_db.setdefault(id(consumer.db), (consumer.db, []))[1].append(consumer)
        interested: dict[str, list[ProjectionConsumer]] = {}
        read = position = 0
        with contextlib.ExitStack() as stack:
            for consumer in consumers:  # keep the feed's threads and publish() off them
                stack.enter_context(self._locks.setdefault(consumer.name, threading.Lock()))
            for db, _ in by_db.values():
                stack.enter_context(db.bulk())
            for consumer in consumers:
                consumer.reset(rebuilding=True)
                self._positions.pop(consumer.name, None)
            stack.callback(_restore_indexes, consumers)  # also after a failure
            while True:
                notifications = self.recorder.select_notifications(
                    start=position, limit=self.REBUILD_BATCH, inclusive_of_start=False
                )
                if not notifications:
                    break
                items: dict[str, list[FeedItem]] = {c.name: [] for c in consumers}
                for n in notifications:
                    wanted = interested.get(n.topic)
                    if wanted is None:
                        event_type = resolve_topic(n.topic)
                        wanted = [c for c in consumers if c.interested_in(event_type)]
                        interested[n.topic] = wanted
                    if wanted:
                        item = FeedItem(n.id, self.mapper.to_domain_event(n))
                        for consumer in wanted:
                            items[consumer.name].append(item)
                position = notifications[-1].id
                for db, group in by_db.values():
                    with db.transaction() as tx:
                        derived_only(tx)
                        for consumer in group:
                            consumer.apply(tx, items[consumer.name], position)
                read += len(notifications)
                for consumer in consumers:
                    consumer.committed(position)
                    self._positions[consumer.name] = position
                    self.progress.advance(consumer.name, position)
                if progress is not None:
                    progress(position, read)
        return read

    def catch_up(self, consumer: Consumer) -> int:
        """Process everything recorded so far, synchronously; returns the count read."""
        read = 0
        conflicts = 0
        while True:
            try:
                done = self._step(consumer)
            except AlreadyProcessedError:
                continue  # another process got there first; _step re-reads the position
            except Exception as error:
                # Another process applying the same read model (PostgreSQL): a deadlock or
                # serialization failure rolled the batch back whole; run it again.
                if not is_write_conflict(error) or conflicts >= CONFLICT_RETRIES:
                    raise
                conflicts += 1
                time.sleep(0.01 * conflicts)
                continue
            read += done
            if done == 0:
                return read

    def _step(self, consumer: Consumer) -> int:
        with self._locks.setdefault(consumer.name, threading.Lock()):
            try:
                position = self._position(consumer)
                if isinstance(consumer, PolicyConsumer):
                    notifications, last = self._select_topics(position, consumer.topics)
                else:
                    notifications = self.recorder.select_notifications(
                        start=position, limit=self.batch_size, inclusive_of_start=False
                    )
                    last = notifications[-1].id if notifications else position
                if last == position:
                    return 0
                items = [
                    FeedItem(n.id, self.mapper.to_domain_event(n))
                    for n in notifications
                    if consumer.interested_in(resolve_topic(n.topic))
                ]
                consumer.process(items, last)
            except BaseException:
                self._positions.pop(consumer.name, None)  # re-read the durable position
                raise
            self._positions[consumer.name] = last
        self.progress.advance(consumer.name, last)
        return len(notifications)

    def _select_topics(
        self, position: int, topics: Sequence[str]
    ) -> tuple[Sequence[Notification], int]:
        """The notifications after ``position`` with one of ``topics`` (the store skips the
        others without handing them over), and the position read up to: the end of the
        log as it was, or the last one returned when there were more than a batch."""
        end = self.recorder.max_notification_id() or 0
        if end <= position or not topics:
            return [], max(end, position)
        found = self.recorder.select_notifications(
            start=position, limit=self.batch_size, stop=end, topics=topics, inclusive_of_start=False
        )
        return found, found[-1].id if len(found) == self.batch_size else end

    def _run(self, consumer: Consumer, when_woken: bool = False) -> None:
        wake = self._wake[consumer.name]
        backoff = 0.1
        if when_woken:
            wake.wait(self.poll_interval)
            wake.clear()
        while not self._stop.is_set():
            try:
                done = self._step(consumer)
                self.errors.pop(consumer.name, None)
                backoff = 0.1
            except AlreadyProcessedError:
                continue
            except Exception as error:  # keep going: a projection must not stop the product
                log.exception("consumer %s failed; retrying", consumer.name)
                self.errors[consumer.name] = type(error).__name__
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if done == 0:
                wake.wait(self.poll_interval)
                wake.clear()


def _restore_indexes(consumers: Sequence[ProjectionConsumer]) -> None:
    for consumer in consumers:
        consumer.restore_indexes()


def wait_until(predicate: Any, timeout: float = 5.0, interval: float = 0.01) -> bool:
    """Poll ``predicate`` until true or timeout (used by CLI and tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())
