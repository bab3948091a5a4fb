"""Every statement a projection runs for an event finds its rows through an index: a
handler that reads a whole table costs nothing on a test's few rows and seconds on a
store of a million events (an erasure, a merge, each message)."""

from __future__ import annotations

import re
import sqlite3
from typing import Any
from uuid import UUID

from infra.runtime import Runtime

_LITERALS = re.compile(r"'(?:[^']|'')*'|\b\d+\b|X'[0-9A-Fa-f]*'")
# A whole table or index read, under its name or an alias ("SCAN rm_x", "SCAN c"); not a
# CTE's or a subquery's own rows ("SCAN v", "SCAN m"), nor constant rows.
_SCAN = re.compile(r"^SCAN (\w+)(?! CONSTANT)")
_DERIVED = re.compile(r"\bWITH\s+(\w+)|\)\s+AS\s+(\w+)", re.IGNORECASE)


def _statements_of_a_rebuild(rt: Runtime) -> dict[str, str]:
    """Each distinct statement (literals folded) the handlers ran, with one example."""
    seen: dict[str, str] = {}

    def trace(sql: str) -> None:
        if re.match(r"\s*(WITH|SELECT|UPDATE|DELETE|INSERT)", sql, re.IGNORECASE):
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
    derived = {name for pair in _DERIVED.findall(sql) for name in pair if name}
    plan = conn.execute(f"EXPLAIN QUERY PLAN {sql}").fetchall()
    return [
        row[3]
        for row in plan
        if (m := _SCAN.match(row[3])) and m.group(1) not in derived and m.group(1) != "CONSTANT"
    ]


def test_no_projection_handler_reads_a_whole_table(recorded: Runtime) -> None:
    rt = recorded
    app = rt.app
    rt.catch_up(workflows=False)
    with rt.readdb.read() as tx:
        tx.execute("SELECT tenant_id, id FROM rm_crm_contacts ORDER BY id")
        contacts = [(UUID(t), UUID(c)) for t, c in tx.fetchall()]
    for tenant_id, contact_id in contacts:  # erasures: runs of events, set-based handlers
        app.run(
            lambda uow, t=tenant_id, c=contact_id: app.erase_contact_in(
                uow, t, c, "request:erasure"
            )
        )
    statements = _statements_of_a_rebuild(rt)
    assert len(statements) > 100  # the recorded day exercises most handlers
    assert any(s.lstrip().startswith("WITH") for s in statements.values())  # run handlers
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
