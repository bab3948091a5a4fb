"""Webchat blocklist: an admin blocks an abusive visitor by IP address or visitor cookie."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.errors import ConflictError
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate


class BlockKind(StrEnum):
    IP = "ip"
    VISITOR = "visitor"  # the visitor cookie (visitor id)


class VisitorBlock(TenantAggregate):
    """``value`` (the IP or cookie) is sealed under the block's visitor-network scope;
    the webchat finds blocks through a keyed hash, never the value in clear."""

    class Created(TenantAggregate.Created):
        kind: str
        value: Sealed
        reason: str
        by: str
        at: datetime

    def __init__(
        self, tenant_id: UUID, kind: str, value: Sealed, reason: str, by: str, at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.kind = BlockKind(kind)
        self.value = value
        self.reason = reason
        self.by = by
        self.created_at = at
        self.lifted_at: datetime | None = None

    @classmethod
    def create(
        cls,
        block_id: UUID,
        tenant_id: UUID,
        kind: BlockKind,
        value: Sealed,
        reason: str,
        by: str,
        at: datetime,
    ) -> VisitorBlock:
        return cls._create(
            cls.Created,
            id=block_id,
            tenant_id=tenant_id,
            kind=kind.value,
            value=value,
            reason=reason,
            by=by,
            at=at,
        )

    class Lifted(TenantAggregate.Event):
        by: str
        at: datetime

    def lift(self, by: str, at: datetime) -> None:
        if self.lifted_at is not None:
            raise ConflictError("the block was already lifted")
        self._lifted(by=by, at=at)

    @event(Lifted)
    def _lifted(self, by: str, at: datetime) -> None:
        self.lifted_at = at
