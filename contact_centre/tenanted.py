"""The base of every aggregate that belongs to one tenant."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate


class TenantAggregate(Aggregate):
    """Every event of a tenant's aggregate carries the tenant id.

    So the event bus can key every event by tenant, and read models, webhooks and the
    retention ledger never need a lookup to know whose data an event is.
    """

    tenant_id: UUID

    class Event(Aggregate.Event):
        tenant_id: UUID

    class Created(Aggregate.Created):
        tenant_id: UUID

    def trigger_event(self, event_class: type[Any], **kwargs: Any) -> None:
        if "tenant_id" not in kwargs:
            kwargs["tenant_id"] = self.tenant_id
        super().trigger_event(event_class, **kwargs)
