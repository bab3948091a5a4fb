"""The event feed: tracking commits with the rows, so restarts neither skip nor repeat."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.persistence import IntegrityError

from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import Settings
from infra.feed import (
    LOG_PARTITION,
    AlreadyProcessedError,
    FeedItem,
    ProjectionConsumer,
    process_together,
    write_tracking,
)
from infra.runtime import Runtime, build
from projections import inbox
from projections.base import Projection, Tx, handles


class CountingProjection(Projection):
    """Counts received messages; can be told to fail at one position (a crash mid-batch)."""

    name = "counting"
    tables = ("rm_test_counts",)
    ddl = ("CREATE TABLE IF NOT EXISTS rm_test_counts (id INTEGER PRIMARY KEY, n BIGINT NOT NULL)",)
    fail_at: ClassVar[int | None] = None
    conflicts: ClassVar[int] = 0  # times to fail as a deadlock would, before applying

    @handles(Conversation.MessageReceived)
    def _count(self, tx: Tx, event: Any, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_test_counts (id, n) VALUES (1, 1)"
            " ON CONFLICT (id) DO UPDATE SET n = rm_test_counts.n + 1"
        )
        if position == self.fail_at:
            raise RuntimeError("simulated crash")
        if CountingProjection.conflicts > 0:
            CountingProjection.conflicts -= 1
            raise Deadlock("deadlock detected")


class Deadlock(Exception):
    """What PostgreSQL raises when two processes apply one read model's rows crosswise."""

    sqlstate = "40P01"


def count(runtime: Runtime) -> int:
    with runtime.readdb.read() as tx:
        tx.execute("SELECT n FROM rm_test_counts WHERE id = 1")
        row = tx.fetchone()
    return 0 if row is None else int(row[0])


def receive_many(runtime: Runtime, tenant: UUID, n: int, visitor: str | None = None) -> None:
    """``n`` webchat messages from three visitors in turn, or all from ``visitor``."""
    for i in range(n):
        runtime.app.receive(
            Interaction(
                tenant_id=tenant,
                channel=Channel.WEBCHAT,
                direction=Direction.INBOUND,
                provider="webchat",
                provider_message_id=str(uuid4()),
                sender=Identity(IdentityKind.VISITOR, visitor or f"v-{i % 3}"),
                body=f"message {i}",
                occurred_at=datetime.now(UTC),
            )
        )


@pytest.fixture
def counting(runtime: Runtime) -> ProjectionConsumer:
    consumer = ProjectionConsumer(CountingProjection(), runtime.readdb)
    consumer.setup()
    CountingProjection.fail_at = None
    CountingProjection.conflicts = 0
    return consumer


def test_a_restart_neither_skips_nor_repeats(
    runtime: Runtime, settings: Settings, counting: ProjectionConsumer
) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 12)
    runtime.feed.catch_up(counting)
    assert count(runtime) == 12
    restarted = build(settings)
    try:
        again = ProjectionConsumer(CountingProjection(), restarted.readdb)
        assert restarted.feed.catch_up(again) == 0
        assert count(restarted) == 12
        receive_many(restarted, tenant, 5)
        restarted.feed.catch_up(again)
        assert count(restarted) == 17
    finally:
        restarted.close()


def test_a_crash_mid_batch_applies_nothing_of_it_and_resumes_exactly_once(
    runtime: Runtime, counting: ProjectionConsumer
) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 10)
    latest = runtime.app.recorder.max_notification_id()
    assert latest is not None
    CountingProjection.fail_at = latest - 2  # somewhere inside the single batch
    with pytest.raises(RuntimeError, match="simulated crash"):
        runtime.feed.catch_up(counting)
    assert count(runtime) == 0
    assert counting.position() is None
    CountingProjection.fail_at = None
    runtime.feed.catch_up(counting)
    assert count(runtime) == 10
    assert counting.position() == latest


def test_a_catch_up_runs_a_batch_again_after_a_deadlock_and_applies_it_once(
    runtime: Runtime, counting: ProjectionConsumer
) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 6)
    CountingProjection.conflicts = 3
    runtime.feed.catch_up(counting)
    assert CountingProjection.conflicts == 0
    assert count(runtime) == 6  # each attempt rolled back whole: counted once
    CountingProjection.conflicts = 100  # past the bound: the error reaches the caller
    receive_many(runtime, tenant, 1)
    with pytest.raises(Deadlock):
        runtime.feed.catch_up(counting)
    assert count(runtime) == 6


def test_tracking_refuses_to_apply_a_position_twice(runtime: Runtime) -> None:
    with runtime.readdb.transaction() as tx:
        write_tracking(tx, "probe", -1, 5)
    with pytest.raises(IntegrityError), runtime.readdb.transaction() as tx:
        write_tracking(tx, "probe", -1, 5)
    with pytest.raises(IntegrityError), runtime.readdb.transaction() as tx:
        write_tracking(tx, "probe", -1, 3)


