"""What a worker does with a batch, without Kafka: dedupe by notification id, offsets and
notification ids committed with the rows, zombies refused, the log position as a floor.
On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from uuid import uuid4

import psycopg
import pytest

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation
from infra.db import Tx
from infra.feed import LOG_PARTITION, write_tracking
from infra.kafka.messages import EventMessage
from infra.kafka.targets import PolicyTarget, ProjectionTarget, fresh
from infra.runtime import Runtime
from projections import inbox
from projections.base import Projection, handles
from tests.integration.test_feed import receive_many
from workflows.base import Policy, reacts_to

TOPIC = "test.events"


class Recording(Projection):
    """Keeps every (position, event id) it is given; fails at ``fail_at`` if set."""

    name = "recording"
    tables = ("rm_test_seen",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_test_seen ("
        " position BIGINT NOT NULL, event_id TEXT NOT NULL)",
    )
    fail_at: ClassVar[int | None] = None

    @handles(Conversation.MessageReceived)
    def _seen(self, tx: Tx, event: Any, position: int) -> None:
        if position == self.fail_at:
            raise RuntimeError("simulated failure")
        tx.execute(
            "INSERT INTO rm_test_seen (position, event_id) VALUES (?, ?)",
            (position, f"{event.originator_id}/{event.originator_version}"),
        )


@pytest.fixture(autouse=True)
def _reset() -> None:
    Recording.fail_at = None


def messages(runtime: Runtime, count: int, partition: int = 0) -> list[EventMessage]:
    """``count`` MessageReceived events as the records of one partition (offsets 0..)."""
    tenant, _ = runtime.app.register_tenant("Acme")
    start = runtime.app.recorder.max_notification_id() or 0
    receive_many(runtime, tenant, count)
    found = runtime.app.recorder.select_notifications(
        start=start, limit=10_000, inclusive_of_start=False
    )
    received = [n for n in found if n.topic.endswith("Conversation.MessageReceived")]
    assert len(received) == count
    return [EventMessage(partition, offset, n) for offset, n in enumerate(received)]


def renumber(records: Sequence[EventMessage], first_offset: int) -> list[EventMessage]:
    """The same events at later offsets (as a relay publishing them again puts them)."""
    return [
        EventMessage(m.partition, first_offset + i, m.notification) for i, m in enumerate(records)
    ]


def seen(runtime: Runtime) -> list[int]:
    with runtime.readdb.read() as tx:
        tx.execute("SELECT position FROM rm_test_seen ORDER BY position")
        return [int(row[0]) for row in tx.fetchall()]


@pytest.fixture
def target(runtime: Runtime) -> ProjectionTarget:
    made = ProjectionTarget(Recording(), runtime.readdb, runtime.app.mapper, TOPIC)
    made.setup()
    return made


def test_fresh_keeps_only_records_above_the_highest_applied_notification_id() -> None:
    def at(offset: int, nid: int) -> EventMessage:
        from eventsourcing.persistence import Notification

        return EventMessage(0, offset, Notification(uuid4(), 1, "t", b"", nid))

    # 3, 8 published; the relay restarts from 2 and publishes 3, 8 again, then 11
    result = fresh([at(0, 3), at(1, 8), at(2, 3), at(3, 8), at(4, 11)], applied=None)
    assert [m.notification_id for m in result.messages] == [3, 8, 11]
    assert result.last_notification_id == 11
    assert result.last_offset == 4
    only_duplicates = fresh([at(5, 8), at(6, 11)], applied=11)
    assert only_duplicates.messages == []
    assert only_duplicates.last_notification_id is None
    assert only_duplicates.last_offset == 6


def test_a_replayed_stretch_is_applied_once_with_notification_ids_as_positions(
    runtime: Runtime, target: ProjectionTarget
) -> None:
    records = messages(runtime, 6)
    nids = [m.notification_id for m in records]
    target.process({0: records[:4]})
    # a relay restart publishes the last two again, then the rest
    target.process({0: renumber(records[2:], first_offset=4)})
    assert seen(runtime) == nids  # every event once, at its notification id, not its offset
    assert target.duplicates == 2
    assert target.assigned([0, 1]) == {0: 7, 1: None}  # last offset read; 1 never read


def test_rows_offset_and_notification_id_commit_together_or_not_at_all(
    runtime: Runtime, target: ProjectionTarget
) -> None:
    records = messages(runtime, 5)
    Recording.fail_at = records[3].notification_id
    with pytest.raises(RuntimeError, match="simulated failure"):
        target.process({0: records})
    assert seen(runtime) == []
    assert target.assigned([0]) == {0: None}  # a new owner starts over: nothing is lost
    Recording.fail_at = None
    target.process({0: records})
    assert seen(runtime) == [m.notification_id for m in records]


def test_a_zombie_batch_applies_nothing_and_moves_no_offset_back(
    runtime: Runtime, target: ProjectionTarget
) -> None:
    records = messages(runtime, 6)
    new_owner = ProjectionTarget(Recording(), runtime.readdb, runtime.app.mapper, TOPIC)
    new_owner.process({0: records})
    # the old owner, not knowing it lost the partition, commits what it had fetched
    target.process({0: records[:4]})
    assert seen(runtime) == [m.notification_id for m in records]
    assert target.assigned([0]) == {0: 5}


def test_the_position_of_a_rebuild_from_the_log_is_a_floor(
    runtime: Runtime, target: ProjectionTarget
) -> None:
    records = messages(runtime, 5)
    with runtime.readdb.transaction() as tx:  # as the embedded feed or a rebuild leaves it
        write_tracking(tx, "recording", LOG_PARTITION, records[2].notification_id)
    target.assigned([0])
    target.process({0: records})
    assert seen(runtime) == [m.notification_id for m in records[3:]]


def test_partitions_keep_their_own_positions(runtime: Runtime, target: ProjectionTarget) -> None:
    first = messages(runtime, 3, partition=0)
    second = messages(runtime, 3, partition=1)
    # partition 1 holds later notification ids; partition 0's must still all apply
    target.process({1: second})
    target.process({0: first})
    assert seen(runtime) == sorted(m.notification_id for m in [*first, *second])


class NoteOnOpen(Policy):
    name = "note-on-open"

    @reacts_to(Conversation.Opened)
    def _opened(self, uow: UnitOfWork, event: Any, position: int) -> None:
        uow.app.add_note_in(uow, event.tenant_id, event.originator_id, "system:hi", "Hi")


def test_a_policy_reacts_once_per_event_and_keeps_offset_and_position_with_its_reaction(
    runtime: Runtime,
) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    start = runtime.app.recorder.max_notification_id() or 0
    receive_many(runtime, tenant, 3)  # three visitors (v-0..v-2): three conversations
    found = runtime.app.recorder.select_notifications(
        start=start, limit=100, inclusive_of_start=False
    )
    records = [EventMessage(2, offset, n) for offset, n in enumerate(found)]
    policy = PolicyTarget(NoteOnOpen(), runtime.make_app(), TOPIC)
    policy.process({2: records})
    policy.process({2: renumber(records, first_offset=len(records))})  # all again
    runtime.catch_up()
    with runtime.readdb.read() as tx:
        conversations = inbox.list_conversations(tx, str(tenant))
        entries = [inbox.list_messages(tx, str(tenant), c["id"]) for c in conversations]
    notes = [[m["author"] for m in listed if m["kind"] == "note"] for listed in entries]
    assert len(conversations) == 3
    assert notes == [["system:hi"]] * 3
    assert policy.duplicates == len(records)
    # the offset moves with a reaction; a batch of duplicates only is re-read after a crash
    assert policy.assigned([2, 3]) == {2: len(records) - 1, 3: None}
    assert runtime.app.tracked_position("note-on-open#2") == records[-1].notification_id


def _deadlock() -> Exception:
    """An error as PostgreSQL's deadlock detector raises it (SQLSTATE 40P01)."""
    error = RuntimeError("deadlock detected")
    error.sqlstate = "40P01"  # type: ignore[attr-defined]
    return error


