"""Supervisor metrics: live state and 15-minute interval statistics per queue and channel.

Definitions (see docs/metrics.md): a conversation is *offered* to a queue when it enters
it; *answered* when an agent takes it (is assigned) while it waits; *abandoned* when the
customer leaves before that. Interval statistics count a conversation in the interval in
which it was offered, so every figure of a row describes the same set of conversations.
"""

from __future__ import annotations

from typing import Any

from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel
from contact_centre.staff import Agent, Queue, default_sl_threshold
from projections.base import (
    Projection,
    Tx,
    handles,
    handles_run,
    insert_opened,
    micros,
    one_of,
    rows_as,
)

INTERVAL = 15 * 60 * 1_000_000  # 15 minutes, in microseconds


def interval_of(moment: int) -> int:
    return moment - moment % INTERVAL


class MetricsProjection(Projection):
    name = "metrics"
    # 3: service level against the queue's threshold at the answer's place in the log,
    # whichever order the queue's and the conversation's events arrive in (Kafka)
    # 4: conversation rows stored in their key's order (WITHOUT ROWID on SQLite)
    version = 4
    tables = (
        "rm_metric_intervals",
        "rm_metric_conversations",
        "rm_metric_thresholds",
        "rm_metric_answers",
        "rm_agent_presence",
        "rm_sla_breaches",
    )
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_metric_intervals ("
        " tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL, channel TEXT NOT NULL,"
        " interval_start BIGINT NOT NULL, offered INTEGER NOT NULL DEFAULT 0,"
        " answered INTEGER NOT NULL DEFAULT 0, abandoned INTEGER NOT NULL DEFAULT 0,"
        " overflowed INTEGER NOT NULL DEFAULT 0,"
        " answered_in_sl INTEGER NOT NULL DEFAULT 0, answer_time BIGINT NOT NULL DEFAULT 0,"
        " handled INTEGER NOT NULL DEFAULT 0, handle_time BIGINT NOT NULL DEFAULT 0,"
        " responded INTEGER NOT NULL DEFAULT 0, response_time BIGINT NOT NULL DEFAULT 0,"
        " PRIMARY KEY (tenant_id, queue_id, channel, interval_start))",
        # per conversation: its current offer and what is still to be measured
        "CREATE TABLE IF NOT EXISTS rm_metric_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, channel TEXT NOT NULL,"
        " queue_id TEXT, interval_start BIGINT, offered_at BIGINT, answered_at BIGINT,"
        " agent_id TEXT, first_inbound_at BIGINT, responded INTEGER NOT NULL DEFAULT 0)"
        " WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS rm_metric_conversations_handling"
        " ON rm_metric_conversations (tenant_id, answered_at)",
        # each queue's service-level threshold from a position of the log on
        "CREATE TABLE IF NOT EXISTS rm_metric_thresholds ("
        " queue_id TEXT NOT NULL, position BIGINT NOT NULL, tenant_id TEXT NOT NULL,"
        " sl_threshold BIGINT NOT NULL, PRIMARY KEY (queue_id, position))",
        # every answer, so a threshold that arrives after it can still judge it
        "CREATE TABLE IF NOT EXISTS rm_metric_answers ("
        " conversation_id TEXT NOT NULL, position BIGINT NOT NULL, tenant_id TEXT NOT NULL,"
        " queue_id TEXT NOT NULL, channel TEXT NOT NULL, interval_start BIGINT NOT NULL,"
        " wait BIGINT NOT NULL, within INTEGER NOT NULL,"
        " PRIMARY KEY (conversation_id, position))",
        "CREATE INDEX IF NOT EXISTS rm_metric_answers_queue"
        " ON rm_metric_answers (queue_id, position)",
        "CREATE TABLE IF NOT EXISTS rm_agent_presence ("
        " agent_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, presence TEXT NOT NULL,"
        " since BIGINT NOT NULL)",
        "CREATE TABLE IF NOT EXISTS rm_sla_breaches ("
        " conversation_id TEXT NOT NULL, kind TEXT NOT NULL, started BIGINT NOT NULL,"
        " tenant_id TEXT NOT NULL, queue_id TEXT NOT NULL, threshold_seconds INTEGER NOT NULL,"
        " waited_seconds INTEGER NOT NULL, at BIGINT NOT NULL,"
        " PRIMARY KEY (conversation_id, kind, started))",
        "CREATE INDEX IF NOT EXISTS rm_sla_breaches_recent ON rm_sla_breaches (tenant_id, at)",
    )

    def _bump(self, tx: Tx, tenant: str, queue: str, channel: str, start: int, **adds: int) -> None:
        columns = sorted(adds)
        tx.execute(
            "INSERT INTO rm_metric_intervals (tenant_id, queue_id, channel, interval_start,"
            f" {', '.join(columns)}) VALUES (?, ?, ?, ?, {', '.join('?' * len(columns))})"
            " ON CONFLICT (tenant_id, queue_id, channel, interval_start) DO UPDATE SET "
            + ", ".join(f"{c} = rm_metric_intervals.{c} + excluded.{c}" for c in columns),
            (tenant, queue, channel, start, *(adds[c] for c in columns)),
        )

    def _conversation(self, tx: Tx, conversation_id: str) -> dict[str, Any] | None:
        keys = (
            "tenant_id",
            "channel",
            "queue_id",
            "interval_start",
            "offered_at",
            "answered_at",
            "agent_id",
            "first_inbound_at",
            "responded",
        )
        tx.execute(
            f"SELECT {', '.join(keys)} FROM rm_metric_conversations WHERE id = ?",
            (conversation_id,),
        )
        row = tx.fetchone()
        return None if row is None else dict(zip(keys, row, strict=True))

    # -- configuration and presence ----------------------------------------------------
    @handles(Queue.Created)
    def _queue_created(self, tx: Tx, e: Queue.Created, position: int) -> None:
        threshold = default_sl_threshold([Channel(c) for c in e.channels])
        self._threshold(tx, e, position, threshold * 1_000_000)

    @handles(Queue.SettingsChanged)
    def _queue_settings(self, tx: Tx, e: Queue.SettingsChanged, position: int) -> None:
        if "sl_threshold_seconds" in e.changes:
            threshold = int(e.changes["sl_threshold_seconds"]) * 1_000_000
            self._threshold(tx, e, position, threshold)

    def _threshold_at(self, tx: Tx, queue_id: str, position: int) -> int | None:
        """The queue's threshold in force at ``position`` of the log (None: not known yet)."""
        tx.execute(
            "SELECT sl_threshold FROM rm_metric_thresholds WHERE queue_id = ? AND position < ?"
            " ORDER BY position DESC LIMIT 1",
            (queue_id, position),
        )
        row = tx.fetchone()
        return None if row is None else int(row[0])

    def _threshold(self, tx: Tx, e: Any, position: int, threshold: int) -> None:
        """A threshold from ``position`` on; answers already counted after it (they came
        first: another partition) are judged again against it."""
        queue_id = str(e.originator_id)
        tx.execute(
            "INSERT INTO rm_metric_thresholds (queue_id, position, tenant_id, sl_threshold)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (queue_id, position) DO NOTHING",
            (queue_id, position, str(e.tenant_id), threshold),
        )
        tx.execute(
            "SELECT MIN(position) FROM rm_metric_thresholds WHERE queue_id = ? AND position > ?",
            (queue_id, position),
        )
        row = tx.fetchone()
        until = int(row[0]) if row is not None and row[0] is not None else None
        tx.execute(
            "SELECT conversation_id, position, tenant_id, channel, interval_start, wait, within"
            " FROM rm_metric_answers WHERE queue_id = ? AND position > ?"
            + (" AND position < ?" if until is not None else ""),
            (queue_id, position, until) if until is not None else (queue_id, position),
        )
        for conversation, at, tenant, channel, start, wait, within in tx.fetchall():
            now = int(int(wait) <= threshold)
            if now != int(within):
                tx.execute(
                    "UPDATE rm_metric_answers SET within = ?"
                    " WHERE conversation_id = ? AND position = ?",
                    (now, conversation, at),
                )
                self._bump(
                    tx, tenant, queue_id, channel, int(start), answered_in_sl=now - int(within)
                )

    @handles(Agent.Created)
    def _agent_created(self, tx: Tx, e: Agent.Created, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_agent_presence (agent_id, tenant_id, presence, since)"
            " VALUES (?, ?, 'offline', ?) ON CONFLICT (agent_id) DO NOTHING",
            (str(e.originator_id), str(e.tenant_id), micros(e.at)),
        )

    @handles(Agent.PresenceChanged)
    def _presence(self, tx: Tx, e: Agent.PresenceChanged, position: int) -> None:
        tx.execute(
            "UPDATE rm_agent_presence SET presence = ?, since = ? WHERE agent_id = ?",
            (e.presence, micros(e.at), str(e.originator_id)),
        )

    # -- conversations -----------------------------------------------------------------
    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(tx, "rm_metric_conversations", run, ("id", "tenant_id", "channel"))

    @handles(Conversation.Queued)
    def _queued(self, tx: Tx, e: Conversation.Queued, position: int) -> None:
        conversation_id = str(e.originator_id)
        state = self._conversation(tx, conversation_id)
        if state is None:
            return
        at = micros(e.at)
        start = interval_of(at)
        # A transfer while still waiting ends the old offer unanswered but not abandoned;
        # each queue entry is a new offer in the queue it enters.
        self._bump(tx, state["tenant_id"], str(e.queue_id), state["channel"], start, offered=1)
        tx.execute(
            "UPDATE rm_metric_conversations SET queue_id = ?, interval_start = ?,"
            " offered_at = ?, answered_at = NULL, agent_id = NULL WHERE id = ?",
            (str(e.queue_id), start, at, conversation_id),
        )

    @handles(Conversation.Assigned)
    def _assigned(self, tx: Tx, e: Conversation.Assigned, position: int) -> None:
        conversation_id = str(e.originator_id)
        state = self._conversation(tx, conversation_id)
        if state is None:
            return
        if e.agent_id is None:  # taken back from the agent: no longer in progress
            tx.execute(
                "UPDATE rm_metric_conversations SET answered_at = NULL, agent_id = NULL"
                " WHERE id = ?",
                (conversation_id,),
            )
            return
        at = micros(e.at)
        if state["offered_at"] is not None and state["answered_at"] is None:
            wait = max(0, at - int(state["offered_at"]))
            threshold = self._threshold_at(tx, state["queue_id"], position)
            within = int(threshold is not None and wait <= threshold)
            tx.execute(
                "INSERT INTO rm_metric_answers (conversation_id, position, tenant_id, queue_id,"
                " channel, interval_start, wait, within) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (conversation_id, position) DO NOTHING",
                (
                    conversation_id,
                    position,
                    state["tenant_id"],
                    state["queue_id"],
                    state["channel"],
                    int(state["interval_start"]),
                    wait,
                    within,
                ),
            )
            self._bump(
                tx,
                state["tenant_id"],
                state["queue_id"],
                state["channel"],
                int(state["interval_start"]),
                answered=1,
                answer_time=wait,
                answered_in_sl=within,
            )
        tx.execute(
            "UPDATE rm_metric_conversations SET answered_at = ?, agent_id = ? WHERE id = ?",
            (at, str(e.agent_id), conversation_id),
        )

    @handles(Conversation.Abandoned)
    def _abandoned(self, tx: Tx, e: Conversation.Abandoned, position: int) -> None:
        self._offer_ended_unanswered(tx, str(e.originator_id), "abandoned")

    @handles(Conversation.Overflowed)
    def _overflowed(self, tx: Tx, e: Conversation.Overflowed, position: int) -> None:
        """The offer ends unanswered and not abandoned; to another queue, the Queued event
        that follows is a new offer there."""
        self._offer_ended_unanswered(tx, str(e.originator_id), "overflowed")

    def _offer_ended_unanswered(self, tx: Tx, conversation_id: str, counter: str) -> None:
        state = self._conversation(tx, conversation_id)
        if state is None or state["offered_at"] is None or state["answered_at"] is not None:
            return
        self._bump(
            tx,
            state["tenant_id"],
            state["queue_id"],
            state["channel"],
            int(state["interval_start"]),
            **{counter: 1},
        )
        tx.execute(
            "UPDATE rm_metric_conversations SET offered_at = NULL WHERE id = ?", (conversation_id,)
        )

    @handles(Conversation.SlaBreached)
    def _sla_breached(self, tx: Tx, e: Conversation.SlaBreached, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_sla_breaches (conversation_id, kind, started, tenant_id, queue_id,"
            " threshold_seconds, waited_seconds, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (conversation_id, kind, started) DO NOTHING",
            (
                str(e.originator_id),
                e.kind,
                micros(e.started),
                str(e.tenant_id),
                str(e.queue_id),
                e.threshold_seconds,
                e.waited_seconds,
                micros(e.at),
            ),
        )

    @handles_run(Conversation.MessageReceived)
    def _received_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        prefix, source, params = rows_as(
            tx,
            "v",
            (("id", "text"), ("at", "bigint")),
            [(str(e.originator_id), micros(e.occurred_at)) for e, _ in run],
        )
        tx.execute(
            prefix + "UPDATE rm_metric_conversations SET first_inbound_at = v.at"
            f" FROM {source} WHERE rm_metric_conversations.id = v.id"
            " AND rm_metric_conversations.first_inbound_at IS NULL",
            params,
        )

    @handles(Conversation.MessageSent)
    def _sent(self, tx: Tx, e: Conversation.MessageSent, position: int) -> None:
        conversation_id = str(e.originator_id)
        state = self._conversation(tx, conversation_id)
        if state is None or state["responded"] or state["first_inbound_at"] is None:
            return
        at = micros(e.at)
        queue = state["queue_id"] or "-"
        start = (
            int(state["interval_start"])
            if state["interval_start"] is not None
            else interval_of(int(state["first_inbound_at"]))
        )
        self._bump(
            tx,
            state["tenant_id"],
            queue,
            state["channel"],
            start,
            responded=1,
            response_time=max(0, at - int(state["first_inbound_at"])),
        )
        tx.execute(
            "UPDATE rm_metric_conversations SET responded = 1 WHERE id = ?", (conversation_id,)
        )

    @handles_run(Conversation.Resolved, Conversation.Closed)
    def _ended_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """Answered conversations end: their handling counts in their queue's interval,
        and they are no longer being handled. From their rows, in the statements: nothing
        read back (no round trip on PostgreSQL). A run's events have one time."""
        ids, params = one_of(tx, [str(e.originator_id) for e, _ in run])
        at = micros(run[0][0].at)
        tx.execute(
            "INSERT INTO rm_metric_intervals (tenant_id, queue_id, channel, interval_start,"
            " handle_time, handled) SELECT tenant_id, queue_id, channel, interval_start,"
            " SUM(CASE WHEN answered_at < ? THEN ? - answered_at ELSE 0 END), COUNT(*)"
            f" FROM rm_metric_conversations WHERE id {ids} AND answered_at IS NOT NULL"
            " AND queue_id IS NOT NULL AND interval_start IS NOT NULL"
            " GROUP BY tenant_id, queue_id, channel, interval_start"
            " ON CONFLICT (tenant_id, queue_id, channel, interval_start) DO UPDATE SET"
            " handle_time = rm_metric_intervals.handle_time + excluded.handle_time,"
            " handled = rm_metric_intervals.handled + excluded.handled",
            (at, at, *params),
        )
        tx.execute(
            "UPDATE rm_metric_conversations SET answered_at = NULL, agent_id = NULL,"
            f" offered_at = NULL WHERE id {ids} AND answered_at IS NOT NULL",
            params,
        )


# -- queries -------------------------------------------------------------------------------
INTERVAL_KEYS = (
    "queue_id",
    "channel",
    "interval_start",
    "offered",
    "answered",
    "abandoned",
    "overflowed",
    "answered_in_sl",
    "answer_time",
    "handled",
    "handle_time",
    "responded",
    "response_time",
)


def intervals(
    tx: Tx,
    tenant_id: str,
    start: int,
    end: int,
    queue_ids: list[str] | None = None,
    channel: str | None = None,
) -> list[dict[str, Any]]:
    where = ["tenant_id = ?", "interval_start >= ?", "interval_start < ?"]
    params: list[Any] = [tenant_id, start, end]
    if queue_ids is not None:
        if not queue_ids:
            return []
        where.append(f"queue_id IN ({', '.join('?' * len(queue_ids))})")
        params.extend(queue_ids)
    if channel is not None:
        where.append("channel = ?")
        params.append(channel)
    tx.execute(
        f"SELECT {', '.join(INTERVAL_KEYS)} FROM rm_metric_intervals"
        f" WHERE {' AND '.join(where)} ORDER BY interval_start, queue_id, channel",
        params,
    )
    return [dict(zip(INTERVAL_KEYS, row, strict=True)) for row in tx.fetchall()]


def presence_counts(tx: Tx, tenant_id: str) -> dict[str, int]:
    tx.execute(
        "SELECT presence, COUNT(*) FROM rm_agent_presence WHERE tenant_id = ? GROUP BY presence",
        (tenant_id,),
    )
    return {str(p): int(n) for p, n in tx.fetchall()}


def in_progress(tx: Tx, tenant_id: str, queue_ids: list[str] | None = None) -> int:
    where = ["tenant_id = ?", "answered_at IS NOT NULL"]
    params: list[Any] = [tenant_id]
    if queue_ids is not None:
        if not queue_ids:
            return 0
        where.append(f"queue_id IN ({', '.join('?' * len(queue_ids))})")
        params.extend(queue_ids)
    tx.execute(f"SELECT COUNT(*) FROM rm_metric_conversations WHERE {' AND '.join(where)}", params)
    row = tx.fetchone()
    return int(row[0]) if row else 0


BREACH_KEYS = ("conversation_id", "queue_id", "kind", "threshold_seconds", "waited_seconds", "at")


def sla_breaches(
    tx: Tx, tenant_id: str, since: int, queue_ids: list[str] | None = None, limit: int = 20
) -> tuple[int, list[dict[str, Any]]]:
    """How many SLA breaches were recorded since ``since``, and the latest ``limit``."""
    where = ["tenant_id = ?", "at >= ?"]
    params: list[Any] = [tenant_id, since]
    if queue_ids is not None:
        if not queue_ids:
            return 0, []
        where.append(f"queue_id IN ({', '.join('?' * len(queue_ids))})")
        params.extend(queue_ids)
    clause = " AND ".join(where)
    tx.execute(f"SELECT COUNT(*) FROM rm_sla_breaches WHERE {clause}", params)
    row = tx.fetchone()
    tx.execute(
        f"SELECT {', '.join(BREACH_KEYS)} FROM rm_sla_breaches WHERE {clause}"
        f" ORDER BY at DESC, conversation_id LIMIT {int(limit)}",
        params,
    )
    recent = [dict(zip(BREACH_KEYS, r, strict=True)) for r in tx.fetchall()]
    return (int(row[0]) if row else 0), recent
