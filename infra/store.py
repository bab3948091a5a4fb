"""The event store: eventsourcing recorders extended with the write-side index.

The index (``cc_index``: namespace, key, value) holds the unique lookups the application
needs to decide (provider message id → receipt, identity hash → contact, thread hash →
conversation, token hash → principal). Its changes are applied in the same transaction
as the events they belong with, so a crash can never leave one without the other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresProcessRecorder,
)
from eventsourcing.sqlite import (
    SQLiteConnection,
    SQLiteConnectionPool,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteProcessRecorder,
)
from eventsourcing.utils import retry
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from contact_centre.ports import IndexOp, IndexOpKind
from infra.config import EVENT_STORE_CACHE_KIB
from infra.db import keep_without_rowid
from projections.base import padded_to_bucket

INDEX_TABLE = "cc_index"
INDEX_DDL = (
    f"CREATE TABLE IF NOT EXISTS {INDEX_TABLE} ("
    "namespace TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, "
    "PRIMARY KEY (namespace, key))"
)
# On SQLite the rows live in the key's B-tree itself: one lookup, one insert per entry
# (a rowid table keeps the key in a second B-tree beside the rows).
SQLITE_INDEX_DDL = f"{INDEX_DDL} WITHOUT ROWID"
_MAX_KEYS_PER_SELECT = 500


def prefix_end(prefix: str) -> str:
    """The smallest string above every string that begins with ``prefix``."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


class IndexConflictError(IntegrityError):
    """A compare-and-set on the index found another value: someone else won the race."""


_ROWS_PER_STATEMENT = 200


def _runs(ops: Sequence[IndexOp]) -> list[list[IndexOp]]:
    """Consecutive ops of one kind, so that each run is one statement (order is kept)."""
    runs: list[list[IndexOp]] = []
    for op in ops:
        if runs and runs[-1][0].kind is op.kind and len(runs[-1]) < _ROWS_PER_STATEMENT:
            runs[-1].append(op)
        else:
            runs.append([op])
    return runs


def _apply_index_ops(
    cursor: Any, ops: Sequence[IndexOp], placeholder: str, sync: Any = None
) -> None:
    """Apply index changes: inserts and upserts as multi-row statements (a round trip per
    run of them on PostgreSQL, not per row)."""
    p = placeholder
    for run in _runs(ops):
        kind = run[0].kind
        if kind in (IndexOpKind.INSERT, IndexOpKind.UPSERT):
            rows = ", ".join([f"({p}, {p}, {p})"] * len(run))
            conflict = (
                " ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value"
                if kind is IndexOpKind.UPSERT
                else ""
            )
            params = [v for op in run for v in (op.namespace, op.key, op.value)]
            cursor.execute(
                f"INSERT INTO {INDEX_TABLE} (namespace, key, value) VALUES {rows}{conflict}",
                params,
            )
        elif kind is IndexOpKind.DELETE:
            if p == "%s":  # PostgreSQL: two arrays (psycopg parses 100 parameters slowly)
                cursor.execute(
                    f"DELETE FROM {INDEX_TABLE} WHERE (namespace, key) IN"
                    " (SELECT * FROM unnest(%s::text[], %s::text[]))",
                    ([op.namespace for op in run], [op.key for op in run]),
                )
            else:
                # a namespace at a time: SQLite finds rows by its key for `namespace = ?
                # AND key IN (...)`, but reads the whole table for `(namespace, key) IN
                # (VALUES ...)`
                by_namespace: dict[str, list[str]] = {}
                for op in run:
                    by_namespace.setdefault(op.namespace, []).append(op.key)
                for namespace, keys in by_namespace.items():
                    keys = padded_to_bucket(keys)  # a few statement texts, kept prepared
                    cursor.execute(
                        f"DELETE FROM {INDEX_TABLE} WHERE namespace = {p}"
                        f" AND key IN ({', '.join([p] * len(keys))})",
                        [namespace, *keys],
                    )
        elif kind is IndexOpKind.DELETE_PREFIX:
            for op in run:
                cursor.execute(
                    f"DELETE FROM {INDEX_TABLE} WHERE namespace = {p} AND key >= {p} AND key < {p}",
                    (op.namespace, op.key, prefix_end(op.key)),
                )
        else:
            for op in run:
                cursor.execute(
                    f"UPDATE {INDEX_TABLE} SET value = {p} "
                    f"WHERE namespace = {p} AND key = {p} AND value = {p}",
                    (op.value, op.namespace, op.key, op.expected),
                )
                if sync is not None:
                    sync()  # pipelined: the row count is known only once the answer is in
                if cursor.rowcount != 1:
                    raise IndexConflictError(f"index {op.namespace} changed concurrently")