class _DeadlockingDb:
    """A read-model store whose first transactions deadlock (PostgreSQL's 40P01)."""

    def __init__(self, real: Any, deadlocks: int) -> None:
        self.real = real
        self.deadlocks = deadlocks

    def transaction(self) -> Any:
        if self.deadlocks > 0:
            self.deadlocks -= 1
            raise _deadlock()
        return self.real.transaction()


def test_a_projection_set_up_that_deadlocks_with_running_workers_is_run_again(
    runtime: Runtime,
) -> None:
    db = _DeadlockingDb(runtime.readdb, deadlocks=2)
    target = ProjectionTarget(inbox.InboxProjection(), db, runtime.app.mapper, "t")  # type: ignore[arg-type]
    target.setup()
    assert db.deadlocks == 0
    with runtime.readdb.read() as tx:  # the set-up ran: its tables are there
        tx.execute("SELECT COUNT(*) FROM rm_conversations")
        assert tx.fetchone() is not None
    db.deadlocks = 100  # past the bound: the error reaches the worker
    with pytest.raises(RuntimeError, match="deadlock"):
        target.setup()


class _ConflictingDb(_DeadlockingDb):
    """Also reads (a target reads its floor through the store)."""

    def read(self) -> Any:
        return self.real.read()


def _apply_after_conflicts(
    runtime: Runtime, caplog: pytest.LogCaptureFixture, *, conflicts: int, records: int
) -> ProjectionTarget:
    """Process a batch of ``records`` whose first ``conflicts`` transactions conflict;
    checks it was applied once, with the log captured."""
    db = _ConflictingDb(runtime.readdb, deadlocks=0)
    target = ProjectionTarget(Recording(), db, runtime.app.mapper, TOPIC)  # type: ignore[arg-type]
    target.setup()
    db.deadlocks = conflicts
    batch = messages(runtime, records)
    with caplog.at_level("INFO", logger="infra.kafka.targets"):
        target.process({0: batch})
    assert seen(runtime) == [m.notification_id for m in batch]
    return target


