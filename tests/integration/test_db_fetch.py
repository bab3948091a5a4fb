"""``Database.fetch``: one read statement, its own snapshot, on both databases."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from infra.db import Database, PostgresDatabase, SQLiteDatabase
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
