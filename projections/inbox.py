"""The inbox: per conversation what an agent scans, and the messages of each conversation.

Personal fields stay sealed in these rows (scope key in the vault); the API opens them
only to answer an authorised request.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation, ConversationStatus
from projections.base import (
    REGISTERED,
    Projection,
    Tx,
    dumps,
    handles,
    handles_run,
    insert_opened,
    insert_rows,
    loads,
    micros,
    one_of,
    registered_rows,
    rows_as,
    sealed_text,
)

_STILL_WAITING = (ConversationStatus.OPEN, ConversationStatus.PENDING)
# A received message's row, as the run handler takes it.
_RECEIVED = (
    ("id", "text"),
    ("tenant_id", "text"),
    ("conversation_id", "text"),
    ("provider", "text"),
    ("sender_kind", "text"),
    ("content", "text"),
    ("attachments", "text"),
    ("occurred_at", "bigint"),
    ("recorded_at", "bigint"),
    ("position", "bigint"),
)


class InboxProjection(Projection):
    name = "inbox"
    version = 6
    tables = ("rm_conversations", "rm_messages", "rm_contacts")
    query_indexes = (
        "rm_conversations_queue",
        "rm_conversations_recent",
        "rm_conversations_status",
        "rm_conversations_contact",
    )
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, channel TEXT NOT NULL,"
        " contact_id TEXT NOT NULL, status TEXT NOT NULL, assignee_id TEXT,"
        " last_message TEXT, last_direction TEXT, last_message_at BIGINT,"
        " unread INTEGER NOT NULL, message_count INTEGER NOT NULL,"
        " opened_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
        " queue_id TEXT, priority INTEGER NOT NULL DEFAULT 0, waiting_since BIGINT)",
        "CREATE INDEX IF NOT EXISTS rm_conversations_queue"
        " ON rm_conversations (tenant_id, queue_id, updated_at)",
        "CREATE INDEX IF NOT EXISTS rm_conversations_recent"
        " ON rm_conversations (tenant_id, updated_at, id)",
        "CREATE INDEX IF NOT EXISTS rm_conversations_status"
        " ON rm_conversations (tenant_id, status, updated_at)",
        "CREATE INDEX IF NOT EXISTS rm_conversations_contact"
        " ON rm_conversations (tenant_id, contact_id)",
        # content: an inbound message's sealed MessageContent; body: the sealed text of
        # an outbound message or a note. attachments: non-personal metadata only.
        # Keyed by conversation first (message and note ids are unique, each in its one
        # conversation): the key's index is also the way to a conversation's messages.
        # A rowid table, not WITHOUT ROWID: its rows (~550 bytes) would sit in the
        # B-tree's interior pages too, a handful per page, and make every lookup deeper.
        "CREATE TABLE IF NOT EXISTS rm_messages ("
        " conversation_id TEXT NOT NULL, id TEXT NOT NULL, tenant_id TEXT NOT NULL,"
        " kind TEXT NOT NULL, direction TEXT, author TEXT, provider TEXT,"
        " sender_kind TEXT, content TEXT, body TEXT,"
        " attachments TEXT NOT NULL, occurred_at BIGINT NOT NULL,"
        " recorded_at BIGINT NOT NULL, position BIGINT NOT NULL,"
        " PRIMARY KEY (conversation_id, id))",
        "CREATE TABLE IF NOT EXISTS rm_contacts ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, display_name TEXT,"
        " identities TEXT NOT NULL, created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
    )

    # -- contacts ----------------------------------------------------------------------
    @handles_run(Contact.Registered)
    def _contacts_registered(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_rows(
            tx,
            "rm_contacts",
            REGISTERED,
            registered_rows(run),
            key="id",
            also={"updated_at": "v.created_at"},
        )

    @handles(Contact.IdentityLinked)
    def _identity_linked(self, tx: Tx, e: Contact.IdentityLinked, position: int) -> None:
        tx.execute("SELECT identities FROM rm_contacts WHERE id = ?", (str(e.originator_id),))
        row = tx.fetchone()
        if row is None:
            return
        identities = loads(row[0])
        identities.append([e.kind, e.address])
        tx.execute(
            "UPDATE rm_contacts SET identities = ?, updated_at = ? WHERE id = ?",
            (dumps(identities), micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.DetailsCorrected)
    def _details_corrected(self, tx: Tx, e: Contact.DetailsCorrected, position: int) -> None:
        tx.execute(
            "UPDATE rm_contacts SET display_name = ?, updated_at = ? WHERE id = ?",
            (sealed_text(e.display_name), micros(e.at), str(e.originator_id)),
        )

    # -- conversations -----------------------------------------------------------------
    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(
            tx,
            "rm_conversations",
            run,
            ("id", "tenant_id", "channel", "contact_id", "opened_at"),
            also={
                "status": f"'{ConversationStatus.OPEN.value}'",
                "assignee_id": "NULL",
                "last_message": "NULL",
                "last_direction": "NULL",
                "last_message_at": "NULL",
                "unread": "0",
                "message_count": "0",
                "updated_at": "v.opened_at",
            },
        )

    @handles_run(Conversation.MessageReceived)
    def _messages_received(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        rows = [
            (
                str(e.message_id),
                str(e.tenant_id),
                str(e.originator_id),
                e.provider,
                e.sender_kind,
                sealed_text(e.content),
                dumps(e.attachments),
                micros(e.occurred_at),
                micros(e.at),
                position,
            )
            for e, position in run
        ]
        insert_rows(
            tx,
            "rm_messages",
            _RECEIVED,
            rows,
            key="conversation_id, id",
            also={"kind": "'message'", "direction": "'inbound'", "author": "NULL", "body": "NULL"},
        )
        prefix, source, params = rows_as(tx, "v", _RECEIVED, rows)
        tx.execute(
            prefix + "UPDATE rm_conversations SET last_message = v.content,"
            " last_direction = 'inbound', last_message_at = v.occurred_at, unread = unread + 1,"
            " message_count = message_count + 1, updated_at = v.recorded_at"
            f" FROM {source} WHERE rm_conversations.id = v.conversation_id",
            params,
        )

    def _outbound(
        self,
        tx: Tx,
        e: Conversation.MessageSent | Conversation.NoteAdded,
        kind: str,
        entry_id: str,
        position: int,
    ) -> None:
        at = micros(e.at)
        tx.execute(
            "INSERT INTO rm_messages (id, tenant_id, conversation_id, kind, direction, author,"
            " provider, sender_kind, content, body, attachments, occurred_at, recorded_at,"
            " position)"
            " VALUES (?, ?, ?, ?, ?, ?, NULL, NULL, NULL, ?, '[]', ?, ?, ?)"
            " ON CONFLICT (conversation_id, id) DO NOTHING",
            (
                entry_id,
                str(e.tenant_id),
                str(e.originator_id),
                kind,
                "outbound" if kind == "message" else None,
                e.author,
                sealed_text(e.body),
                at,
                at,
                position,
            ),
        )

    @handles(Conversation.MessageSent)
    def _message_sent(self, tx: Tx, e: Conversation.MessageSent, position: int) -> None:
        self._outbound(tx, e, "message", str(e.message_id), position)
        at = micros(e.at)
        tx.execute(
            "UPDATE rm_conversations SET last_message = ?, last_direction = 'outbound',"
            " last_message_at = ?, unread = 0, message_count = message_count + 1,"
            " updated_at = ? WHERE id = ?",
            (sealed_text(e.body), at, at, str(e.originator_id)),
        )

    @handles(Conversation.NoteAdded)
    def _note_added(self, tx: Tx, e: Conversation.NoteAdded, position: int) -> None:
        self._outbound(tx, e, "note", str(e.note_id), position)

    @handles(Conversation.Assigned)
    def _assigned(self, tx: Tx, e: Conversation.Assigned, position: int) -> None:
        if e.agent_id is None:
            tx.execute(
                "UPDATE rm_conversations SET assignee_id = NULL, updated_at = ? WHERE id = ?",
                (micros(e.at), str(e.originator_id)),
            )
            return
        # Assigned to an agent, the conversation no longer waits in its queue.
        tx.execute(
            "UPDATE rm_conversations SET assignee_id = ?, waiting_since = NULL, updated_at = ?"
            " WHERE id = ?",
            (str(e.agent_id), micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.Erased)
    def _contact_erased(self, tx: Tx, e: Contact.Erased, position: int) -> None:
        tx.execute(
            "UPDATE rm_contacts SET display_name = NULL, identities = '[]', updated_at = ?"
            " WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )

    @handles_run(Conversation.ContentErased)
    def _contents_erased(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        ids, params = one_of(tx, [str(e.originator_id) for e, _ in run])
        tx.execute(f"UPDATE rm_conversations SET last_message = NULL WHERE id {ids}", params)
        tx.execute(
            # rows already blank are left alone (on PostgreSQL an update writes a new row)
            "UPDATE rm_messages SET content = NULL, body = NULL"
            f" WHERE conversation_id {ids} AND (content IS NOT NULL OR body IS NOT NULL)",
            params,
        )

    @handles(Contact.MergedInto)
    def _contact_merged(self, tx: Tx, e: Contact.MergedInto, position: int) -> None:
        """The merged-away contact's conversations now name the survivor (see
        ``Conversation.ContactChanged``): its own row is no longer shown anywhere."""
        tx.execute("DELETE FROM rm_contacts WHERE id = ?", (str(e.originator_id),))

    @handles(Conversation.ContactChanged)
    def _contact_changed(self, tx: Tx, e: Conversation.ContactChanged, position: int) -> None:
        tx.execute(
            "UPDATE rm_conversations SET contact_id = ? WHERE id = ?",
            (str(e.contact_id), str(e.originator_id)),
        )

    @handles(Conversation.Queued)
    def _queued(self, tx: Tx, e: Conversation.Queued, position: int) -> None:
        tx.execute(
            "UPDATE rm_conversations SET queue_id = ?, priority = ?, waiting_since = ?,"
            " assignee_id = NULL, updated_at = ? WHERE id = ?",
            (
                str(e.queue_id),
                e.priority,
                micros(e.waiting_since),
                micros(e.at),
                str(e.originator_id),
            ),
        )

    @handles(Conversation.Abandoned)
    def _abandoned(self, tx: Tx, e: Conversation.Abandoned, position: int) -> None:
        tx.execute(
            "UPDATE rm_conversations SET waiting_since = NULL, updated_at = ? WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )

    def _status(
        self, tx: Tx, conversation_id: str | list[str], status: ConversationStatus, at: int
    ) -> None:
        # Resolved and closed conversations wait for nobody.
        waiting = "waiting_since" if status in _STILL_WAITING else "NULL"
        if isinstance(conversation_id, str):
            ids, params = "= ?", [conversation_id]
        else:
            ids, params = one_of(tx, conversation_id)
        tx.execute(
            f"UPDATE rm_conversations SET status = ?, updated_at = ?, waiting_since = {waiting}"
            f" WHERE id {ids}",
            (status.value, at, *params),
        )

    @handles(Conversation.MarkedPending)
    def _pending(self, tx: Tx, e: Conversation.MarkedPending, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.PENDING, micros(e.at))

    @handles(Conversation.Resolved)
    def _resolved(self, tx: Tx, e: Conversation.Resolved, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.RESOLVED, micros(e.at))

    @handles(Conversation.Reopened)
    def _reopened(self, tx: Tx, e: Conversation.Reopened, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.OPEN, micros(e.at))

    @handles(Conversation.Closed)
    def _closed(self, tx: Tx, e: Conversation.Closed, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.CLOSED, micros(e.at))

    @handles_run(Conversation.Closed)
    def _closed_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """A run's events have one time: one statement for all their conversations."""
        self._status(
            tx,
            [str(e.originator_id) for e, _ in run],
            ConversationStatus.CLOSED,
            micros(run[0][0].at),
        )


