"""The contact timeline: everything that happened with a contact, on every channel, in
time order: messages in and out, notes, status changes, queueing and assignment (and, as
channels add them, calls with their duration and voicemails)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from contact_centre.conversations import Conversation
from projections.base import (
    Projection,
    Tx,
    dumps,
    handles,
    handles_run,
    insert_opened,
    micros,
    one_of,
    rows_as,
    sealed_text,
)

# A timeline entry's row, as :meth:`TimelineProjection._insert_entries` takes it.
_ENTRY = (
    ("id", "text"),
    ("tenant_id", "text"),
    ("conversation_id", "text"),
    ("direction", "text"),
    ("content", "text"),
    ("detail", "text"),
    ("occurred_at", "bigint"),
    ("position", "bigint"),
)


class TimelineProjection(Projection):
    name = "timeline"
    version = 5
    tables = ("rm_timeline", "rm_timeline_conversations")
    query_indexes = ("rm_timeline_contact",)  # handlers find entries by their key
    ddl = (
        # content: sealed (message content or note/reply body); detail: non-personal JSON.
        # Keyed by conversation first (entry ids are unique, each in its one
        # conversation): the key's index is also the way to a conversation's entries.
        # A rowid table for the same reason as rm_messages (rows of ~550 bytes).
        "CREATE TABLE IF NOT EXISTS rm_timeline ("
        " conversation_id TEXT NOT NULL, id TEXT NOT NULL, tenant_id TEXT NOT NULL,"
        " contact_id TEXT NOT NULL, channel TEXT NOT NULL, kind TEXT NOT NULL,"
        " direction TEXT, content TEXT, detail TEXT NOT NULL,"
        " occurred_at BIGINT NOT NULL, position BIGINT NOT NULL,"
        " PRIMARY KEY (conversation_id, id))",
        "CREATE INDEX IF NOT EXISTS rm_timeline_contact"
        " ON rm_timeline (tenant_id, contact_id, occurred_at, position)",
        "CREATE TABLE IF NOT EXISTS rm_timeline_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, contact_id TEXT NOT NULL,"
        " channel TEXT NOT NULL) WITHOUT ROWID",
    )

    def _entry(
        self,
        tx: Tx,
        e: Any,
        position: int,
        kind: str,
        *,
        entry_id: str | None = None,
        direction: str | None = None,
        content: str | None = None,
        detail: dict[str, Any] | None = None,
        occurred_at: int | None = None,
    ) -> None:
        conversation_id = str(e.originator_id)
        # the conversation's contact and channel taken in the same statement: no result to
        # wait for (a round trip per entry on PostgreSQL); no conversation row, no entry
        tx.execute(
            "INSERT INTO rm_timeline (id, tenant_id, contact_id, conversation_id, channel, kind,"
            " direction, content, detail, occurred_at, position)"
            " SELECT ?, ?, contact_id, ?, channel, ?, ?, ?, ?, ?, ?"
            " FROM rm_timeline_conversations WHERE id = ?"
            " ON CONFLICT (conversation_id, id) DO NOTHING",
            (
                entry_id or f"{conversation_id}:{e.originator_version}",
                str(e.tenant_id),
                conversation_id,
                kind,
                direction,
                content,
                dumps(detail or {}),
                occurred_at if occurred_at is not None else micros(e.at),
                position,
                conversation_id,
            ),
        )

    def _entries(
        self,
        tx: Tx,
        run: list[tuple[Any, int]],
        kind: str,
        detail: Callable[[Any], dict[str, Any]],
    ) -> None:
        """As :meth:`_entry` (no direction, no content, at the event's time) for each event
        of a run, in one statement."""
        self._insert_entries(
            tx,
            kind,
            [
                (
                    f"{e.originator_id}:{e.originator_version}",
                    str(e.tenant_id),
                    str(e.originator_id),
                    None,
                    None,
                    dumps(detail(e)),
                    micros(e.at),
                    position,
                )
                for e, position in run
            ],
        )

    def _insert_entries(self, tx: Tx, kind: str, rows: list[tuple[Any, ...]]) -> None:
        """Entries of one kind: (id, tenant, conversation, direction, content, detail,
        occurred at, position) rows, each with its conversation's contact and channel."""
        prefix, source, params = rows_as(tx, "v", _ENTRY, rows)
        tx.execute(
            prefix + "INSERT INTO rm_timeline (id, tenant_id, contact_id, conversation_id,"
            " channel, kind, direction, content, detail, occurred_at, position)"
            " SELECT v.id, v.tenant_id, c.contact_id, v.conversation_id, c.channel,"
            f" '{kind}', v.direction, v.content, v.detail, v.occurred_at, v.position"
            f" FROM {source}, rm_timeline_conversations c WHERE c.id = v.conversation_id"
            " ON CONFLICT (conversation_id, id) DO NOTHING",
            params,
        )

    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(
            tx, "rm_timeline_conversations", run, ("id", "tenant_id", "contact_id", "channel")
        )
        self._entries(tx, run, "status", lambda e: {"status": "opened"})

    @handles(Conversation.ContactChanged)
    def _contact_changed(self, tx: Tx, e: Conversation.ContactChanged, position: int) -> None:
        """A merge: the conversation's history joins the survivor's timeline."""
        conversation_id, contact_id = str(e.originator_id), str(e.contact_id)
        tx.execute(
            "UPDATE rm_timeline_conversations SET contact_id = ? WHERE id = ?",
            (contact_id, conversation_id),
        )
        tx.execute(
            "UPDATE rm_timeline SET contact_id = ? WHERE conversation_id = ?",
            (contact_id, conversation_id),
        )

    @handles_run(Conversation.MessageReceived)
    def _received_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self._insert_entries(
            tx,
            "message",
            [
                (
                    str(e.message_id),
                    str(e.tenant_id),
                    str(e.originator_id),
                    "inbound",
                    sealed_text(e.content),
                    dumps({"provider": e.provider, "attachments": len(e.attachments)}),
                    micros(e.occurred_at),
                    position,
                )
                for e, position in run
            ],
        )

    @handles(Conversation.MessageSent)
    def _sent(self, tx: Tx, e: Conversation.MessageSent, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "message",
            entry_id=str(e.message_id),
            direction="outbound",
            content=sealed_text(e.body),
            detail={"author": e.author},
        )

    @handles(Conversation.NoteAdded)
    def _note(self, tx: Tx, e: Conversation.NoteAdded, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "note",
            entry_id=str(e.note_id),
            content=sealed_text(e.body),
            detail={"author": e.author},
        )

    @handles(Conversation.Queued)
    def _queued(self, tx: Tx, e: Conversation.Queued, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "queued",
            detail={"queue_id": str(e.queue_id), "priority": e.priority, "reason": e.reason},
        )

    @handles(Conversation.Assigned)
    def _assigned(self, tx: Tx, e: Conversation.Assigned, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "assigned",
            detail={"agent_id": str(e.agent_id) if e.agent_id else None, "by": e.by},
        )

    @handles(Conversation.Abandoned)
    def _abandoned(self, tx: Tx, e: Conversation.Abandoned, position: int) -> None:
        self._entry(tx, e, position, "abandoned", detail={"reason": e.reason})

    @handles(Conversation.CallStatusChanged)
    def _call(self, tx: Tx, e: Conversation.CallStatusChanged, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "call",
            detail={
                "call": str(e.call_ref),
                "status": e.status,
                "duration_seconds": e.duration_seconds,
            },
        )

    @handles(Conversation.RecordingAttached)
    def _recording(self, tx: Tx, e: Conversation.RecordingAttached, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "recording",
            detail={"call": str(e.call_ref), "duration_seconds": e.duration_seconds},
        )

    @handles(Conversation.TranscriptAttached)
    def _transcript(self, tx: Tx, e: Conversation.TranscriptAttached, position: int) -> None:
        self._entry(
            tx,
            e,
            position,
            "transcript",
            content=sealed_text(e.transcript),
            detail={"call": str(e.call_ref)},
        )

    @handles(Conversation.ContentErased)
    def _content_erased(self, tx: Tx, e: Conversation.ContentErased, position: int) -> None:
        conversation_id = str(e.originator_id)
        tx.execute(
            "UPDATE rm_timeline SET content = NULL WHERE conversation_id = ?"
            " AND content IS NOT NULL",
            (conversation_id,),
        )
        self._entry(tx, e, position, "erased", detail={"reason": e.reason})

    @handles_run(Conversation.ContentErased)
    def _contents_erased(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        ids, params = one_of(tx, [str(e.originator_id) for e, _ in run])
        # entries without content (status changes, this run's own) are left alone: on
        # PostgreSQL an update writes a new row version even when nothing changes
        tx.execute(
            "UPDATE rm_timeline SET content = NULL"
            f" WHERE conversation_id {ids} AND content IS NOT NULL",
            params,
        )
        self._entries(tx, run, "erased", lambda e: {"reason": e.reason})

    @handles(Conversation.MarkedPending)
    def _pending(self, tx: Tx, e: Any, position: int) -> None:
        self._entry(tx, e, position, "status", detail={"status": "pending", "by": e.by})

    @handles(Conversation.Resolved)
    def _resolved(self, tx: Tx, e: Any, position: int) -> None:
        self._entry(tx, e, position, "status", detail={"status": "resolved", "by": e.by})

    @handles(Conversation.Reopened)
    def _reopened(self, tx: Tx, e: Any, position: int) -> None:
        self._entry(
            tx, e, position, "status", detail={"status": "reopened", "by": e.by, "reason": e.reason}
        )

    @handles(Conversation.Closed)
    def _closed(self, tx: Tx, e: Any, position: int) -> None:
        self._entry(tx, e, position, "status", detail={"status": "closed", "by": e.by})

    @handles_run(Conversation.Closed)
    def _closed_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self._entries(tx, run, "status", lambda e: {"status": "closed", "by": e.by})


TIMELINE_KEYS = (
    "id",
    "conversation_id",
    "channel",
    "kind",
    "direction",
    "content",
    "detail",
    "occurred_at",
    "position",
)


def list_timeline(
    tx: Tx,
    tenant_id: str,
    contact_ids: Sequence[str],
    *,
    after: tuple[int, int] | None = None,
    descending: bool = False,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """A page of the contacts' timeline, in time order (``after``: last (time, position))."""
    if not contact_ids:
        return []
    where = ["tenant_id = ?", f"contact_id IN ({', '.join('?' * len(contact_ids))})"]
    params: list[Any] = [tenant_id, *contact_ids]
    op = "<" if descending else ">"
    if after is not None:
        where.append(f"(occurred_at {op} ? OR (occurred_at = ? AND position {op} ?))")
        params.extend([after[0], after[0], after[1]])
    direction = "DESC" if descending else "ASC"
    params.append(limit)
    tx.execute(
        f"SELECT {', '.join(TIMELINE_KEYS)} FROM rm_timeline WHERE {' AND '.join(where)}"
        f" ORDER BY occurred_at {direction}, position {direction} LIMIT ?",
        params,
    )
    return [dict(zip(TIMELINE_KEYS, row, strict=True)) for row in tx.fetchall()]
