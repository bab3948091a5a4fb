"""What channels add to a conversation besides messages: call progress, recordings and
transcripts (voice), the visitor's network data (webchat, admins only), and the webchat
blocklist. Personal values stay sealed."""

from __future__ import annotations

from typing import Any

from contact_centre.blocks import VisitorBlock
from contact_centre.conversations import Conversation
from projections.base import Projection, Tx, handles, handles_run, micros, one_of, sealed_text


def _entry_id(e: Any) -> str:
    return f"{e.originator_id}:{e.originator_version}"


class ChannelActivityProjection(Projection):
    name = "channel_activity"
    tables = ("rm_call_events", "rm_visitor_networks", "rm_visitor_blocks")
    ddl = (
        # kind: status | recording | transcript; payload: sealed recording JSON or text
        "CREATE TABLE IF NOT EXISTS rm_call_events ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, conversation_id TEXT NOT NULL,"
        " call_ref TEXT NOT NULL, kind TEXT NOT NULL, status TEXT,"
        " duration_seconds INTEGER, payload TEXT, at BIGINT NOT NULL, position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_call_events_conversation"
        " ON rm_call_events (conversation_id, position)",
        "CREATE TABLE IF NOT EXISTS rm_visitor_networks ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, conversation_id TEXT NOT NULL,"
        " network TEXT NOT NULL, at BIGINT NOT NULL, position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_visitor_networks_conversation"
        " ON rm_visitor_networks (conversation_id, position)",
        "CREATE TABLE IF NOT EXISTS rm_visitor_blocks ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " value TEXT NOT NULL, reason TEXT NOT NULL, created_by TEXT NOT NULL,"
        " created_at BIGINT NOT NULL, lifted_at BIGINT)",
        "CREATE INDEX IF NOT EXISTS rm_visitor_blocks_tenant"
        " ON rm_visitor_blocks (tenant_id, created_at)",
    )

    def _call_event(
        self,
        tx: Tx,
        e: Any,
        position: int,
        kind: str,
        status: str | None,
        duration: int | None,
        payload: str | None,
    ) -> None:
        tx.execute(
            "INSERT INTO rm_call_events (id, tenant_id, conversation_id, call_ref, kind, status,"
            " duration_seconds, payload, at, position) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                _entry_id(e),
                str(e.tenant_id),
                str(e.originator_id),
                str(e.call_ref),
                kind,
                status,
                duration,
                payload,
                micros(e.at),
                position,
            ),
        )

    @handles(Conversation.CallStatusChanged)
    def _call_status(self, tx: Tx, e: Conversation.CallStatusChanged, position: int) -> None:
        self._call_event(tx, e, position, "status", e.status, e.duration_seconds, None)

    @handles(Conversation.RecordingAttached)
    def _recording(self, tx: Tx, e: Conversation.RecordingAttached, position: int) -> None:
        payload = sealed_text(e.recording)
        self._call_event(tx, e, position, "recording", None, e.duration_seconds, payload)

    @handles(Conversation.TranscriptAttached)
    def _transcript(self, tx: Tx, e: Conversation.TranscriptAttached, position: int) -> None:
        payload = sealed_text(e.transcript)
        self._call_event(tx, e, position, "transcript", None, None, payload)

    @handles(Conversation.VisitorNetworkCaptured)
    def _network(self, tx: Tx, e: Conversation.VisitorNetworkCaptured, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_visitor_networks (id, tenant_id, conversation_id, network, at,"
            " position) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                _entry_id(e),
                str(e.tenant_id),
                str(e.originator_id),
                sealed_text(e.network),
                micros(e.at),
                position,
            ),
        )

    @handles_run(Conversation.ContentErased)
    def _erased_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """Recordings, transcripts and the visitor's network data go with the content."""
        ids, params = one_of(tx, [str(e.originator_id) for e, _ in run])
        # rows already blank are left alone (on PostgreSQL an update writes a new row)
        tx.execute(
            "UPDATE rm_call_events SET payload = NULL"
            f" WHERE conversation_id {ids} AND payload IS NOT NULL",
            params,
        )
        tx.execute(f"DELETE FROM rm_visitor_networks WHERE conversation_id {ids}", params)

    @handles(VisitorBlock.Created)
    def _blocked(self, tx: Tx, e: VisitorBlock.Created, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_visitor_blocks (id, tenant_id, kind, value, reason, created_by,"
            " created_at, lifted_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                e.kind,
                sealed_text(e.value),
                e.reason,
                e.by,
                micros(e.at),
            ),
        )

    @handles(VisitorBlock.Lifted)
    def _lifted(self, tx: Tx, e: VisitorBlock.Lifted, position: int) -> None:
        tx.execute(
            "UPDATE rm_visitor_blocks SET lifted_at = ? WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )


_CALL_KEYS = ("call_ref", "kind", "status", "duration_seconds", "payload", "at")


def call_events(tx: Tx, tenant_id: str, conversation_id: str) -> list[dict[str, Any]]:
    tx.execute(
        f"SELECT {', '.join(_CALL_KEYS)} FROM rm_call_events"
        " WHERE tenant_id = ? AND conversation_id = ? ORDER BY position",
        (tenant_id, conversation_id),
    )
    return [dict(zip(_CALL_KEYS, row, strict=True)) for row in tx.fetchall()]


def visitor_networks(tx: Tx, tenant_id: str, conversation_id: str) -> list[dict[str, Any]]:
    tx.execute(
        "SELECT network, at FROM rm_visitor_networks"
        " WHERE tenant_id = ? AND conversation_id = ? ORDER BY position",
        (tenant_id, conversation_id),
    )
    return [{"network": row[0], "at": row[1]} for row in tx.fetchall()]


_BLOCK_KEYS = ("id", "kind", "value", "reason", "created_by", "created_at", "lifted_at")


def list_blocks(tx: Tx, tenant_id: str) -> list[dict[str, Any]]:
    tx.execute(
        f"SELECT {', '.join(_BLOCK_KEYS)} FROM rm_visitor_blocks"
        " WHERE tenant_id = ? ORDER BY created_at, id",
        (tenant_id,),
    )
    return [dict(zip(_BLOCK_KEYS, row, strict=True)) for row in tx.fetchall()]
