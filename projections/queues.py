"""Queue state: per queue the conversations waiting for an agent, with their priority and
wait, and the counts by channel — what routing and the dashboards read."""

from __future__ import annotations

from typing import Any

from contact_centre.conversations import Conversation
from projections.base import (
    Projection,
    Tx,
    handles,
    handles_run,
    insert_opened,
    micros,
    one_of,
)


class QueueStateProjection(Projection):
    name = "queues"
    version = 2
    tables = ("rm_queue_waiting", "rm_queue_conversations")
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_queue_waiting ("
        " conversation_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL,"
        " channel TEXT NOT NULL, priority INTEGER NOT NULL, waiting_since BIGINT NOT NULL,"
        " queued_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_queue_waiting_order"
        " ON rm_queue_waiting (tenant_id, queue_id, priority, waiting_since)",
        "CREATE TABLE IF NOT EXISTS rm_queue_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, channel TEXT NOT NULL)",
    )

    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(tx, "rm_queue_conversations", run, ("id", "tenant_id", "channel"))

    @handles(Conversation.Queued)
    def _queued(self, tx: Tx, e: Conversation.Queued, position: int) -> None:
        conversation_id = str(e.originator_id)
        tx.execute("SELECT channel FROM rm_queue_conversations WHERE id = ?", (conversation_id,))
        row = tx.fetchone()
        if row is None:
            return
        tx.execute(
            "INSERT INTO rm_queue_waiting (conversation_id, tenant_id, queue_id, channel,"
            " priority, waiting_since, queued_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (conversation_id) DO UPDATE SET queue_id = excluded.queue_id,"
            " priority = excluded.priority, waiting_since = excluded.waiting_since,"
            " queued_at = excluded.queued_at",
            (
                conversation_id,
                str(e.tenant_id),
                str(e.queue_id),
                row[0],
                e.priority,
                micros(e.waiting_since),
                micros(e.at),
            ),
        )

    def _done(self, tx: Tx, conversation_id: str) -> None:
        tx.execute("DELETE FROM rm_queue_waiting WHERE conversation_id = ?", (conversation_id,))

    @handles(Conversation.Assigned)
    def _assigned(self, tx: Tx, e: Conversation.Assigned, position: int) -> None:
        if e.agent_id is not None:
            self._done(tx, str(e.originator_id))

    @handles(Conversation.Abandoned, Conversation.Resolved, Conversation.Closed)
    def _left(self, tx: Tx, e: Any, position: int) -> None:
        self._done(tx, str(e.originator_id))

    @handles_run(Conversation.Abandoned, Conversation.Resolved, Conversation.Closed)
    def _left_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        ids, params = one_of(tx, [str(e.originator_id) for e, _ in run])
        tx.execute(f"DELETE FROM rm_queue_waiting WHERE conversation_id {ids}", params)


WAITING_KEYS = ("conversation_id", "queue_id", "channel", "priority", "waiting_since", "queued_at")


def waiting(tx: Tx, tenant_id: str, queue_ids: list[str] | None = None) -> list[dict[str, Any]]:
    """Waiting conversations: highest priority first, then longest waiting."""
    where = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    if queue_ids is not None:
        if not queue_ids:
            return []
        where.append(f"queue_id IN ({', '.join('?' * len(queue_ids))})")
        params.extend(queue_ids)
    tx.execute(
        f"SELECT {', '.join(WAITING_KEYS)} FROM rm_queue_waiting WHERE {' AND '.join(where)}"
        " ORDER BY priority DESC, waiting_since ASC, conversation_id ASC",
        params,
    )
    return [dict(zip(WAITING_KEYS, row, strict=True)) for row in tx.fetchall()]