def test_a_batch_that_conflicts_with_another_worker_is_applied_once_and_says_so(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    target = _apply_after_conflicts(runtime, caplog, conflicts=3, records=4)
    assert target.conflicts == 3
    assert "projection recording: batch of 4 applied after 3 write conflicts" in caplog.text


def test_a_batch_that_keeps_conflicting_says_so_before_it_is_through(
    runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    _apply_after_conflicts(
        runtime, caplog, conflicts=ProjectionTarget.CONFLICTS_TO_REPORT, records=2
    )
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1
    assert "a batch of 2 has met 10 write conflicts" in warned[0].getMessage()


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_batch_waiting_on_a_lock_gives_up_and_applies_later(
    runtime: Runtime, target: ProjectionTarget
) -> None:
    records = messages(runtime, 3)
    target.LOCK_WAIT_MS = 300
    assert runtime.settings.database_url is not None
    with psycopg.connect(runtime.settings.database_url) as holder:
        holder.execute("LOCK TABLE rm_test_seen IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(psycopg.errors.LockNotAvailable):
            target.process({0: records})
        assert time.monotonic() - started < 5
    target.process({0: records})  # the lock is gone: the retry applies the batch once
    assert seen(runtime) == [m.notification_id for m in records]


class Counting(Projection):
    """Counts the messages in one row, reading the count and writing it back a moment
    later: the read-then-write step a projection joining aggregates takes."""

    name = "counting"
    tables = ("rm_test_count",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_test_count (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
        "INSERT INTO rm_test_count (id, n) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    )

    @handles(Conversation.MessageReceived)
    def _counted(self, tx: Tx, event: Any, position: int) -> None:
        tx.execute("SELECT n FROM rm_test_count WHERE id = 1")
        row = tx.fetchone()
        assert row is not None
        time.sleep(0.005)  # the other worker's batch runs meanwhile, if it may
        tx.execute("UPDATE rm_test_count SET n = ? WHERE id = 1", (int(row[0]) + 1,))


def test_two_workers_of_one_projection_take_turns_and_lose_no_update(runtime: Runtime) -> None:
    """Two workers own a partition each and apply their batches at the same time; every
    batch reads the count the other's batches wrote, without conflicts to retry."""
    workers = [
        ProjectionTarget(Counting(), runtime.readdb, runtime.app.mapper, TOPIC) for _ in range(2)
    ]
    workers[0].setup()
    batches = {p: messages(runtime, 24, partition=p) for p in (0, 1)}

    def work(partition: int) -> None:
        records = batches[partition]
        for start in range(0, len(records), 4):
            workers[partition].process({partition: records[start : start + 4]})

    threads = [threading.Thread(target=work, args=(p,)) for p in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with runtime.readdb.read() as tx:
        tx.execute("SELECT n FROM rm_test_count WHERE id = 1")
        assert tx.fetchone() == (48,)
    assert [w.conflicts for w in workers] == [0, 0]


class _CountingMapper:
    """The application's mapper, counting the events it decodes."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.decoded = 0

    def to_domain_event(self, notification: Any) -> Any:
        self.decoded += 1
        return self.real.to_domain_event(notification)


class _DeadlockingOnce(Recording):
    """Meets a deadlock in its first transaction, after the events were decoded."""

    met = 0

    def apply_all(self, tx: Tx, events: Any) -> None:
        if self.met == 0:
            self.met += 1
            raise _deadlock()
        super().apply_all(tx, events)


def test_a_batch_applied_again_after_a_deadlock_is_decoded_once(runtime: Runtime) -> None:
    mapper = _CountingMapper(runtime.app.mapper)
    target = ProjectionTarget(_DeadlockingOnce(), runtime.readdb, mapper, TOPIC)  # type: ignore[arg-type]
    target.setup()
    records = messages(runtime, 5)
    target.process({0: records})
    assert target.conflicts == 1
    assert seen(runtime) == [m.notification_id for m in records]
    assert mapper.decoded == 5
