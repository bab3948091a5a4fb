"""The routing invariants, checked against the aggregates and the event log."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import Any
from uuid import UUID

from contact_centre.application import ContactCentre
from contact_centre.conversations import Conversation
from contact_centre.staff import Agent
from workflows.routing_state import DECLINE_COOLDOWN, RoutingState


def log_events(app: ContactCentre) -> list[Any]:
    notifications = app.recorder.select_notifications(start=0, limit=1_000_000)
    return [app.mapper.to_domain_event(n) for n in notifications]


def check_log(events: list[Any]) -> None:
    """Replaying the log: no conversation is ever under offer to two agents at once, and
    no agent ever holds more of a channel than its capacity at that moment."""
    open_offer: dict[UUID, UUID | None] = {}
    capacity: dict[UUID, dict[str, int]] = {}
    held: dict[UUID, dict[UUID, str]] = defaultdict(dict)
    for e in events:
        kind = type(e)
        if kind is Conversation.Offered:
            assert open_offer.get(e.originator_id) is None, "offered to a second agent"
            open_offer[e.originator_id] = e.agent_id
        elif kind in (
            Conversation.OfferDeclined,
            Conversation.Assigned,
            Conversation.Queued,
            Conversation.Abandoned,
            Conversation.Resolved,
            Conversation.Closed,
            Conversation.Overflowed,
        ):
            open_offer[e.originator_id] = None
        elif kind is Agent.Created:
            capacity[e.originator_id] = {}
        elif kind is Agent.CapacityChanged:
            capacity[e.originator_id] = dict(e.capacity)
        elif kind in (Agent.WorkOffered, Agent.WorkTaken):
            held[e.originator_id][e.conversation_id] = e.channel
            limit = capacity.get(e.originator_id) or {}
            from contact_centre.staff import DEFAULT_CAPACITY

            allowed = limit.get(e.channel, DEFAULT_CAPACITY.get(e.channel, 0))
            load = sum(1 for c in held[e.originator_id].values() if c == e.channel)
            assert load <= allowed, f"agent over capacity on {e.channel}: {load} > {allowed}"
        elif kind is Agent.WorkReleased:
            held[e.originator_id].pop(e.conversation_id, None)


def check_aggregates(app: ContactCentre, agent_ids: list[UUID]) -> None:
    """Now: each agent's offers match the conversations' and capacity holds."""
    offered: dict[UUID, UUID] = {}
    for agent_id in agent_ids:
        agent: Agent = app.repository.get(agent_id)
        for channel, limit in agent.capacity.items():
            assert agent.load(channel) <= limit
        for conversation_id in agent.offered:
            assert conversation_id not in offered, "one conversation, two open offers"
            offered[conversation_id] = agent_id
            conversation: Conversation = app.repository.get(conversation_id)
            assert conversation.offered_to == agent_id


def check_not_starved(state: RoutingState, now: datetime) -> None:
    """After the router ran: no work waits unoffered while an eligible agent is idle
    with room (an agent who declined that work within the cool-down is not eligible)."""
    for work in state.work.values():
        if not work.waiting or work.offered_to is not None:
            continue
        idle = [
            a
            for a in state.eligible_idle(work)
            if not (a.id in work.declined_by and work.declined_by[a.id] + DECLINE_COOLDOWN > now)
        ]
        assert not idle, f"{work.id} waits while {[str(a.id) for a in idle]} are free"


def rebuilt(events: list[Any]) -> dict[str, Any]:
    state = RoutingState()
    state.apply_all(events)
    return state.snapshot()


def assert_same(expected: Any, actual: Any, path: str = "") -> None:
    """Equal, or an assertion naming the first place where they differ."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        assert set(expected) == set(actual), f"{path}: keys {set(expected) ^ set(actual)}"
        for key in expected:
            assert_same(expected[key], actual[key], f"{path}/{key}")
        return
    assert expected == actual, f"{path}: {expected!r} != {actual!r}"