def _dump(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    dump = {}
    with runtime.readdb.read() as tx:
        for table in ("rm_conversations", "rm_messages", "rm_contacts"):
            tx.execute(f"SELECT * FROM {table} ORDER BY id")
            dump[table] = tx.fetchall()
    return dump


def test_rebuilding_the_inbox_from_scratch_gives_the_same_rows(runtime: Runtime) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 9)
    runtime.catch_up()
    before = _dump(runtime)
    assert len(before["rm_messages"]) == 9
    consumer = runtime.consumer("inbox")
    runtime.feed.reset(consumer)
    with runtime.readdb.read() as tx:
        assert inbox.list_conversations(tx, str(tenant)) == []
    runtime.feed.catch_up(consumer)
    assert _dump(runtime) == before


async def test_the_running_feed_picks_up_writes_by_another_process(
    runtime: Runtime, settings: Settings
) -> None:
    """`contact-centre tenant create` writes from its own process while serve runs."""
    runtime.start()
    other = build(settings)
    try:
        other.app.register_tenant("From the CLI")
        latest = other.app.recorder.max_notification_id()
        assert latest is not None
        assert await runtime.feed.progress.wait("directory", latest, timeout=5)
    finally:
        other.close()


class FailingProjection(Projection):
    """Writes a row for every message, then fails: its part of a shared transaction must
    be undone alone."""

    name = "failing"
    tables = ("rm_test_failing",)
    ddl = ("CREATE TABLE IF NOT EXISTS rm_test_failing (id TEXT PRIMARY KEY)",)

    @handles(Conversation.MessageReceived)
    def _fail(self, tx: Tx, event: Any, position: int) -> None:
        tx.execute("INSERT INTO rm_test_failing (id) VALUES (?)", (str(event.message_id),))
        raise RuntimeError("simulated bug")


def _recorded(runtime: Runtime, since: int) -> list[tuple[int, Any]]:
    return [
        (n.id, runtime.app.mapper.to_domain_event(n))
        for n in runtime.app.recorder.select_notifications(
            start=since, limit=1000, inclusive_of_start=False
        )
    ]


def test_projections_sharing_a_transaction_commit_apart_from_one_that_fails(
    runtime: Runtime, counting: ProjectionConsumer
) -> None:
    failing = ProjectionConsumer(FailingProjection(), runtime.readdb)
    failing.setup()
    tenant, _ = runtime.app.register_tenant("Acme")
    start = runtime.app.recorder.max_notification_id() or 0
    for consumer in (counting, failing):
        with runtime.readdb.transaction() as tx:
            write_tracking(tx, consumer.name, LOG_PARTITION, start)
    receive_many(runtime, tenant, 3)
    recorded = _recorded(runtime, start)
    last = recorded[-1][0]
    batch = [
        (consumer, [FeedItem(p, e) for p, e in recorded if consumer.interested_in(type(e))])
        for consumer in (counting, failing)
    ]
    outcome = process_together(runtime.readdb, batch, last)
    assert outcome["counting"] is None
    assert isinstance(outcome["failing"], RuntimeError)
    assert count(runtime) == 3
    assert counting.position() == last
    assert failing.position() == start  # neither its rows nor its position
    with runtime.readdb.read() as tx:
        tx.execute("SELECT COUNT(*) FROM rm_test_failing")
        assert tx.fetchone() == (0,)
    # the same stretch again: already applied, so refused and nothing counted twice
    again = process_together(runtime.readdb, batch[:1], last)
    assert isinstance(again["counting"], AlreadyProcessedError)
    assert count(runtime) == 3


def test_publishing_fresh_events_takes_the_ones_just_before_them_from_the_log(
    runtime: Runtime,
) -> None:
    """Events another thread committed just before (and has not published yet) are
    applied with the fresh ones, in order: the save that publishes is shown at once."""
    tenant, _ = runtime.app.register_tenant("Acme")
    runtime.catch_up(workflows=False)
    inbox_position = runtime.feed.progress.get("inbox")
    writer = runtime.writer
    writer.listeners.clear()  # saves now reach the feed only when told below
    receive_many(runtime, tenant, 2)
    unpublished = _recorded(runtime, inbox_position)
    writer.listeners.append(runtime.feed.publish)
    receive_many(runtime, tenant, 1)
    latest = runtime.app.recorder.max_notification_id()
    assert latest is not None
    assert latest > unpublished[-1][0]
    assert runtime.feed.progress.get("inbox") == latest
    with runtime.readdb.read() as tx:
        tx.execute("SELECT COUNT(*) FROM rm_messages WHERE tenant_id = ?", (str(tenant),))
        assert tx.fetchone() == (3,)


class CommitModeProjection(Projection):
    """Notes the commit mode its transaction runs with."""

    name = "commit_mode"
    seen: ClassVar[list[str]] = []

    @handles(Conversation.MessageReceived)
    def _note(self, tx: Tx, event: Any, position: int) -> None:
        CommitModeProjection.seen.append(_commit_mode(tx))


def _commit_mode(tx: Tx) -> str:
    """The transaction's synchronous_commit and where it comes from ("session": set by
    the transaction itself, whatever the server's configuration)."""
    tx.execute("SELECT setting, source FROM pg_settings WHERE name = 'synchronous_commit'")
    row = tx.fetchone()
    assert row is not None
    return f"{row[0]} ({row[1]})"


