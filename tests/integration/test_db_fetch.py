"""``Database.fetch``: one read statement, its own snapshot, on both databases."""

from __future__ import annotations

from pathlib import Path

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
