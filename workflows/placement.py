"""Placement: new work waits in the queue the tenant's routing rules choose.

A new conversation is queued by the first routing rule that matches it (channel,
recipient address, keywords of the first message, contact attributes unless the contact
is restricted), else in the rules' default queue. A tenant with no rules keeps the
default behaviour: the highest-priority queue that serves the channel (a queue with no
channel filter serves every channel; ties go to the oldest queue).

A conversation its customer reopens goes back to its agent when that agent still has
room for it, else back to its queue. The policy also frees an agent's slot when a
conversation it held ended by a path that did not free it (e.g. an erasure).
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation
from contact_centre.errors import ConflictError
from contact_centre.staff import Agent, AgentPresence
from projections.base import loads
from workflows.base import Policy, reacts_to


class QueueFinder:
    """Reads the directory read model for the queue that serves a channel."""

    def __init__(self, fetch: Any) -> None:
        self._fetch = fetch  # runs one read statement (Database.fetch)

    def queue_for(self, uow: UnitOfWork, tenant_id: UUID, channel: str) -> UUID | None:
        """Read once per unit of work and tenant: a policy's batch of new conversations
        asks for each of them."""
        key = ("rm_queues", tenant_id)
        rows = uow.memo.get(key)
        if rows is None:
            rows = uow.memo[key] = self._fetch(
                "SELECT id, channels, settings FROM rm_queues WHERE tenant_id = ?"
                " ORDER BY created_at, id",
                (str(tenant_id),),
            )
        best: tuple[int, UUID] | None = None
        for queue_id, channels, settings in rows:
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
        chosen = uow.app.route_by_rules_in(uow, e.tenant_id, e.originator_id)
        if chosen is not None:
            queue_id, priority = chosen
            uow.app.queue_conversation_in(
                uow, e.tenant_id, e.originator_id, queue_id, priority, "new"
            )
            return
        found = self.finder.queue_for(uow, e.tenant_id, e.channel)
        if found is not None:
            uow.app.queue_conversation_in(uow, e.tenant_id, e.originator_id, found, None, "new")

    @reacts_to(Conversation.Reopened)
    def _reopened(self, uow: UnitOfWork, e: Conversation.Reopened, position: int) -> None:
        conversation = uow.get(e.originator_id, Conversation, e.tenant_id)
        if e.reason != "customer_replied":
            return
        if conversation.assignee_id is not None:
            agent = uow.get(conversation.assignee_id, Agent, e.tenant_id)
            if agent.presence is not AgentPresence.OFFLINE and not agent.erased:
                try:
                    agent.take_work(e.originator_id, conversation.channel.value, uow.now)
                    return
                except ConflictError:
                    pass  # no room: back to the queue
            elif conversation.id in agent.work:
                return
        queue_id = conversation.queue_id or self.finder.queue_for(
            uow, e.tenant_id, conversation.channel.value
        )
        if queue_id is not None:
            uow.app.queue_conversation_in(
                uow, e.tenant_id, e.originator_id, queue_id, None, "reopened"
            )

    @reacts_to(Conversation.Resolved, Conversation.Closed)
    def _ended(self, uow: UnitOfWork, e: Any, position: int) -> None:
        conversation = uow.get(e.originator_id, Conversation, e.tenant_id)
        if conversation.assignee_id is not None:
            uow.app.release_finished_in(
                uow, e.tenant_id, e.originator_id, conversation.assignee_id, "resolved"
            )
