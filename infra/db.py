"""A small database layer for contact-centre's own tables (index, vault, read models).

Both dialects take SQL written with ``?`` placeholders and portable types (TEXT, BIGINT,
INTEGER) and ``INSERT ... ON CONFLICT ... DO UPDATE`` upserts, so that projection code
runs unchanged on SQLite (embedded) and PostgreSQL (scale).
"""

from __future__ import annotations

import functools
import hashlib
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, NamedTuple, Protocol

import psycopg
import psycopg_pool

from projections.base import Tx

__all__ = ["Database", "PostgresDatabase", "SQLiteDatabase", "Tx", "WalState"]

Dialect = Literal["sqlite", "postgres"]

# Every PostgreSQL connection of the product runs this first (see
# PostgresDatabase._configure): prepared statements are planned for their parameters on
# each run, never with a generic plan cached from earlier runs.
PLAN_PER_RUN = "SET plan_cache_mode = force_custom_plan"


class Database(Protocol):
    dialect: Dialect

    def transaction(self, *, pipeline: bool = True) -> Any:
        """Context manager yielding a :class:`Tx`; commits on success. ``pipeline=False``
        for DROP statements on PostgreSQL (see :meth:`PostgresDatabase.transaction`)."""
        ...

    def read(self) -> Any:
        """Context manager yielding a :class:`Tx` for a consistent read."""
        ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read statement, which is its own snapshot: on PostgreSQL one
        round trip, where :meth:`read` takes three (BEGIN, the statement, ROLLBACK)."""
        ...

    def execute_outside_transaction(self, sql: str) -> None:
        """Run a statement that cannot run in a transaction (VACUUM, PRAGMA...)."""
        ...

    def bulk(self) -> Any:
        """Context manager: this thread's transactions write many rows (a rebuild)."""
        ...

    def close(self) -> None: ...


class _SQLiteTx:
    dialect: Dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._cur = conn.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        self._cur.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._cur.executemany(sql, rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = self._cur.fetchone()
        return row

    def fetchall(self) -> list[tuple[Any, ...]]:
        return list(self._cur.fetchall())

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


class WalState(NamedTuple):
    """A write-ahead log after a checkpoint: ``busy`` if another checkpoint was running,
    how many pages (frames) it holds and how many of them are in the database file."""

    busy: bool
    frames: int
    copied: int

    @property
    def complete(self) -> bool:
        """Every page of the log is in the database file: the next commit starts the log
        over from its beginning (a log copied only in part keeps growing)."""
        return not self.busy and self.copied >= self.frames


class SQLiteDatabase:
    """One SQLite file; one connection per thread (sqlite3 connections are not shareable)."""

    dialect: Dialect = "sqlite"
    # Prepared statements each connection keeps (Python's default is 128: fewer than the
    # projections' statements sharing the read models' writer connection, which then
    # parsed and planned statements over and over).
    CACHED_STATEMENTS = 2048

    def __init__(
        self,
        path: str,
        *,
        synchronous: str = "FULL",
        journal_mode: str = "WAL",
        secure_delete: bool = False,
        busy_timeout_ms: int = 30_000,
        autocheckpoint_pages: int | None = None,
        cache_kib: int | None = None,
    ) -> None:
        self.path = path
        self._pragmas = [
            f"PRAGMA journal_mode={journal_mode}",
            f"PRAGMA synchronous={synchronous}",
            f"PRAGMA busy_timeout={busy_timeout_ms}",
        ]
        if cache_kib is not None:
            # pages each connection keeps in its own memory (SQLite's default is 2 MB)
            self._pragmas.append(f"PRAGMA cache_size=-{cache_kib}")
        if autocheckpoint_pages is not None:
            # A commit that finds the write-ahead log longer than this copies it into the
            # database file itself (SQLite's default is 1,000 pages).
            self._pragmas.append(f"PRAGMA wal_autocheckpoint={autocheckpoint_pages}")
        if secure_delete:
            self._pragmas.append("PRAGMA secure_delete=ON")
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            if self._closed:
                raise RuntimeError("database is closed")
            conn = sqlite3.connect(
                self.path,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=self.CACHED_STATEMENTS,
            )
            for pragma in self._pragmas:
                conn.execute(pragma)
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, *, pipeline: bool = True) -> Iterator[_SQLiteTx]:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield _SQLiteTx(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def read(self) -> Iterator[_SQLiteTx]:
        conn = self._conn()
        conn.execute("BEGIN")
        try:
            yield _SQLiteTx(conn)
        finally:
            conn.execute("ROLLBACK")

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn().execute(sql, params).fetchall())

    def execute_outside_transaction(self, sql: str) -> None:
        self._conn().execute(sql)

    # A rebuild touches pages all over tables of hundreds of MB: with SQLite's default
    # page cache (2 MB) each statement re-reads its B-tree pages from the OS; this thread's
    # connection keeps up to this much of them instead, for the rebuild only.
    BULK_CACHE_KIB = 256 * 1024

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Also without secure deletion (where SQLite is built with it on, as Debian's
        is): a rebuild empties the tables and writes the same rows back from the log, so
        the pages it frees hold nothing the read model does not hold again. Zeroing them
        cost a rebuild of 200,000 events 4.6 s of its 25 s."""
        conn = self._conn()
        (before,) = conn.execute("PRAGMA cache_size").fetchone()
        (secure,) = conn.execute("PRAGMA secure_delete").fetchone()
        conn.execute(f"PRAGMA cache_size=-{self.BULK_CACHE_KIB}")
        conn.execute("PRAGMA secure_delete=OFF")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA cache_size={int(before)}")
            conn.execute(f"PRAGMA secure_delete={int(secure)}")

    def checkpoint(self) -> WalState:
        """Copy what the write-ahead log holds into the database file, without waiting
        for (or blocking) readers and writers; returns the log's state after it."""
        row = self._conn().execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if row is None:
            return WalState(busy=True, frames=0, copied=0)
        return WalState(busy=bool(row[0]), frames=max(0, int(row[1])), copied=max(0, int(row[2])))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()


