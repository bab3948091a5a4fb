"""Default placement: new work waits in the tenant's queue for its channel.

This is the simple rule that holds until routing rules are configured (the routing
workflow replaces it): a new conversation, or one its customer reopens while nobody has
it, is queued in the tenant's highest-priority queue that serves its channel (a queue
with no channel filter serves every channel; ties go to the oldest queue).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation
from projections.base import Tx, loads
from workflows.base import Policy, reacts_to


class QueueFinder:
    """Reads the directory read model for the queue that serves a channel."""

    def __init__(self, read: Any) -> None:
        self._read = read  # a callable opening a read transaction (Database.read)

    def queue_for(self, tenant_id: UUID, channel: str) -> UUID | None:
        with self._read() as tx:
            return _first_queue(tx, str(tenant_id), channel)


def _first_queue(tx: Tx, tenant_id: str, channel: str) -> UUID | None:
    tx.execute(
        "SELECT id, channels, settings FROM rm_queues WHERE tenant_id = ? ORDER BY created_at, id",
        (tenant_id,),
    )
    best: tuple[int, UUID] | None = None
    for queue_id, channels, settings in tx.fetchall():
        served = loads(channels)
        if served and channel not in served:
            continue
        priority = int(loads(settings).get("priority", 0))
        if best is None or priority > best[0]:
            best = (priority, UUID(str(queue_id)))
    return None if best is None else best[1]


class DefaultPlacement(Policy):
    name = "placement"

    def __init__(self, finder: QueueFinder) -> None:
        self.finder = finder

    @reacts_to(Conversation.Opened)
    def _opened(self, uow: UnitOfWork, e: Conversation.Opened, position: int) -> None:
        queue_id = self.finder.queue_for(e.tenant_id, e.channel)
        if queue_id is not None:
            uow.app.queue_conversation_in(uow, e.tenant_id, e.originator_id, queue_id, None, "new")

    @reacts_to(Conversation.Reopened)
    def _reopened(self, uow: UnitOfWork, e: Conversation.Reopened, position: int) -> None:
        conversation = uow.get(e.originator_id, Conversation, e.tenant_id)
        if e.reason != "customer_replied" or conversation.assignee_id is not None:
            return
        queue_id = conversation.queue_id or self.finder.queue_for(
            e.tenant_id, conversation.channel.value
        )
        if queue_id is not None:
            uow.app.queue_conversation_in(
                uow, e.tenant_id, e.originator_id, queue_id, None, "reopened"
            )
