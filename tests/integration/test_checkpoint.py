"""Background WAL checkpoints: commits leave the copying to the ticker, and the ticker
brings every SQLite file's log home."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from infra.checkpoint import WalCheckpointer
from infra.db import SQLiteDatabase
from infra.store import EventStoreDatastore, SQLiteEventStoreRecorder


def _log(path: Path) -> tuple[int, int]:
    """(frames in the write-ahead log, frames of it copied into the database file)."""
    conn = sqlite3.connect(path)  # the test's connection stays open: no checkpoint on close
    try:
        _, frames, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    finally:
        conn.close()
    return int(frames), int(copied)


def _fill(db: SQLiteDatabase, start: int, rows: int) -> None:
    for first in range(start, start + rows, 100):
        with db.transaction() as tx:
            tx.executemany(
                "INSERT INTO t (id, v) VALUES (?, ?)",
                [(i, "x" * 2_000) for i in range(first, first + 100)],
            )


def test_commits_below_the_threshold_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    path = tmp_path / "rm.sqlite"
    db = SQLiteDatabase(str(path), synchronous="NORMAL", autocheckpoint_pages=10_000)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        _fill(db, 0, 3_000)  # ~1,500 pages: past SQLite's default threshold of 1,000
        # nothing was copied back by the commits, so the log holds every page written
        assert db.checkpoint().copied > 1_000

        _fill(db, 3_000, 1_000)
        WalCheckpointer([db]).flush()
        frames, copied = _log(path)
        assert frames == copied
        with db.read() as tx:
            tx.execute("SELECT COUNT(*) FROM t")
            assert tx.fetchone() == (4_000,)
    finally:
        db.close()


class _CommitsWhileCopying(SQLiteDatabase):
    """A database where, as on a busy server, commits land while each of the first
    ``landing`` checkpoints copies: a reader's snapshot from before them keeps the
    checkpoint from copying them in that pass, as the copy having begun before them would."""

    landing = 3

    def checkpoint(self):  # type: ignore[no-untyped-def]
        if not self.landing:
            return super().checkpoint()
        self.landing -= 1
        reader = sqlite3.connect(self.path, isolation_level=None)
        try:
            reader.execute("BEGIN")
            reader.execute("SELECT COUNT(*) FROM t").fetchone()
            _fill(self, 10_000 * (self.landing + 1), 100)
            return super().checkpoint()
        finally:
            reader.close()


def test_a_checkpoint_runs_again_until_the_log_is_copied_to_its_end(tmp_path: Path) -> None:
    """Only a log copied to its end starts over at the next commit; one pass per tick,
    with commits landing during each, would leave the log to grow without end."""
    path = tmp_path / "rm.sqlite"
    db = _CommitsWhileCopying(str(path), synchronous="NORMAL", autocheckpoint_pages=10_000)
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
        _fill(db, 0, 1_000)
        WalCheckpointer([db]).flush()
        assert db.landing == 0  # the commits did land between passes
        frames, copied = _log(path)
        assert frames == copied
        # ...so the next commit starts the log over: it holds that commit's pages only
        _fill(db, 50_000, 100)
        frames, _ = _log(path)
        assert frames < 200
    finally:
        db.close()


class _Counted(SQLiteDatabase):
    """Counts the checkpoints run on it (asking SQLite how much of the log is copied would
    itself copy it)."""

    copies = 0

    def checkpoint(self):  # type: ignore[no-untyped-def]
        self.copies += 1
        return super().checkpoint()


@pytest.fixture
def counted(tmp_path: Path) -> Iterator[_Counted]:
    db = _Counted(str(tmp_path / "rm.sqlite"), synchronous="NORMAL", autocheckpoint_pages=10_000)
    with db.transaction() as tx:
        tx.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    try:
        yield db
    finally:
        db.close()


def _commit_at(db: SQLiteDatabase, second: int) -> None:
    """A commit, and its time on the log (distinct even where the file system's clock is
    coarser than the test's steps)."""
    _fill(db, 1_000 * second, 100)
    os.utime(f"{db.path}-wal", ns=(second * 1_000_000_000, second * 1_000_000_000))


def _copies_at_tick(db: _Counted, checkpointer: WalCheckpointer) -> bool:
    before = db.copies
    checkpointer.tick(datetime.now(UTC))
    return db.copies > before


def test_a_log_is_copied_once_no_commit_landed_for_a_whole_tick(counted: _Counted) -> None:
    """The ticker leaves a log that was written to since its last tick (a command may be
    running: its commits would wait on the copy's syncs) and copies it at the next quiet
    tick."""
    checkpointer = WalCheckpointer([counted])
    _commit_at(counted, 1)
    checkpointer.flush()
    assert _copies_at_tick(counted, checkpointer)  # nothing new since: copied (a no-op)

    _commit_at(counted, 2)
    assert not _copies_at_tick(counted, checkpointer)  # written since the last tick
    assert _copies_at_tick(counted, checkpointer)  # a whole tick without commits
    frames, copied = _log(Path(counted.path))
    assert frames == copied


def test_a_log_written_at_every_tick_is_still_copied_after_a_few(counted: _Counted) -> None:
    checkpointer = WalCheckpointer([counted])
    checkpointer.flush()
    copied_at = []
    for tick in range(2 * (WalCheckpointer.MAX_DEFERRED_TICKS + 1)):
        _commit_at(counted, tick + 1)
        if _copies_at_tick(counted, checkpointer):
            copied_at.append(tick)
    assert copied_at == [
        WalCheckpointer.MAX_DEFERRED_TICKS,
        2 * WalCheckpointer.MAX_DEFERRED_TICKS + 1,
    ]


def test_event_store_commits_leave_the_log_to_the_checkpointer(tmp_path: Path) -> None:
    """The event store's own connections (eventsourcing's) keep the higher threshold too:
    a command that appends many events does not copy the log back inside its commit."""
    path = tmp_path / "events.sqlite"
    store = EventStoreDatastore(str(path), lock_timeout=30)
    try:
        recorder = SQLiteEventStoreRecorder(store)
        recorder.create_table()
        for _ in range(30):  # ~1,500 pages in all: past SQLite's default of 1,000
            recorder.insert_events([StoredEvent(uuid4(), 1, "t", b"x" * 2_000) for _ in range(100)])
        frames, _ = _log(path)
        assert frames > 1_000
        assert recorder.max_notification_id() == 3_000
    finally:
        store.close()