def keep_without_rowid(execute: Any, fetchone: Any, table: str, create: str) -> bool:
    """Make SQLite ``table`` the WITHOUT ROWID table ``create`` defines (a CREATE TABLE IF
    NOT EXISTS statement ending in WITHOUT ROWID), keeping its rows: a store made before
    the layout changed is moved over once, inside the caller's transaction. Returns
    whether it moved one. ``execute``/``fetchone`` are the transaction's cursor methods."""
    execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,))
    row = fetchone()
    legacy = row is not None and "WITHOUT ROWID" not in str(row[0]).upper()
    if legacy:
        execute(f"ALTER TABLE {table} RENAME TO {table}_rowid")
    execute(create)
    if legacy:
        execute(f"INSERT INTO {table} SELECT * FROM {table}_rowid")
        execute(f"DROP TABLE {table}_rowid")
    return legacy


@functools.lru_cache(maxsize=4096)
def to_pg(sql: str, binary: tuple[bool, ...] = ()) -> str:
    """Translate ``?`` placeholders for psycopg (``%`` literals are escaped first).
    ``binary`` marks, by position, the parameters to send in PostgreSQL's binary format
    (``%b``): the lists. In the text format psycopg writes an array item by item in
    Python, quoting and escaping each that needs it (a JSON text, say) with a regular
    expression; measured on PostgreSQL erasures, that was a fifth of their time. The binary
    format writes each item's length and bytes."""
    escaped = sql.replace("%", "%%")
    if not any(binary):
        return escaped.replace("?", "%s")
    parts = escaped.split("?")
    marks = ("%b" if b else "%s" for b in binary)  # one per parameter, as psycopg checks
    return parts[0] + "".join(mark + part for mark, part in zip(marks, parts[1:], strict=True))


def _binary_lists(params: Sequence[Any]) -> tuple[bool, ...]:
    """Which parameters :func:`to_pg` sends in binary: the non-empty lists (an empty one
    has no item to tell its type by, so it stays text and PostgreSQL infers it)."""
    return tuple(type(p) is list and len(p) > 0 for p in params)


