"""Offers, accepts, declines, expiry, transfers, wrap-up and presence, on both backends."""

from __future__ import annotations

from uuid import UUID

import pytest

from contact_centre.clock import ManualClock
from contact_centre.conversations import Conversation, ConversationStatus
from contact_centre.errors import ConflictError
from contact_centre.interaction import Channel
from contact_centre.staff import AgentPresence
from infra.config import Settings
from infra.runtime import build
from tests.routing.support import Desk


def test_new_work_is_offered_to_the_longest_idle_eligible_agent(desk: Desk) -> None:
    billing = desk.queue("Billing", [Channel.WEBCHAT], required_skills=["billing:2"])
    desk.at(0)
    novice = desk.agent("Novice", ["billing:1"])
    desk.at(10)
    first = desk.agent("First", ["billing:3"])
    desk.at(20)
    second = desk.agent("Second", ["billing:2"])
    desk.at(30)
    chat = desk.arrive(Channel.WEBCHAT)
    assert desk.conversation(chat).queue_id == billing
    assert desk.tick() == 1
    assert desk.offered_to(chat) == first  # idle since 10 s; the novice lacks the level
    assert novice != first
    other = desk.arrive(Channel.WEBCHAT)
    desk.tick()
    assert desk.offered_to(other) == second  # first now has work: second is longest idle


def test_accept_assigns_and_counts_against_capacity(desk: Desk) -> None:
    desk.queue("Voice", [Channel.VOICE])
    agent = desk.agent("Ann", capacity={"voice": 1})
    call = desk.arrive(Channel.VOICE)
    desk.tick()
    assert desk.offered_to(call) == agent
    desk.do(lambda u: desk.app.accept_in(u, desk.tenant, call, agent))
    conversation = desk.conversation(call)
    assert conversation.assignee_id == agent
    assert conversation.waiting_since is None
    second = desk.arrive(Channel.VOICE)
    desk.tick()
    assert desk.offered_to(second) is None  # voice capacity 1 is used
    desk.do(lambda u: desk.app.wrap_up_in(u, desk.tenant, call, agent, "sale", resolve=True))
    assert desk.conversation(call).disposition == "sale"
    assert desk.conversation(call).status is ConversationStatus.RESOLVED
    desk.tick()
    assert desk.offered_to(second) == agent


def test_an_expired_offer_moves_to_the_next_agent(desk: Desk) -> None:
    desk.queue("Chat", [Channel.WEBCHAT], offer_timeout_seconds=15)
    desk.at(0)
    slow = desk.agent("Slow")
    desk.at(5)
    quick = desk.agent("Quick")
    desk.at(10)
    chat = desk.arrive(Channel.WEBCHAT)
    desk.tick()
    assert desk.offered_to(chat) == slow
    desk.at(24)
    desk.tick()
    assert desk.offered_to(chat) == slow  # not yet expired
    desk.at(25)
    desk.tick()
    assert desk.offered_to(chat) == quick
    assert desk.agent_state(slow).work == {}
    assert desk.rt.routing is not None
    declines = desk.rt.routing.state.agents[slow].declines
    assert [(c, r) for c, r, _ in declines] == [(chat, "expired")]


def test_a_decline_moves_on_and_the_decliner_is_passed_over(desk: Desk) -> None:
    desk.queue("Chat", [Channel.WEBCHAT])
    desk.at(0)
    ann = desk.agent("Ann")
    desk.at(1)
    bob = desk.agent("Bob")
    desk.at(2)
    chat = desk.arrive()
    desk.tick()
    assert desk.offered_to(chat) == ann
    desk.do(lambda u: desk.app.end_offer_in(u, desk.tenant, chat, ann, "declined"))
    desk.tick()
    assert desk.offered_to(chat) == bob
    desk.do(lambda u: desk.app.end_offer_in(u, desk.tenant, chat, bob, "declined"))
    desk.tick()
    assert desk.offered_to(chat) is None  # both declined it lately
    desk.later(31)
    desk.tick()
    assert desk.offered_to(chat) in (ann, bob)


