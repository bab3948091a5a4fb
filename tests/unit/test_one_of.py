"""``one_of``: an IN list whose text depends on the number of values only by its power
of two, so SQLite keeps one prepared statement per shape, and the rows are the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.db import Database, SQLiteDatabase
from projections.base import one_of, padded_to_bucket


@pytest.mark.parametrize(
    ("count", "size"), [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (50, 64), (500, 512)]
)
def test_values_are_padded_to_the_next_power_of_two_with_the_last_one(
    count: int, size: int
) -> None:
    values = [f"v{i}" for i in range(count)]
    padded = padded_to_bucket(values)
    assert len(padded) == size
    assert padded[:count] == values
    assert set(padded[count:]) <= {values[-1]}


def test_an_empty_list_stays_empty() -> None:
    assert padded_to_bucket([]) == []


def test_lists_of_five_to_eight_values_share_one_statement_and_find_the_same_rows(
    tmp_path: Path,
) -> None:
    db: Database = SQLiteDatabase(str(tmp_path / "t.sqlite"))
    texts = set()
    try:
        with db.transaction() as tx:
            tx.execute("CREATE TABLE t (id TEXT PRIMARY KEY)")
            tx.executemany("INSERT INTO t VALUES (?)", [(f"v{i}",) for i in range(20)])
            for count in range(5, 9):
                wanted = [f"v{i}" for i in range(0, 2 * count, 2)]
                test, params = one_of(tx, wanted)
                texts.add(test)
                tx.execute(f"SELECT id FROM t WHERE id {test}", params)
                assert sorted(r[0] for r in tx.fetchall()) == sorted(wanted)
    finally:
        db.close()
    assert len(texts) == 1
