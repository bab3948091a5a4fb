"""Stores written before the write-side index and the key vault became WITHOUT ROWID
tables on SQLite open with their rows moved over: nothing recorded is lost, duplicates
are still recognised and sealed values still open."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import Settings
from infra.http.views import Opener
from infra.runtime import build
from projections import inbox


def _interaction(tenant: UUID, message_id: str) -> Interaction:
    return Interaction(
        tenant_id=tenant,
        channel=Channel.SMS,
        direction=Direction.INBOUND,
        provider="twilio",
        provider_message_id=message_id,
        sender=Identity(IdentityKind.PHONE, "+447700900123"),
        body="Where is my parcel?",
        occurred_at=datetime.now(UTC),
    )


def _to_rowid_table(path: Path, table: str, ddl: str, indexes: tuple[str, ...] = ()) -> None:
    """Put ``table`` back in the layout stores had before (a rowid table)."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN")
        conn.execute(f"ALTER TABLE {table} RENAME TO {table}_new")
        conn.execute(ddl)
        conn.execute(f"INSERT INTO {table} SELECT * FROM {table}_new")
        conn.execute(f"DROP TABLE {table}_new")
        for index in indexes:
            conn.execute(index)
        conn.execute("COMMIT")
    finally:
        conn.close()


def _layout(path: Path, table: str) -> tuple[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        (sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
        ).fetchone()
        indexes = [
            str(row[0])
            for row in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?"
                " AND sql IS NOT NULL ORDER BY name",
                (table,),
            )
        ]
    finally:
        conn.close()
    return str(sql), indexes


def test_an_older_stores_index_and_vault_move_to_the_new_layout_with_every_row(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", retention_interval_seconds=0)
    rt = build(settings)
    try:
        tenant, _ = rt.app.register_tenant("Acme")
        first = rt.app.receive(_interaction(tenant, "SM1"))
        rt.catch_up(workflows=False)
    finally:
        rt.close()
    events, vault = settings.data_dir / "events.sqlite", settings.data_dir / "vault.sqlite"
    assert "WITHOUT ROWID" in _layout(events, "cc_index")[0]
    assert "WITHOUT ROWID" in _layout(vault, "cc_vault_keys")[0]
    _to_rowid_table(
        events,
        "cc_index",
        "CREATE TABLE cc_index (namespace TEXT NOT NULL, key TEXT NOT NULL,"
        " value TEXT NOT NULL, PRIMARY KEY (namespace, key))",
    )
    _to_rowid_table(
        vault,
        "cc_vault_keys",
        "CREATE TABLE cc_vault_keys (scope TEXT PRIMARY KEY, tenant_id TEXT NOT NULL,"
        " wrapped TEXT NOT NULL, created_at BIGINT NOT NULL)",
        ("CREATE INDEX cc_vault_keys_tenant ON cc_vault_keys (tenant_id)",),
    )
    assert "WITHOUT ROWID" not in _layout(events, "cc_index")[0]

    rt = build(settings)
    try:
        again = rt.app.receive(_interaction(tenant, "SM1"))  # a duplicate delivery
        assert again.duplicate
        assert (again.conversation_id, again.message_id) == (
            first.conversation_id,
            first.message_id,
        )
        second = rt.app.receive(_interaction(tenant, f"SM{uuid4().hex}"))
        assert second.contact_id == first.contact_id  # the identity lookup survived
        rt.catch_up(workflows=False)
        with rt.readdb.read() as tx:
            messages = inbox.list_messages(tx, str(tenant), str(first.conversation_id))
        opener = Opener(rt.vault)
        bodies = [content.body for m in messages if (content := opener.content(m["content"]))]
        assert bodies == ["Where is my parcel?", "Where is my parcel?"]
    finally:
        rt.close()
    sql, indexes = _layout(events, "cc_index")
    assert "WITHOUT ROWID" in sql
    sql, indexes = _layout(vault, "cc_vault_keys")
    assert "WITHOUT ROWID" in sql
    assert indexes == ["cc_vault_keys_tenant"]
