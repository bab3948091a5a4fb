"""Live pushes for agents and supervisors, fed by the routing state.

The routing feed calls :meth:`LiveHub.on_events` after applying each batch of events (in
the feed's thread, under its lock); the hub turns them into the JSON messages each open
socket may see and hands them to that socket's event loop. Message shapes are in
docs/routing.md. Pushes carry ids, states and times, never message bodies or names: a
client fetches a conversation through the (audited) HTTP API.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from contact_centre.conversations import Conversation
from contact_centre.staff import Agent
from workflows.routing_state import AgentView, QueueView, RoutingState

log = logging.getLogger(__name__)

INBOX_EVENTS: dict[type[Any], str] = {
    Conversation.Queued: "queued",
    Conversation.Assigned: "assigned",
    Conversation.Abandoned: "abandoned",
    Conversation.Resolved: "resolved",
    Conversation.Closed: "closed",
    Conversation.Reopened: "reopened",
    Conversation.MarkedPending: "pending",
    Conversation.Transferred: "transferred",
    Conversation.Overflowed: "overflowed",
    Conversation.WrappedUp: "wrapped_up",
}
MESSAGE_EVENTS: dict[type[Any], str] = {
    Conversation.MessageReceived: "inbound",
    Conversation.MessageSent: "outbound",
}
AGENT_EVENTS = (
    Agent.PresenceChanged,
    Agent.CapacityChanged,
    Agent.SkillsChanged,
    Agent.WorkOffered,
    Agent.WorkTaken,
    Agent.WorkReleased,
    Agent.Erased,
)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat().replace("+00:00", "Z")


@dataclass(eq=False)
class Connection:
    """One open socket: whose it is, and where its messages go."""

    tenant_id: UUID
    agent_id: UUID | None  # None: a supervisor's (or admin's) socket
    loop: asyncio.AbstractEventLoop
    # (the routing feed's position when it was made, the loop's time when it was queued,
    # message); None: closing
    queue: asyncio.Queue[tuple[int, float, dict[str, Any]] | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=1000)
    )
    dropped: bool = False

    def send(self, messages: list[dict[str, Any]], position: int) -> None:
        self.loop.call_soon_threadsafe(self._put, messages, position)

    def _put(self, messages: list[dict[str, Any]], position: int) -> None:
        now = self.loop.time()
        for message in messages:
            try:
                self.queue.put_nowait((position, now, message))
            except asyncio.QueueFull:
                # a client that does not read: close it rather than buffer without end
                self.dropped = True
                with contextlib.suppress(asyncio.QueueEmpty):
                    self.queue.get_nowait()
                self.queue.put_nowait(None)
                return


class LiveHub:
    def __init__(self) -> None:
        self._connections: set[Connection] = set()
        self.pushed = 0
        # where the routing feed has got in the log: each push is stamped with it, so a
        # socket can hold it until the read models show as much (the projector process)
        self.position: Callable[[], int] = lambda: 0

    @property
    def connections(self) -> int:
        return len(self._connections)

    def add(self, connection: Connection) -> None:
        self._connections.add(connection)

    def remove(self, connection: Connection) -> None:
        self._connections.discard(connection)

    # -- snapshots (on connect) -------------------------------------------------------------
    def agent_hello(self, state: RoutingState, tenant_id: UUID, agent_id: UUID) -> dict[str, Any]:
        agent = state.agents.get(agent_id)
        offers = [
            offer_message(w.id, w.channel, w.queue_id, w.offer_expires_at)
            for w in state.work.values()
            if w.tenant_id == tenant_id and w.offered_to == agent_id
        ]
        return {
            "type": "hello",
            "agent_id": str(agent_id),
            "queues": sorted(str(q) for q in agent.queues) if agent else [],
            "agent": agent_message(agent, state) if agent else None,
            "offers": offers,
        }

    def supervisor_hello(self, state: RoutingState, tenant_id: UUID) -> dict[str, Any]:
        queues = [q for q in state.queues.values() if q.tenant_id == tenant_id]
        agents = [a for a in state.agents.values() if a.tenant_id == tenant_id]
        return {
            "type": "hello",
            "queues": [queue_message(q, state) for q in sorted(queues, key=lambda q: q.name)],
            "agents": [agent_message(a, state) for a in sorted(agents, key=lambda a: str(a.id))],
        }

    # -- after each batch of events ----------------------------------------------------------
    def on_events(self, events: Sequence[Any], state: RoutingState) -> None:
        changed_agents, changed_queues = set(state.changed_agents), set(state.changed_queues)
        state.changed_agents.clear()
        state.changed_queues.clear()
        if not self._connections:
            return
        at = self.position()
        supervisor: dict[UUID, list[dict[str, Any]]] = {}
        for queue_id in changed_queues:
            queue = state.queues.get(queue_id)
            if queue is not None:
                supervisor.setdefault(queue.tenant_id, []).append(queue_message(queue, state))
        for agent_id in changed_agents:
            agent = state.agents.get(agent_id)
            if agent is not None:
                supervisor.setdefault(agent.tenant_id, []).append(agent_message(agent, state))
        for e in events:
            if isinstance(e, Conversation.SlaBreached):
                supervisor.setdefault(e.tenant_id, []).append(
                    {
                        "type": "sla_breach",
                        "conversation_id": str(e.originator_id),
                        "queue_id": str(e.queue_id),
                        "kind": e.kind,
                        "threshold_seconds": e.threshold_seconds,
                        "waited_seconds": e.waited_seconds,
                        "at": iso(e.at),
                    }
                )
        for connection in list(self._connections):
            if connection.agent_id is None:
                messages = supervisor.get(connection.tenant_id, [])
            else:
                messages = self._for_agent(connection, events, state)
            if messages:
                self.pushed += len(messages)
                connection.send(messages, at)

    def _for_agent(
        self, connection: Connection, events: Sequence[Any], state: RoutingState
    ) -> list[dict[str, Any]]:
        me = connection.agent_id
        agent = state.agents.get(me) if me is not None else None
        mine = agent.queues if agent is not None else set()
        messages: list[dict[str, Any]] = []
        for e in events:
            if getattr(e, "tenant_id", None) != connection.tenant_id:
                continue
            kind = type(e)
            if kind is Conversation.Offered and e.agent_id == me:
                work = state.work.get(e.originator_id)
                messages.append(
                    offer_message(
                        e.originator_id,
                        work.channel if work else None,
                        work.queue_id if work else None,
                        e.expires_at,
                    )
                )
                continue
            if kind is Conversation.OfferDeclined and e.agent_id == me:
                messages.append(
                    {
                        "type": "offer_ended",
                        "conversation_id": str(e.originator_id),
                        "reason": e.reason,
                    }
                )
                continue
            work = state.work.get(e.originator_id) or state.retired.get(e.originator_id)
            if work is None:
                continue
            if kind in MESSAGE_EVENTS and work.assignee_id == me:
                messages.append(
                    {
                        "type": "message",
                        "conversation_id": str(work.id),
                        "message_id": str(e.message_id),
                        "direction": MESSAGE_EVENTS[kind],
                        "at": iso(e.at),
                    }
                )
            elif kind in INBOX_EVENTS and (
                work.assignee_id == me
                or getattr(e, "agent_id", None) == me
                or (work.queue_id is not None and work.queue_id in mine)
            ):
                messages.append(
                    {
                        "type": "inbox",
                        "conversation_id": str(work.id),
                        "change": INBOX_EVENTS[kind],
                        "channel": work.channel,
                        "queue_id": str(work.queue_id) if work.queue_id else None,
                        "assignee_id": str(work.assignee_id) if work.assignee_id else None,
                        "waiting_since": iso(work.waiting_since),
                        "at": iso(e.at),
                    }
                )
        return messages


def offer_message(
    conversation_id: UUID, channel: str | None, queue_id: UUID | None, expires_at: datetime | None
) -> dict[str, Any]:
    return {
        "type": "offer",
        "conversation_id": str(conversation_id),
        "channel": channel,
        "queue_id": str(queue_id) if queue_id else None,
        "expires_at": iso(expires_at),
    }


def queue_message(queue: QueueView, state: RoutingState) -> dict[str, Any]:
    waiting = state.waiting_in(queue.id)
    counts: dict[str, int] = {}
    for work in waiting:
        counts[work.channel] = counts.get(work.channel, 0) + 1
    return {
        "type": "queue",
        "queue_id": str(queue.id),
        "name": queue.name,
        "waiting": len(waiting),
        "offered": sum(1 for w in waiting if w.offered_to is not None),
        "counts_by_channel": counts,
        "oldest_waiting_since": iso(
            min((w.waiting_since for w in waiting if w.waiting_since), default=None)
        ),
    }


def agent_message(agent: AgentView, state: RoutingState) -> dict[str, Any]:
    load: dict[str, int] = {}
    for channel in agent.work.values():
        load[channel] = load.get(channel, 0) + 1
    return {
        "type": "agent",
        "agent_id": str(agent.id),
        "presence": agent.presence,
        "reason": agent.presence_reason,
        "capacity": dict(sorted(agent.capacity.items())),
        "load": load,
        "offers": sorted(
            str(w) for w in agent.work if (v := state.work.get(w)) and v.offered_to == agent.id
        ),
        "idle_since": iso(agent.idle_since),
        "recent_declines": [
            {"conversation_id": str(c), "reason": r, "at": iso(t)} for c, r, t in agent.declines
        ],
    }
