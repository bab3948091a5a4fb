"""A morning on the desk: arrivals on several channels, routing rules, agents changing
presence, accepts, declines, timeouts, transfers, overflow and SLA breaches, with every
offer checked against the rules; the breach alert reaches the local Slack stand-in."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import pytest

from contact_centre.channel_settings import Provider
from contact_centre.clock import ManualClock
from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel
from contact_centre.staff import AgentPresence
from infra.config import Settings
from infra.runtime import Runtime, build
from projections import metrics
from projections.base import micros
from tests.channels.fakes import FakeClouds
from tests.routing.support import T0, Desk
from workflows.routing_state import RoutingState

SHOP = "+442071838750"
SALES = "+442071838751"


@pytest.fixture
def desk_runtime(settings: Settings, manual: ManualClock, clouds: FakeClouds) -> Iterator[Runtime]:
    rt = build(
        settings.with_overrides(
            slack_api_base=clouds.url("/slack/api/"), public_base_url="https://cc.example"
        ),
        clock=manual,
    )
    try:
        yield rt
    finally:
        rt.close()


def check_offers(desk: Desk) -> None:
    """Every open offer is to one available agent who has the queue's skills and room on
    the channel; no agent is over capacity."""
    state = desk.rt.routing.state if desk.rt.routing else RoutingState()
    for work in state.work.values():
        if work.offered_to is None:
            continue
        agent = state.agents[work.offered_to]
        assert agent.available
        assert work.queue_id in agent.queues
    for agent in state.agents.values():
        for channel, limit in agent.capacity.items():
            assert sum(1 for c in agent.work.values() if c == channel) <= limit


def events_of(desk: Desk, conversation_id: UUID, kind: type[Any]) -> list[Any]:
    return [e for e in desk.app.repository.event_store.get(conversation_id) if type(e) is kind]


async def test_a_morning_of_routing(desk: Desk, clouds: FakeClouds) -> None:
    # the stand-in answers on this event loop, so the synchronous desk runs in a thread
    await asyncio.to_thread(play, desk, clouds)


def play(desk: Desk, clouds: FakeClouds) -> None:
    app, t = desk.app, desk.tenant
    desk.do(
        lambda u: app.configure_channel_in(
            u,
            t,
            Provider.SLACK,
            {"channel_ids": ["C0CUSTOMER"], "alerts_channel_id": "C0SUPERVISE"},
            {"signing_secret": "s" * 32, "bot_token": "xoxb-test-token"},
        )
    )
    general = desk.queue("General")
    vip = desk.queue("VIP", priority=80, required_skills=["vip"])
    norsk = desk.queue(
        "Norsk",
        [Channel.WEBCHAT, Channel.EMAIL],
        required_skills=["norwegian:3"],
        sl_threshold_seconds=3600,
    )
    callback = desk.queue("Callback", [Channel.VOICE])
    sales = desk.queue(
        "Sales",
        [Channel.VOICE],
        sl_threshold_seconds=30,
        max_wait_seconds=120,
        overflow={"target": "queue", "queue_id": str(callback)},
    )
    desk.do(
        lambda u: app.configure_routing_rules_in(
            u,
            t,
            {
                "rules": [
                    {"name": "VIP", "match": {"attributes": {"tier": "vip"}}, "queue_id": str(vip)},
                    {
                        "name": "Norwegian",
                        "match": {"keywords": ["hei", "takk"], "channels": ["webchat", "email"]},
                        "queue_id": str(norsk),
                    },
                    {
                        "name": "Sales line",
                        "match": {"channels": ["voice"], "recipients": [SALES]},
                        "queue_id": str(sales),
                        "priority": 60,
                    },
                ],
                "default_queue_id": str(general),
            },
        )
    )
    desk.at(0)
    sam = desk.agent("Sam", [], capacity={"voice": 1})
    desk.at(1)
    ola = desk.agent("Ola", ["norwegian:4"], capacity={"webchat": 2, "voice": 0})
    desk.at(2)
    vera = desk.agent("Vera", ["vip", "norwegian:2"])

    # Norwegian webchat: only Ola has norwegian at level 3+
    desk.at(10)
    hei = desk.arrive(Channel.WEBCHAT, "Hei, jeg trenger hjelp")
    assert desk.conversation(hei).queue_id == norsk
    desk.tick()
    check_offers(desk)
    assert desk.offered_to(hei) == ola
    # Ola lets it expire (20 s for webchat): nobody else qualifies, so it waits
    desk.at(31)
    desk.tick()
    check_offers(desk)
    assert desk.offered_to(hei) is None
    assert [e.reason for e in events_of(desk, hei, Conversation.OfferDeclined)] == ["expired"]

    # A sales call: the rule on the dialled number; Sam (voice) is longest idle with room
    desk.at(40)
    call = desk.arrive(Channel.VOICE, "", to=SALES)
    assert desk.conversation(call).queue_id == sales
    assert desk.conversation(call).priority == 60
    desk.tick()
    check_offers(desk)
    assert desk.offered_to(call) == sam
    desk.do(lambda u: app.end_offer_in(u, t, call, sam, "declined"))
    desk.tick()
    check_offers(desk)
    assert desk.offered_to(call) == vera  # Ola takes no voice; Sam declined it lately
    taker = vera
    desk.at(45)
    desk.do(lambda u: app.accept_in(u, t, call, taker))

    # a VIP customer: tagged by attribute on an earlier conversation
    desk.at(50)
    first = desk.arrive(Channel.SMS, "hello", sender="+447700900555")
    contact = desk.conversation(first).contact_id
    assert desk.conversation(first).queue_id == general
    desk.do(lambda u: app.set_contact_attributes_in(u, t, contact, {"tier": "VIP"}))
    desk.do(lambda u: app.change_status_in(u, t, first, _closed(), "token:x"))
    desk.at(55)
    again = desk.arrive(Channel.SMS, "me again", sender="+447700900555")
    assert desk.conversation(again).queue_id == vip
    desk.tick()
    check_offers(desk)
    assert desk.offered_to(again) == vera  # the only one with the vip skill

    # restricted: the attribute rule no longer applies
    desk.do(lambda u: app.restrict_contact_in(u, t, contact, "art. 18"))
    desk.do(lambda u: app.change_status_in(u, t, again, _closed(), "token:x"))
    third = desk.arrive(Channel.SMS, "third time", sender="+447700900555")
    assert desk.conversation(third).queue_id == general

    # Vera goes away: her open offers are withdrawn, the work waits on
    desk.at(60)
    desk.presence(vera, AgentPresence.AWAY, "lunch")
    assert desk.offered_to(again) is None

    # Vera hands the sales call to Sam, with a note
    desk.at(70)
    desk.presence(sam, AgentPresence.AVAILABLE)
    desk.do(lambda u: app.transfer_in(u, t, call, f"agent:{taker}", None, sam, "wants a quote"))
    assert desk.offered_to(call) == sam
    desk.do(lambda u: app.accept_in(u, t, call, sam))
    check_offers(desk)

    # A second sales call waits with nobody free on voice: SLA breach at 30 s, then
    # overflow to the callback queue at 120 s, keeping its original wait
    desk.at(100)
    waiting = desk.arrive(Channel.VOICE, "", to=SALES)
    desk.tick()
    check_offers(desk)
    if desk.offered_to(waiting) is not None:  # whoever is left on voice declines it
        desk.do(lambda u: app.end_offer_in(u, t, waiting, desk.offered_to(waiting), "declined"))
    desk.at(131)
    desk.tick()
    breaches = events_of(desk, waiting, Conversation.SlaBreached)
    assert [(b.kind, b.threshold_seconds) for b in breaches] == [("answer", 30)]
    desk.at(140)
    desk.tick()
    assert len(events_of(desk, waiting, Conversation.SlaBreached)) == 1  # once per wait
    desk.at(221)
    desk.tick()
    moved = desk.conversation(waiting)
    assert moved.queue_id == callback
    assert moved.waiting_since == T0 + timedelta(seconds=100)
    assert [e.reason for e in events_of(desk, waiting, Conversation.Overflowed)] == ["max_wait"]

    # the alert reached the supervisors' Slack channel, once, with no personal data
    alerts = [r.json for r in clouds.sent("slack")]
    assert [a["channel"] for a in alerts] == ["C0SUPERVISE"]
    text = alerts[0]["text"]
    assert "Sales" in text
    assert "30s" in text
    assert f"https://cc.example/v1/queues/state?queue_id={sales}" in text
    for personal in ("+4477", SALES, "hello", "Ola", "Sam"):
        assert personal not in text
    # and on the dashboard
    with desk.rt.readdb.read() as tx:
        count, recent = metrics.sla_breaches(tx, str(t), micros(T0))
    assert count == 1
    assert recent[0]["conversation_id"] == str(waiting)
    check_offers(desk)


def _closed() -> Any:
    from contact_centre.conversations import ConversationStatus

    return ConversationStatus.CLOSED
