"""Delivery state of outbound replies: what the API shows beside each reply, and what the
delivery workflow's ticker finds due."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from contact_centre.deliveries import Delivery, DeliveryStatus
from projections.base import Projection, Tx, handles, micros


class DeliveriesProjection(Projection):
    name = "deliveries"
    tables = ("rm_deliveries",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_deliveries ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, conversation_id TEXT NOT NULL,"
        " message_id TEXT NOT NULL, channel TEXT NOT NULL, provider TEXT NOT NULL,"
        " status TEXT NOT NULL, provider_status TEXT, error_code TEXT,"
        " attempts INTEGER NOT NULL, due_at BIGINT, requested_at BIGINT NOT NULL,"
        " updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_deliveries_due ON rm_deliveries (status, due_at)",
        "CREATE INDEX IF NOT EXISTS rm_deliveries_conversation ON rm_deliveries (conversation_id)",
        # A conversation's page shows each reply's delivery: found by message, not by
        # reading every delivery of every tenant.
        "CREATE INDEX IF NOT EXISTS rm_deliveries_message ON rm_deliveries (message_id)",
    )
    query_indexes = ("rm_deliveries_message",)

    @handles(Delivery.Requested)
    def _requested(self, tx: Tx, e: Delivery.Requested, position: int) -> None:
        at = micros(e.at)
        tx.execute(
            "INSERT INTO rm_deliveries (id, tenant_id, conversation_id, message_id, channel,"
            " provider, status, provider_status, error_code, attempts, due_at, requested_at,"
            " updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, NULL, NULL, 0, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                str(e.conversation_id),
                str(e.message_id),
                e.channel,
                e.provider,
                DeliveryStatus.PENDING.value,
                at,
                at,
                at,
            ),
        )

    @handles(Delivery.AttemptStarted)
    def _started(self, tx: Tx, e: Delivery.AttemptStarted, position: int) -> None:
        tx.execute(
            "UPDATE rm_deliveries SET status = ?, attempts = ?, due_at = NULL, updated_at = ?"
            " WHERE id = ?",
            (DeliveryStatus.SENDING.value, e.attempt, micros(e.at), str(e.originator_id)),
        )

    @handles(Delivery.Accepted)
    def _accepted(self, tx: Tx, e: Delivery.Accepted, position: int) -> None:
        tx.execute(
            "UPDATE rm_deliveries SET status = ?, provider_status = ?, updated_at = ? WHERE id = ?",
            (DeliveryStatus.SENT.value, e.provider_status, micros(e.at), str(e.originator_id)),
        )

    @handles(Delivery.AttemptFailed)
    def _failed(self, tx: Tx, e: Delivery.AttemptFailed, position: int) -> None:
        retry = e.retry_at is not None
        tx.execute(
            "UPDATE rm_deliveries SET status = ?, error_code = ?, due_at = ?, updated_at = ?"
            " WHERE id = ?",
            (
                DeliveryStatus.PENDING.value if retry else DeliveryStatus.FAILED.value,
                e.error_code,
                micros(e.retry_at) if e.retry_at is not None else None,
                micros(e.at),
                str(e.originator_id),
            ),
        )

    @handles(Delivery.StatusReported)
    def _reported(self, tx: Tx, e: Delivery.StatusReported, position: int) -> None:
        tx.execute(
            "UPDATE rm_deliveries SET status = ?, provider_status = ?,"
            " error_code = COALESCE(?, error_code), due_at = NULL, updated_at = ? WHERE id = ?",
            (e.status, e.provider_status, e.error_code, micros(e.at), str(e.originator_id)),
        )


_KEYS = (
    "id",
    "message_id",
    "channel",
    "provider",
    "status",
    "provider_status",
    "error_code",
    "attempts",
    "updated_at",
)


def due(tx: Tx, now_micros: int, limit: int = 50) -> list[str]:
    """Ids of deliveries waiting for an attempt whose time has come, oldest first."""
    tx.execute(
        "SELECT id FROM rm_deliveries WHERE status = ? AND due_at <= ? ORDER BY due_at LIMIT ?",
        (DeliveryStatus.PENDING.value, now_micros, limit),
    )
    return [str(row[0]) for row in tx.fetchall()]


def for_messages(tx: Tx, tenant_id: str, message_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Delivery rows by message id."""
    if not message_ids:
        return {}
    marks = ", ".join("?" * len(message_ids))
    tx.execute(
        f"SELECT {', '.join(_KEYS)} FROM rm_deliveries"
        f" WHERE tenant_id = ? AND message_id IN ({marks})",
        (tenant_id, *message_ids),
    )
    rows = [dict(zip(_KEYS, row, strict=True)) for row in tx.fetchall()]
    return {str(r["message_id"]): r for r in rows}