class _PgTx:
    """In pipeline mode statements are sent without waiting for each answer (a write
    transaction of many small statements costs one round trip, not one per statement);
    reading a result or the row count waits for what was sent so far."""

    dialect: Dialect = "postgres"

    def __init__(
        self,
        conn: psycopg.Connection[tuple[Any, ...]],
        pipeline: psycopg.Pipeline | None = None,
    ) -> None:
        self._conn = conn
        self._cur = conn.cursor()
        self._pipeline = pipeline

    def _fresh_cursor(self) -> psycopg.Cursor[tuple[Any, ...]]:
        # In pipeline mode a cursor gives the results of its first pending statement, not
        # its last: each statement gets its own cursor, and fetches read the latest.
        if self._pipeline is not None:
            self._cur = self._conn.cursor()
        return self._cur

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        # Prepared statements pay off for the repeated DML of projections; preparing DDL
        # only invites stale plans once tables are dropped and made again.
        prepare = not sql.lstrip()[:6].upper().startswith(("CREATE", "DROP", "ALTER"))
        self._fresh_cursor().execute(to_pg(sql, _binary_lists(params)), params, prepare=prepare)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._fresh_cursor().executemany(to_pg(sql), rows)

    def fetchone(self) -> tuple[Any, ...] | None:
        return self._cur.fetchone()

    def fetchall(self) -> list[tuple[Any, ...]]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        if self._pipeline is not None:
            self._pipeline.sync()
        return self._cur.rowcount


class PostgresDatabase:
    """A pooled PostgreSQL connection for contact-centre's own tables."""

    dialect: Dialect = "postgres"

    def __init__(self, url: str, *, max_size: int = 8) -> None:
        self.url = url
        self.pool: psycopg_pool.ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = (
            psycopg_pool.ConnectionPool(
                url,
                min_size=1,
                max_size=max_size,
                open=True,
                kwargs={"autocommit": True},
                configure=self._configure,
                name="contact-centre",
            )
        )

    # psycopg prepares a statement on the server after its 5th run and keeps the 100 last
    # used per connection. The projections run ~170 statement shapes on the read models,
    # so with those defaults statements fell out of the cache and were parsed and planned
    # again, and an erasure's statements (each run once per erasure) stayed unprepared
    # for its first five.
    PREPARE_THRESHOLD = 2
    PREPARED_MAX = 1024

    @classmethod
    def _configure(cls, conn: psycopg.Connection[tuple[Any, ...]]) -> None:
        conn.prepare_threshold = cls.PREPARE_THRESHOLD
        conn.prepared_max = cls.PREPARED_MAX
        # A prepared statement is parsed once, but planned for its parameters each time:
        # after five runs the server may switch to a generic plan, which for the
        # projections' array-parameter statements (``= ANY(?)``, ``unnest``) cannot see
        # how few rows they touch and scans whole tables (the retention ledger's
        # contact anchors went from under 1 ms to 20-90 ms, growing with the table).
        conn.execute(PLAN_PER_RUN)

    @contextmanager
    def transaction(self, *, pipeline: bool = True) -> Iterator[_PgTx]:
        """``pipeline=False`` waits for each statement's answer: a DROP makes psycopg
        deallocate the connection's prepared statements, which in pipeline mode races with
        statements already sent under their prepared names ("prepared statement ... does
        not exist")."""
        if not pipeline:
            with self.pool.connection() as conn, conn.transaction():
                yield _PgTx(conn)
            return
        with self.pool.connection() as conn, conn.pipeline() as pipe, conn.transaction():
            yield _PgTx(conn, pipe)

    @contextmanager
    def read(self) -> Iterator[_PgTx]:
        """A read-only transaction. It ends with COMMIT, not ROLLBACK: psycopg forgets a
        connection's prepared statements on every rollback (and deallocates them on the
        server), so each read made the next statements on that connection parse and
        plan again."""
        with self.pool.connection() as conn:
            conn.read_only = True
            try:
                with conn.transaction():
                    yield _PgTx(conn)
            finally:
                conn.read_only = False

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.pool.connection() as conn:  # autocommit: the statement alone
            return conn.execute(to_pg(sql, _binary_lists(params)), params, prepare=True).fetchall()

    def execute_outside_transaction(self, sql: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(sql)

    @contextmanager
    def bulk(self) -> Iterator[None]:
        yield  # the server's shared buffers serve every connection alike

    def close(self) -> None:
        self.pool.close()


def advisory_key(purpose: str) -> int:
    """A PostgreSQL advisory lock key (signed 64-bit) for ``purpose``, the same in every
    process: the first 8 bytes of its SHA-256."""
    digest = hashlib.sha256(f"contact-centre {purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def is_write_conflict(error: BaseException) -> bool:
    """A serialization failure or deadlock: the transaction is safe to run again."""
    return getattr(error, "sqlstate", None) in ("40001", "40P01")
