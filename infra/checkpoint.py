"""Background WAL checkpoints for the embedded SQLite files.

SQLite in WAL mode appends every commit's pages to the write-ahead log; by default the
commit that finds the log past 1,000 pages copies it back into the database file, with
an fsync, inside that commit. On a small store that is cheap. On a large one a command
that touches many rows (an erasure of a subject with 50 conversations: ~900 pages of
read models, each row on a page of its own) crosses the threshold nearly every time and
pays for copying everybody's pages into a multi-gigabyte file. This ticker does that
copying in a thread of its own, so the commands' latency no longer grows with the store;
the connections that write keep a (higher) automatic threshold as a bound on the log's
size if the ticker is not running (a CLI command).

A checkpoint copies the log but does not shorten it: only a log copied to its very end
lets the next commit start it over from the beginning. On a busy store, commits land
while a checkpoint copies (one into a large file takes ~100 ms, most of it the file's
sync), so a checkpoint every interval alone would never catch the log's end: it would
grow until the commits' own threshold made one of them copy it inline (measured: two
erasures in twenty paid ~100 ms for it at 1M events). So a pass that finds new pages
behind it runs again at once, a few times, until it has copied the whole log.

A checkpoint also competes with the commands for the disk: its syncs made the commits of
a command running beside it wait (measured at 1M events: an erasure's read-model commit
took 50-120 ms instead of ~3 while the event store's log, written by that same erasure a
few milliseconds before, was being copied and synced). So the ticker copies a file's log
once it has been left alone for a whole interval, between commands rather than in the
middle of one; a file written to without pause is still copied every
``MAX_DEFERRED_TICKS`` intervals.

The key vault is not here: it truncates its log after every key destruction, in its
scrub thread (storage hygiene, see :mod:`infra.vault`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from datetime import datetime

from infra.db import SQLiteDatabase
from workflows.base import Ticker

log = logging.getLogger(__name__)

# Read models: commits copy the log back themselves only past this many pages (~40 MB).
READ_MODEL_AUTOCHECKPOINT_PAGES = 10_000


def _last_write(db: SQLiteDatabase) -> int | None:
    """When ``db``'s write-ahead log was last written to (None: it has none)."""
    try:
        return os.stat(f"{db.path}-wal").st_mtime_ns
    except FileNotFoundError:
        return None


class WalCheckpointer(Ticker):
    name = "wal-checkpoint"
    interval = 0.2
    # passes per file and tick while commits keep landing behind the copy: each one has
    # fewer new pages to copy than the one before, so the log's end is soon caught
    PASSES = 8
    # a log written to at every tick is copied anyway after this many (~1 s)
    MAX_DEFERRED_TICKS = 5

    def __init__(self, databases: Sequence[SQLiteDatabase]) -> None:
        self.databases = list(databases)
        self._seen: dict[str, int | None] = {}  # each log's last write as the last tick saw it
        self._deferred: dict[str, int] = {}

    def tick(self, now: datetime) -> int:
        for db in self.databases:
            if not self._written_since_last_tick(db):
                self._copy(db)
        return 0  # whatever was copied, the next pass waits for the interval

    def flush(self) -> None:
        """Copy every file's log now, written to lately or not."""
        for db in self.databases:
            self._seen[db.path] = _last_write(db)
            self._deferred[db.path] = 0
            self._copy(db)

    def _written_since_last_tick(self, db: SQLiteDatabase) -> bool:
        """Whether commits landed in ``db``'s log since the last tick, so that one may be
        running now (and the log has not waited too long already)."""
        written = _last_write(db)
        changed = written != self._seen.get(db.path)
        self._seen[db.path] = written
        deferred = self._deferred.get(db.path, 0)
        if changed and deferred < self.MAX_DEFERRED_TICKS:
            self._deferred[db.path] = deferred + 1
            return True
        self._deferred[db.path] = 0
        return False

    def _copy(self, db: SQLiteDatabase) -> None:
        for _ in range(self.PASSES):
            state = db.checkpoint()
            if state.busy or state.complete:
                break