def test_work_is_taken_highest_priority_first_then_longest_waiting(desk: Desk) -> None:
    low = desk.queue("Low", [Channel.SMS], priority=10)
    high = desk.queue("High", [Channel.EMAIL], priority=50)
    desk.at(0)
    old_low = desk.arrive(Channel.SMS)
    desk.at(5)
    new_high = desk.arrive(Channel.EMAIL)
    desk.at(6)
    older_high = desk.arrive(Channel.EMAIL)  # same priority, arrived later
    assert desk.conversation(new_high).queue_id == high
    assert desk.conversation(old_low).queue_id == low
    desk.at(10)
    agent = desk.agent("Solo", capacity={"sms": 1, "email": 1})
    desk.tick()
    assert desk.offered_to(new_high) == agent
    assert desk.offered_to(older_high) is None
    assert desk.offered_to(old_low) == agent  # another channel, its own capacity


def test_an_agent_going_offline_returns_its_work_at_the_original_wait(desk: Desk) -> None:
    queue = desk.queue("Chat", [Channel.WEBCHAT])
    desk.at(0)
    ann = desk.agent("Ann")
    desk.at(10)
    chat = desk.arrive()
    desk.tick()
    desk.at(12)
    desk.do(lambda u: desk.app.accept_in(u, desk.tenant, chat, ann))
    desk.at(20)
    other = desk.arrive()
    desk.tick()
    assert desk.offered_to(other) == ann
    desk.at(60)
    desk.presence(ann, AgentPresence.OFFLINE)
    held = desk.conversation(chat)
    assert held.assignee_id is None
    assert held.queue_id == queue
    assert held.waiting_since == desk.conversation(chat).queued_since
    assert held.waiting_since is not None
    assert (held.waiting_since - desk.now).total_seconds() == -50  # since 10 s, not 60 s
    assert desk.offered_to(other) is None
    assert desk.agent_state(ann).work == {}


def test_transfer_to_a_queue_and_to_an_agent_with_a_note(desk: Desk) -> None:
    chat_queue = desk.queue("Chat", [Channel.WEBCHAT])
    billing = desk.queue("Billing", required_skills=["billing"])
    ann = desk.agent("Ann")
    bob = desk.agent("Bob", ["billing"])
    chat = desk.arrive()
    desk.tick()
    owner = desk.offered_to(chat)
    assert owner is not None
    desk.do(lambda u: desk.app.accept_in(u, desk.tenant, chat, owner))
    desk.do(
        lambda u: desk.app.transfer_in(
            u, desk.tenant, chat, f"agent:{owner}", billing, None, "wants a refund"
        )
    )
    moved = desk.conversation(chat)
    assert (moved.queue_id, moved.assignee_id) == (billing, None)
    assert desk.agent_state(owner).work == {}
    desk.tick()
    assert desk.offered_to(chat) == bob  # only bob has the billing skill
    desk.do(lambda u: desk.app.accept_in(u, desk.tenant, chat, bob))
    desk.do(lambda u: desk.app.transfer_in(u, desk.tenant, chat, f"agent:{bob}", None, ann, None))
    assert desk.offered_to(chat) == ann
    assert desk.conversation(chat).queue_id == billing
    assert chat_queue != billing


def test_offers_refuse_a_second_agent_and_over_capacity(desk: Desk) -> None:
    desk.queue("Voice", [Channel.VOICE])
    ann = desk.agent("Ann", capacity={"voice": 1})
    bob = desk.agent("Bob", capacity={"voice": 1})
    call = desk.arrive(Channel.VOICE)
    other = desk.arrive(Channel.VOICE)
    desk.do(lambda u: desk.app.offer_in(u, desk.tenant, call, ann))
    with pytest.raises(ConflictError):
        desk.do(lambda u: desk.app.offer_in(u, desk.tenant, call, bob))
    with pytest.raises(ConflictError):
        desk.do(lambda u: desk.app.offer_in(u, desk.tenant, other, ann))
    with pytest.raises(ConflictError):
        desk.do(lambda u: desk.app.assign_in(u, desk.tenant, other, ann, "token:x"))
    assert desk.offered_to(call) == ann


