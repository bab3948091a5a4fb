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

The key vault is not here: it truncates its log after every key destruction, in its
scrub thread (storage hygiene, see :mod:`infra.vault`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

from infra.db import SQLiteDatabase
from workflows.base import Ticker

log = logging.getLogger(__name__)

# Read models: commits copy the log back themselves only past this many pages (~40 MB).
READ_MODEL_AUTOCHECKPOINT_PAGES = 10_000


class WalCheckpointer(Ticker):
    name = "wal-checkpoint"
    interval = 0.2
    # passes per file and tick while commits keep landing behind the copy: each one has
    # fewer new pages to copy than the one before, so the log's end is soon caught
    PASSES = 8

    def __init__(self, databases: Sequence[SQLiteDatabase]) -> None:
        self.databases = list(databases)

    def tick(self, now: datetime) -> int:
        for db in self.databases:
            for _ in range(self.PASSES):
                state = db.checkpoint()
                if state.busy or state.complete:
                    break
        return 0  # whatever was copied, the next pass waits for the interval
