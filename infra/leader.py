"""One process at a time: a PostgreSQL session advisory lock held by whoever got it first.

Several ``serve`` processes may share one PostgreSQL database; work that must be done by
one of them at a time (the webhook dispatcher: two would send the same delivery twice)
asks :class:`AdvisoryLeader` before each round. The lock lives as long as the connection,
so a process that dies hands it on; the others retry on their next round.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import psycopg

log = logging.getLogger(__name__)


class AdvisoryLeader:
    RETRY_SECONDS = 1.0  # after a failed connection, how long before trying again

    def __init__(self, url: str, key: int) -> None:
        self.url = url
        self.key = key
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._lock = threading.Lock()
        self._next_try = 0.0

    def __call__(self) -> bool:
        """Whether this process holds the lock (taking it when free)."""
        with self._lock:
            try:
                if self._conn is not None and not self._conn.closed:
                    self._conn.execute("SELECT 1")  # still ours while the session lives
                    return True
                if time.monotonic() < self._next_try:
                    return False
                conn = psycopg.connect(self.url, autocommit=True)
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                if row is not None and row[0]:
                    self._conn = conn
                    log.info("took the advisory lock %x", self.key)
                    return True
                conn.close()
            except psycopg.Error as error:
                log.warning("advisory lock %x: %s", self.key, type(error).__name__)
                self._drop()
            self._next_try = time.monotonic() + self.RETRY_SECONDS
            return False

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