def _ids(*values: UUID) -> list[str]:
    return sorted(str(v) for v in values)


def test_the_routing_state_and_its_timers_survive_a_restart(
    desk: Desk, settings: Settings, manual: ManualClock
) -> None:
    desk.queue("Chat", [Channel.WEBCHAT], sl_threshold_seconds=60)
    ann = desk.agent("Ann")
    desk.at(0)
    chat = desk.arrive()
    desk.tick()
    assert desk.offered_to(chat) == ann
    assert desk.rt.routing is not None
    before = desk.rt.routing.state.snapshot()
    desk.rt.close()

    restarted = build(settings, clock=manual)
    try:
        again = Desk(restarted, manual, desk.tenant)
        restarted.catch_up()
        assert restarted.routing is not None
        assert restarted.routing.state.snapshot() == before
        again.at(21)  # the offer made before the restart expires after it
        again.tick()
        assert again.offered_to(chat) is None
        assert again.agent_state(ann).work == {}
        again.at(61)  # and the SLA timer started before it runs out after it
        again.tick()
        breaches = [
            e
            for e in restarted.app.repository.event_store.get(chat)
            if isinstance(e, Conversation.SlaBreached)
        ]
        assert [(b.kind, b.waited_seconds) for b in breaches] == [("answer", 61)]
    finally:
        restarted.close()


def test_a_closed_queue_overflows_to_voicemail(desk: Desk) -> None:
    hours = {"timezone": "Europe/Oslo", "weekly": {"mon": [["08:00", "09:30"]]}}
    desk.queue(
        "Phones",
        [Channel.VOICE],
        business_hours=hours,
        overflow={"target": "voicemail"},
    )
    desk.at(0)  # Monday 09:00 UTC is 10:00 in Oslo: closed since 09:30
    call = desk.arrive(Channel.VOICE)
    desk.tick()
    conversation = desk.conversation(call)
    assert conversation.waiting_since is None
    overflowed = [
        e
        for e in desk.app.repository.event_store.get(call)
        if isinstance(e, Conversation.Overflowed)
    ]
    assert [(e.target, e.reason) for e in overflowed] == [("voicemail", "closed")]


def test_an_open_queue_keeps_its_work(desk: Desk) -> None:
    hours = {"timezone": "Europe/Oslo", "weekly": {"mon": [["08:00", "16:00"]]}}
    desk.queue("Phones", [Channel.VOICE], business_hours=hours, overflow={"target": "callback"})
    desk.at(0)
    call = desk.arrive(Channel.VOICE)
    desk.tick()
    assert desk.conversation(call).waiting_since is not None


def test_a_customer_reopening_goes_back_to_the_agent_with_room(desk: Desk) -> None:
    desk.queue("Texts", [Channel.SMS])
    ann = desk.agent("Ann")
    text = desk.arrive(Channel.SMS, sender="+447700900321")
    desk.tick()
    desk.do(lambda u: desk.app.accept_in(u, desk.tenant, text, ann))
    desk.do(
        lambda u: desk.app.change_status_in(
            u, desk.tenant, text, ConversationStatus.RESOLVED, f"agent:{ann}"
        )
    )
    assert desk.agent_state(ann).work == {}
    again = desk.arrive(Channel.SMS, "one more thing", sender="+447700900321")
    assert again == text
    assert desk.conversation(text).assignee_id == ann
    assert text in desk.agent_state(ann).work
    desk.presence(ann, AgentPresence.OFFLINE)
    desk.do(
        lambda u: desk.app.change_status_in(
            u, desk.tenant, text, ConversationStatus.RESOLVED, f"agent:{ann}"
        )
    )
    desk.arrive(Channel.SMS, "hello?", sender="+447700900321")
    assert desk.conversation(text).assignee_id is None  # its agent left: the queue has it
    assert desk.conversation(text).waiting_since is not None