# Commits of the event store copy its write-ahead log back into the file themselves only
# past this many pages (~40 MB; SQLite's default is 1,000): the background checkpointer
# (infra.checkpoint) does that copying, so a large command does not pay for it inline.
EVENT_STORE_AUTOCHECKPOINT_PAGES = 10_000


class _EventStorePool(SQLiteConnectionPool):
    def _create_connection(self) -> SQLiteConnection:
        connection = super()._create_connection()
        connection._sqlite_conn.execute(
            f"PRAGMA wal_autocheckpoint={EVENT_STORE_AUTOCHECKPOINT_PAGES}"
        )
        connection._sqlite_conn.execute(f"PRAGMA cache_size=-{EVENT_STORE_CACHE_KIB}")
        return connection


class EventStoreDatastore(SQLiteDatastore):
    """The eventsourcing SQLite datastore, its connections set up as the event store's."""

    def __init__(self, db_name: str, *, lock_timeout: int) -> None:
        super().__init__(db_name, lock_timeout=lock_timeout)
        self.pool.close()  # the default pool, before it made a connection
        self.pool = _EventStorePool(db_name=db_name, lock_timeout=lock_timeout)


class SQLiteEventStoreRecorder(SQLiteProcessRecorder):
    """Events, tracking and the write-side index in one SQLite file."""

    def create_table(self) -> None:
        super().create_table()  # events and tracking (eventsourcing's own migrations)
        with self.datastore.transaction(commit=True) as c:
            keep_without_rowid(c.execute, c.fetchone, INDEX_TABLE, SQLITE_INDEX_DDL)

    def select_events_many(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every event of many aggregates in one query (the erasure of a contact loads all
        its conversations at once)."""
        if not originator_ids:
            return {}
        ids = padded_to_bucket([i.hex for i in originator_ids])  # few texts, kept prepared
        marks = ", ".join("?" * len(ids))
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                "SELECT originator_id, originator_version, topic, state"
                f" FROM {self.events_table_name} WHERE originator_id IN ({marks})"
                " ORDER BY originator_id, originator_version",
                ids,
            )
            rows = [tuple(row) for row in c.fetchall()]
        return _stored(rows, lambda v: UUID(str(v)))

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        returning = super()._insert_events(c, stored_events, **kwargs)
        _apply_index_ops(c.sqlite_cursor, kwargs.get("index_ops") or (), "?")
        return returning


def _stored(rows: Iterable[Any], convert: Callable[[Any], UUID]) -> dict[UUID, list[StoredEvent]]:
    found: dict[UUID, list[StoredEvent]] = {}
    for originator_id, version, topic, state in rows:
        oid = convert(originator_id)
        found.setdefault(oid, []).append(StoredEvent(oid, version, topic, bytes(state)))
    return found


class SQLiteWriteIndex:
    def __init__(self, datastore: SQLiteDatastore) -> None:
        self.datastore = datastore

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, str]:
        return {key: value for (_, key), value in self.get_in({namespace: keys}).items()}

    def get_in(self, wanted: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], str]:
        found: dict[tuple[str, str], str] = {}
        with self.datastore.transaction(commit=False) as c:
            for namespace, keys in wanted.items():
                for start in range(0, len(keys), _MAX_KEYS_PER_SELECT):
                    chunk = list(keys[start : start + _MAX_KEYS_PER_SELECT])
                    marks = ",".join("?" * len(chunk))
                    c.execute(
                        f"SELECT key, value FROM {INDEX_TABLE} "
                        f"WHERE namespace = ? AND key IN ({marks})",
                        [namespace, *chunk],
                    )
                    found.update(((namespace, row[0]), row[1]) for row in c.fetchall())
        return found

    def scan(self, namespace: str) -> list[tuple[str, str]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT key, value FROM {INDEX_TABLE} WHERE namespace = ? ORDER BY key",
                [namespace],
            )
            return [(row[0], row[1]) for row in c.fetchall()]

    def scan_prefix(self, namespace: str, prefix: str) -> list[tuple[str, str]]:
        if not prefix:
            return self.scan(namespace)
        with self.datastore.transaction(commit=False) as c:
            c.execute(
                f"SELECT key, value FROM {INDEX_TABLE} WHERE namespace = ? AND key >= ?"
                " AND key < ? ORDER BY key",
                [namespace, prefix, prefix_end(prefix)],
            )
            return [(row[0], row[1]) for row in c.fetchall()]


class PostgresEventStoreRecorder(PostgresProcessRecorder):
    """Events, tracking and the write-side index in one PostgreSQL transaction.

    Writers still take the library's EXCLUSIVE table lock (so notification ids commit in
    order); index changes are made first, so the table lock is always the last lock a
    writer waits for and two writers cannot deadlock.
    """

    def __init__(self, datastore: PostgresDatastore, *, events_table_name: str) -> None:
        super().__init__(
            datastore,
            events_table_name=events_table_name,
            tracking_table_name=f"{events_table_name}_tracking",
        )
        self.sql_create_statements.append(SQL(INDEX_DDL))  # type: ignore[arg-type]

    def select_events_many(self, originator_ids: Sequence[UUID]) -> dict[UUID, list[StoredEvent]]:
        """Every event of many aggregates in one query."""
        if not originator_ids:
            return {}
        statement = SQL(
            "SELECT originator_id, originator_version, topic, state FROM {schema}.{table}"
            " WHERE originator_id = ANY(%s) ORDER BY originator_id, originator_version"
        ).format(schema=Identifier(self.datastore.schema), table=Identifier(self.events_table_name))
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, [list(originator_ids)])
            rows = [
                (r["originator_id"], r["originator_version"], r["topic"], r["state"])
                for r in curs.fetchall()
            ]
        return _stored(rows, lambda v: v if isinstance(v, UUID) else UUID(str(v)))

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        notification_ids: list[int] = []
        with (
            self.datastore.get_connection() as conn,
            conn.pipeline() as pipeline,
            conn.transaction(),
            conn.cursor() as curs,
        ):
            tracking = kwargs.get("tracking")
            if tracking is not None:
                self._insert_tracking(curs, tracking)
            _apply_index_ops(curs, kwargs.get("index_ops") or (), "%s", pipeline.sync)
            if stored_events:
                PostgresApplicationRecorder._insert_stored_events(self, curs, stored_events)
                notification_ids = [row["notification_id"] for row in curs.fetchall()]
        return notification_ids


class PostgresWriteIndex:
    def __init__(self, datastore: PostgresDatastore) -> None:
        self.datastore = datastore
        self._select_in = SQL(
            "SELECT c.namespace, c.key, c.value FROM unnest(%s::text[], %s::text[])"
            " AS u (namespace, key) JOIN {table} c ON c.namespace = u.namespace AND c.key = u.key"
        ).format(table=Identifier(INDEX_TABLE))

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, str]:
        return {key: value for (_, key), value in self.get_in({namespace: keys}).items()}

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def get_in(self, wanted: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], str]:
        """One statement (one round trip) for every namespace."""
        pairs = [(namespace, key) for namespace, keys in wanted.items() for key in keys]
        if not pairs:
            return {}
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                self._select_in,
                ([namespace for namespace, _ in pairs], [key for _, key in pairs]),
                prepare=True,
            )
            rows: list[DictRow] = curs.fetchall()
            return {(row["namespace"], row["key"]): row["value"] for row in rows}

    def scan(self, namespace: str) -> list[tuple[str, str]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL("SELECT key, value FROM {table} WHERE namespace = %s ORDER BY key").format(
                    table=Identifier(INDEX_TABLE)
                ),
                (namespace,),
            )
            return [(row["key"], row["value"]) for row in curs.fetchall()]

    def scan_prefix(self, namespace: str, prefix: str) -> list[tuple[str, str]]:
        if not prefix:
            return self.scan(namespace)
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(
                SQL(
                    "SELECT key, value FROM {table} WHERE namespace = %s AND key >= %s"
                    " AND key < %s ORDER BY key"
                ).format(table=Identifier(INDEX_TABLE)),
                (namespace, prefix, prefix_end(prefix)),
            )
            return [(row["key"], row["value"]) for row in curs.fetchall()]
