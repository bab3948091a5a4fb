"""Every statement a projection runs for an event finds its rows through an index: a
handler that reads a whole table costs nothing on a test's few rows and seconds on a
store of a million events (an erasure, a merge, each message)."""

from __future__ import annotations

import re
import sqlite3
from typing import Any

from infra.runtime import Runtime

_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+\b|X'[0-9A-Fa-f]*'")
# SCAN of a read model's table or index, whole: not of a subquery's result ("SCAN m")
_WHOLE = re.compile(r"^SCAN (rm_\w+)")


def _statements_of_a_rebuild(rt: Runtime) -> dict[str, str]:
    """Each distinct statement (literals folded) the handlers ran, with one example."""
    seen: dict[str, str] = {}

    def trace(sql: str) -> None:
        if re.match(r"\s*(SELECT|UPDATE|DELETE|INSERT)", sql, re.IGNORECASE):
            seen.setdefault(_LITERALS.sub("?", sql), sql)

    conn: Any = rt.readdb._conn()  # this thread's connection: the rebuild runs on it
    conn.set_trace_callback(trace)
    try:
        for consumer in rt.consumers:
            rt.feed.rebuild(consumer)
    finally:
        conn.set_trace_callback(None)
    return seen


def _whole_table_reads(conn: sqlite3.Connection, sql: str) -> list[str]:
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    return [row[3] for row in plan if _WHOLE.match(row[3])]


def test_no_projection_handler_reads_a_whole_table(recorded: Runtime) -> None:
    rt = recorded
    statements = _statements_of_a_rebuild(rt)
    assert len(statements) > 100  # the recorded day exercises most handlers
    conn = sqlite3.connect(rt.readdb.path)
    try:
        offenders = {}
        for shape, example in statements.items():
            if re.match(r"DELETE FROM rm_\w+( WHERE tenant_id = \?)?$", shape.strip()):
                continue  # a rebuild's reset, a tenant's purge: whole tables by intent
            scans = _whole_table_reads(conn, example)
            if scans:
                offenders[shape] = scans
    finally:
        conn.close()
    assert offenders == {}


def test_a_conversations_deliveries_are_found_by_message(recorded: Runtime) -> None:
    from projections import deliveries

    captured: list[str] = []
    with recorded.readdb.read() as tx:
        conn: Any = recorded.readdb._conn()
        conn.set_trace_callback(captured.append)
        try:
            deliveries.for_messages(tx, "t", ["m1", "m2"])
        finally:
            conn.set_trace_callback(None)
    check = sqlite3.connect(recorded.readdb.path)
    try:
        assert [s for s in captured if _whole_table_reads(check, s)] == []
    finally:
        check.close()
