"""``Database.fetch``: one read statement, its own snapshot, on both databases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest

from infra.db import Database, PostgresDatabase, SQLiteDatabase
from infra.runtime import postgres_datastore
from infra.store import INDEX_DDL, PostgresWriteIndex
from projections.base import one_of
from tests.conftest import BACKENDS


@pytest.mark.parametrize("backend", BACKENDS)
def test_fetch_returns_the_rows_of_one_statement_with_its_parameters(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    db: Database = (
        PostgresDatabase(request.getfixturevalue("postgres_url"))
        if backend == "postgres"
        else SQLiteDatabase(str(tmp_path / "fetch.sqlite"))
    )
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY, n BIGINT NOT NULL)")
            tx.execute("INSERT INTO t (id, n) VALUES ('a', 1), ('b', 2), ('c', 3)")
        assert db.fetch("SELECT id FROM t WHERE n > ? ORDER BY id", (1,)) == [("b",), ("c",)]
        with db.read() as reading:
            test, params = one_of(reading, ["a", "c"])
        assert db.fetch(f"SELECT n FROM t WHERE id {test} ORDER BY n", params) == [(1,), (3,)]
        assert db.fetch("SELECT n FROM t WHERE id = ?", ("z",)) == []
    finally:
        db.close()


def test_a_read_keeps_the_connections_prepared_statements_and_refuses_writes(
    postgres_url: str,
) -> None:
    db = PostgresDatabase(postgres_url, max_size=1)  # one connection: every call uses it
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE IF NOT EXISTS kept (id TEXT PRIMARY KEY)")
        for _ in range(PostgresDatabase.PREPARE_THRESHOLD + 1):
            db.fetch("SELECT id FROM kept WHERE id = ?", ("a",))
        prepared = (
            "SELECT count(*) FROM pg_prepared_statements"
            " WHERE statement LIKE 'SELECT id FROM kept%'"
        )
        assert db.fetch(prepared) == [(1,)]
        with db.read() as tx:
            tx.execute("SELECT count(*) FROM kept")
            assert tx.fetchone() == (0,)
        assert db.fetch(prepared) == [(1,)]  # still prepared after the read
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), db.read() as tx:
            tx.execute("INSERT INTO kept (id) VALUES ('b')")
        assert db.fetch("SELECT count(*) FROM kept") == [(0,)]
    finally:
        db.close()


def test_the_write_index_lookup_reads_by_the_key_after_the_table_grew_from_empty(
    postgres_url: str,
) -> None:
    """The event store's connections plan each run for its parameters: a plan cached
    while the index was empty (a scan of the whole table, cheap then) is not kept."""
    datastore = postgres_datastore(postgres_url, pool_size=1, max_overflow=0)
    index = PostgresWriteIndex(datastore)
    try:
        with datastore.get_connection() as conn:
            conn.execute(INDEX_DDL)  # the test's database is new: the table is empty
        for _ in range(8):  # enough runs for PostgreSQL to consider a generic plan
            assert index.get_in({"receipt": ["k1", "k2"]}) == {}
        with datastore.get_connection() as conn:
            conn.execute(
                "INSERT INTO cc_index (namespace, key, value)"
                " SELECT 'receipt', 'k' || i, 'v' || i FROM generate_series(1, 20000) AS i"
            )
            before = _scans(conn)
        assert index.get_in({"receipt": ["k1", "k7", "none"]}) == {
            ("receipt", "k1"): "v1",
            ("receipt", "k7"): "v7",
        }
        with datastore.get_connection() as conn:
            seq, by_index = _scans(conn)
        assert seq == before[0]  # no scan of the whole table
        assert by_index > before[1]
    finally:
        datastore.close()


def _scans(conn: Any) -> tuple[int, int]:
    conn.execute("SELECT pg_stat_force_next_flush()")
    row = conn.execute(
        "SELECT seq_scan, idx_scan FROM pg_stat_user_tables WHERE relname = 'cc_index'"
    ).fetchone()
    return int(row["seq_scan"]), int(row["idx_scan"] or 0)
