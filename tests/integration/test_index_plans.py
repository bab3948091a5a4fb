"""The write-side index on SQLite: every kind of change finds its rows by the key. A
statement that reads the whole index costs nothing here and a second of CPU per erasure
on a store of a million events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from contact_centre.ports import IndexOp, IndexOpKind
from infra.store import SQLITE_INDEX_DDL, _apply_index_ops


def test_every_index_change_finds_its_rows_by_the_key(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "index.sqlite", isolation_level=None)
    conn.execute(SQLITE_INDEX_DDL)
    statements: list[str] = []
    conn.set_trace_callback(statements.append)
    cursor = conn.cursor()
    _apply_index_ops(
        cursor,
        [
            *(IndexOp(IndexOpKind.INSERT, "thread", f"t{i}", f"c{i}") for i in range(5)),
            *(IndexOp(IndexOpKind.UPSERT, "identity", f"i{i}", f"p{i}") for i in range(3)),
            IndexOp(IndexOpKind.INSERT, "other", "keep", "x"),
        ],
        "?",
    )
    _apply_index_ops(
        cursor,
        [
            IndexOp(IndexOpKind.DELETE, "thread", "t1"),
            IndexOp(IndexOpKind.DELETE, "identity", "i0"),
            IndexOp(IndexOpKind.DELETE, "thread", "t3"),
            IndexOp(IndexOpKind.CAS, "identity", "i1", "q1", expected="p1"),
            IndexOp(IndexOpKind.DELETE_PREFIX, "identity", "i2"),
        ],
        "?",
    )
    conn.set_trace_callback(None)
    rows = conn.execute("SELECT namespace, key, value FROM cc_index ORDER BY 1, 2").fetchall()
    assert rows == [
        ("identity", "i1", "q1"),
        ("other", "keep", "x"),
        ("thread", "t0", "c0"),
        ("thread", "t2", "c2"),
        ("thread", "t4", "c4"),
    ]
    scans = {
        statement: detail
        for statement in statements
        for *_, detail in conn.execute(f"EXPLAIN QUERY PLAN {statement}").fetchall()
        if detail.startswith("SCAN cc_index")
    }
    assert len(statements) >= 6
    assert scans == {}