@pytest.mark.postgres
@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_read_model_commits_do_not_wait_for_the_disk_but_other_commits_do(
    runtime: Runtime,
) -> None:
    CommitModeProjection.seen = []
    consumer = ProjectionConsumer(CommitModeProjection(), runtime.readdb)
    consumer.setup()
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 2)
    runtime.feed.catch_up(consumer)
    assert CommitModeProjection.seen == ["off (session)", "off (session)"]
    with runtime.readdb.transaction() as tx:  # the vault's, the audit log's: as configured
        assert not _commit_mode(tx).endswith("(session)")


def _counted_items(runtime: Runtime, consumer: ProjectionConsumer, since: int) -> list[FeedItem]:
    return [FeedItem(p, e) for p, e in _recorded(runtime, since) if consumer.interested_in(type(e))]


def test_a_stretch_another_process_partly_applied_is_applied_only_past_its_position(
    runtime: Runtime, counting: ProjectionConsumer
) -> None:
    """Two `serve` processes on one database each keep the positions they last saw; one
    publishing after the other wrote reads the stretch from its own stale position."""
    tenant, _ = runtime.app.register_tenant("Acme")
    start = runtime.app.recorder.max_notification_id() or 0
    with runtime.readdb.transaction() as tx:
        write_tracking(tx, counting.name, LOG_PARTITION, start)
    receive_many(runtime, tenant, 3)
    items = _counted_items(runtime, counting, start)
    last = items[-1].position
    # the other process applies the first two messages
    counting.process(items[:2], items[1].position)
    assert count(runtime) == 2
    # this one publishes the whole stretch, as a write of its own follows it
    outcome = process_together(runtime.readdb, [(counting, items)], last)
    assert outcome == {"counting": None}
    assert count(runtime) == 3
    assert counting.position() == last

    # the same in a projection's own transaction (a catch-up, or a shared one's retry)
    receive_many(runtime, tenant, 2)
    more = _counted_items(runtime, counting, last)
    counting.process(more[:1], more[0].position)
    counting.process(more, more[-1].position)
    assert count(runtime) == 5
    assert counting.position() == more[-1].position


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)  # SQLite: no row locks
def test_a_projection_waits_for_its_position_before_it_writes_a_row(
    runtime: Runtime, counting: ProjectionConsumer
) -> None:
    """Another process's shared transaction locks the positions first and the rows after:
    a batch that wrote rows before waiting for the position it holds would deadlock it.
    (SQLite's write transaction excludes other writers from its start.)"""
    tenant, _ = runtime.app.register_tenant("Acme")
    receive_many(runtime, tenant, 1)
    runtime.feed.catch_up(counting)  # the row to count in, and the position, exist
    receive_many(runtime, tenant, 1)
    position = counting.position()
    assert position is not None
    items = _counted_items(runtime, counting, position)
    applied = threading.Event()
    outcome: list[Exception] = []

    def apply() -> None:
        try:
            counting.process(items, items[-1].position)
        except Exception as error:
            outcome.append(error)
        applied.set()

    with runtime.readdb.transaction() as other:  # the other process, positions locked
        other.execute(
            "SELECT position FROM cc_tracking WHERE consumer = ? FOR UPDATE", (counting.name,)
        )
        other.fetchall()
        worker = threading.Thread(target=apply)
        worker.start()
        time.sleep(0.5)  # the batch is waiting for the position by now
        assert not applied.is_set()
        # the other process's rows: free, since the waiting batch has written none yet
        other.execute("SET LOCAL lock_timeout = '2s'")
        other.execute("UPDATE rm_test_counts SET n = n + 10 WHERE id = 1")
        other.execute(
            "UPDATE cc_tracking SET position = ? WHERE consumer = ?",
            (items[-1].position, counting.name),
        )
    worker.join(timeout=10)
    # the other process applied the message; the waiting batch then found nothing left
    assert applied.is_set()
    assert [type(e) for e in outcome] == [AlreadyProcessedError]
    assert count(runtime) == 11
    assert counting.position() == items[-1].position


def test_two_processes_writing_one_store_by_turns_keep_the_inbox_exact(
    runtime: Runtime, settings: Settings
) -> None:
    """Each applies its writes to the read models as it makes them, and the other's in
    between from the log: every message counted once, as a rebuild counts them."""
    other = build(settings)
    try:
        tenant, _ = runtime.app.register_tenant("Acme")
        for i in range(6):
            receive_many(runtime if i % 2 == 0 else other, tenant, 1, visitor="v-1")
        with runtime.readdb.read() as tx:
            (conversation,) = inbox.list_conversations(tx, str(tenant))
        assert conversation["message_count"] == 6
        before = _dump(runtime)
        consumer = runtime.consumer("inbox")
        runtime.feed.reset(consumer)
        runtime.feed.catch_up(consumer)
        assert _dump(runtime) == before
    finally:
        other.close()