# -- queries -------------------------------------------------------------------------------
CONVERSATION_COLUMNS = (
    "c.id, c.channel, c.contact_id, c.status, c.assignee_id, c.last_message, c.last_direction,"
    " c.last_message_at, c.unread, c.message_count, c.opened_at, c.updated_at,"
    " c.queue_id, c.priority, c.waiting_since, k.display_name, k.identities"
)
_CONVERSATION_KEYS = (
    "id",
    "channel",
    "contact_id",
    "status",
    "assignee_id",
    "last_message",
    "last_direction",
    "last_message_at",
    "unread",
    "message_count",
    "opened_at",
    "updated_at",
    "queue_id",
    "priority",
    "waiting_since",
    "contact_display_name",
    "contact_identities",
)


def _conversation_row(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_CONVERSATION_KEYS, row, strict=True))


def list_conversations(
    tx: Tx,
    tenant_id: str,
    *,
    status: str | None = None,
    channel: str | None = None,
    assignee: str | None = None,
    contact_id: str | None = None,
    contact_ids: Sequence[str] | None = None,
    queue_id: str | None = None,
    visible_to: tuple[str, Sequence[str]] | None = None,
    after: tuple[int, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest activity first; ``after`` is the (updated_at, id) of the last row seen.

    ``contact_ids`` restricts to those contacts (a contact search); ``visible_to`` is an
    agent's (agent id, queue ids): only conversations assigned to it or in its queues.
    """
    where = ["c.tenant_id = ?"]
    params: list[object] = [tenant_id]
    if contact_ids is not None:
        if not contact_ids:
            return []
        where.append(f"c.contact_id IN ({', '.join('?' * len(contact_ids))})")
        params.extend(contact_ids)
    if queue_id is not None:
        where.append("c.queue_id = ?")
        params.append(queue_id)
    if visible_to is not None:
        agent, queues = visible_to
        clause = "c.assignee_id = ?"
        params.append(agent)
        if queues:
            clause += f" OR c.queue_id IN ({', '.join('?' * len(queues))})"
            params.extend(queues)
        where.append(f"({clause})")
    if status is not None:
        where.append("c.status = ?")
        params.append(status)
    if channel is not None:
        where.append("c.channel = ?")
        params.append(channel)
    if assignee == "none":
        where.append("c.assignee_id IS NULL")
    elif assignee is not None:
        where.append("c.assignee_id = ?")
        params.append(assignee)
    if contact_id is not None:
        where.append("c.contact_id = ?")
        params.append(contact_id)
    if after is not None:
        where.append("(c.updated_at < ? OR (c.updated_at = ? AND c.id < ?))")
        params.extend([after[0], after[0], after[1]])
    params.append(limit)
    tx.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM rm_conversations c"
        " LEFT JOIN rm_contacts k ON k.id = c.contact_id"
        f" WHERE {' AND '.join(where)} ORDER BY c.updated_at DESC, c.id DESC LIMIT ?",
        params,
    )
    return [_conversation_row(row) for row in tx.fetchall()]


def get_conversation(tx: Tx, tenant_id: str, conversation_id: str) -> dict[str, Any] | None:
    tx.execute(
        f"SELECT {CONVERSATION_COLUMNS} FROM rm_conversations c"
        " LEFT JOIN rm_contacts k ON k.id = c.contact_id"
        " WHERE c.tenant_id = ? AND c.id = ?",
        (tenant_id, conversation_id),
    )
    row = tx.fetchone()
    return None if row is None else _conversation_row(row)


_MESSAGE_KEYS = (
    "id",
    "kind",
    "direction",
    "author",
    "provider",
    "sender_kind",
    "content",
    "body",
    "attachments",
    "occurred_at",
    "recorded_at",
)


def list_messages(tx: Tx, tenant_id: str, conversation_id: str) -> list[dict[str, Any]]:
    """Messages and notes of one conversation in time order."""
    tx.execute(
        f"SELECT {', '.join(_MESSAGE_KEYS)} FROM rm_messages"
        " WHERE tenant_id = ? AND conversation_id = ? ORDER BY occurred_at, position",
        (tenant_id, conversation_id),
    )
    return [dict(zip(_MESSAGE_KEYS, row, strict=True)) for row in tx.fetchall()]
