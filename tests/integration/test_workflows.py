"""Workflow infrastructure: policies react exactly once; tickers run what is due."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID, uuid4

import pytest
from eventsourcing.utils import get_topic

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation
from contact_centre.errors import ConflictError, NotFoundError
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from contact_centre.staff import Queue
from infra.config import Settings
from infra.runtime import Runtime, build
from infra.scheduler import TickerRunner
from projections import inbox
from workflows.base import Policy, Ticker, reacts_to
from workflows.placement import QueueFinder


class WelcomeNote(Policy):
    """Adds a note to every new conversation; refuses (for the test) one chosen thread."""

    name = "welcome-note"
    refuse: ClassVar[set[UUID]] = set()

    @reacts_to(Conversation.Opened)
    def _opened(self, uow: UnitOfWork, event: Any, position: int) -> None:
        if event.originator_id in self.refuse:
            raise ConflictError("refused for the test")
        uow.app.add_note_in(uow, event.tenant_id, event.originator_id, "system:welcome", "Hello!")


def receive(runtime: Runtime, tenant: UUID, visitor: str) -> UUID:
    result = runtime.app.receive(
        Interaction(
            tenant_id=tenant,
            channel=Channel.WEBCHAT,
            direction=Direction.INBOUND,
            provider="webchat",
            provider_message_id=str(uuid4()),
            sender=Identity(IdentityKind.VISITOR, visitor),
            body="hi",
            occurred_at=datetime.now(UTC),
        )
    )
    return result.conversation_id


def notes_of(runtime: Runtime, tenant: UUID, conversation: UUID) -> list[str]:
    with runtime.readdb.read() as tx:
        rows = inbox.list_messages(tx, str(tenant), str(conversation))
    return [str(r["author"]) for r in rows if r["kind"] == "note"]


@pytest.fixture(autouse=True)
def _reset() -> None:
    WelcomeNote.refuse = set()


def test_a_policy_reacts_once_to_each_event_across_restarts(
    runtime: Runtime, settings: Settings
) -> None:
    runtime.add_policy(WelcomeNote())
    tenant, _ = runtime.app.register_tenant("Acme")
    conversations = [receive(runtime, tenant, f"v-{i}") for i in range(4)]
    runtime.catch_up()
    for conversation in conversations:
        assert notes_of(runtime, tenant, conversation) == ["system:welcome"]

    restarted = build(settings)
    try:
        restarted.add_policy(WelcomeNote())
        restarted.catch_up()
        more = receive(restarted, tenant, "v-new")
        restarted.catch_up()
        for conversation in [*conversations, more]:
            assert notes_of(restarted, tenant, conversation) == ["system:welcome"]
    finally:
        restarted.close()


def test_a_refused_reaction_is_passed_over_and_the_others_still_happen(runtime: Runtime) -> None:
    consumer = runtime.add_policy(WelcomeNote())
    tenant, _ = runtime.app.register_tenant("Acme")
    conversations = [receive(runtime, tenant, f"v-{i}") for i in range(3)]
    WelcomeNote.refuse = {conversations[1]}
    runtime.catch_up()
    assert notes_of(runtime, tenant, conversations[0]) == ["system:welcome"]
    assert notes_of(runtime, tenant, conversations[1]) == []
    assert notes_of(runtime, tenant, conversations[2]) == ["system:welcome"]
    assert consumer.skipped == 1
    runtime.catch_up()  # nothing is reacted to twice
    assert notes_of(runtime, tenant, conversations[2]) == ["system:welcome"]
    assert consumer.skipped == 1


async def test_a_running_policy_reacts_to_api_writes_and_projections_see_it(
    runtime: Runtime,
) -> None:
    runtime.add_policy(WelcomeNote())
    runtime.start()
    tenant, _ = runtime.app.register_tenant("Acme")
    conversation = receive(runtime, tenant, "v-1")
    # the policy's note reaches the inbox without anyone calling catch_up
    for _ in range(200):
        if notes_of(runtime, tenant, conversation):
            break
        await asyncio.sleep(0.025)
    assert notes_of(runtime, tenant, conversation) == ["system:welcome"]


class CountingTicker(Ticker):
    name = "counting"
    interval = 0.05

    def __init__(self, fail_first: int = 0) -> None:
        self.ticks = 0
        self.fail_first = fail_first
        self.seen: list[datetime] = []
        self.done = threading.Event()

    def tick(self, now: datetime) -> int:
        self.ticks += 1
        if self.ticks <= self.fail_first:
            raise RuntimeError("transient")
        self.seen.append(now)
        if len(self.seen) >= 3:
            self.done.set()
        return 0


def test_tickers_run_on_their_interval_with_the_injected_clock_and_survive_errors(
    runtime: Runtime,
) -> None:
    ticker = CountingTicker(fail_first=1)
    runner = TickerRunner([ticker], runtime.clock)
    runner.start()
    try:
        assert ticker.done.wait(10)
    finally:
        runner.stop()
    assert ticker.ticks >= 4
    assert all(moment.tzinfo is not None for moment in ticker.seen)


def test_a_unit_asks_the_store_once_for_a_missing_aggregate_and_finds_it_once_added(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    asked: list[UUID] = []
    real_get = runtime.app.repository.get

    def counting_get(aggregate_id: UUID, *args: Any, **kwargs: Any) -> Any:
        asked.append(aggregate_id)
        return real_get(aggregate_id, *args, **kwargs)

    monkeypatch.setattr(runtime.app.repository, "get", counting_get)
    uow = UnitOfWork(runtime.app)
    queue_id = uuid4()
    for _ in range(3):  # a batch of new conversations each asking for the tenant's rules
        with pytest.raises(NotFoundError):
            uow.get(queue_id, Queue, tenant)
    assert asked == [queue_id]
    queue = Queue.create(queue_id, tenant, "Sales", [Channel.SMS], uow.now)
    uow.add(queue)
    assert uow.get(queue_id, Queue, tenant) is queue
    with pytest.raises(NotFoundError):  # a new unit asks the store again
        UnitOfWork(runtime.app).get(queue_id, Queue, tenant)
    assert asked == [queue_id, queue_id]


def test_placement_reads_a_tenants_queues_once_per_unit_of_work(runtime: Runtime) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    chat, _ = runtime.app.run(
        lambda uow: runtime.app.create_queue_in(uow, tenant, "Chat", [Channel.WEBCHAT])
    )
    runtime.feed.catch_up(runtime.consumer("directory"))
    statements: list[str] = []

    def fetch(sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
        statements.append(sql)
        return runtime.readdb.fetch(sql, params)

    finder = QueueFinder(fetch)
    uow = UnitOfWork(runtime.app)
    found = [finder.queue_for(uow, tenant, channel) for channel in ("webchat", "sms", "webchat")]
    assert found == [chat, None, chat]
    assert len(statements) == 1
    finder.queue_for(UnitOfWork(runtime.app), tenant, "webchat")
    assert len(statements) == 2


def test_a_policy_is_handed_only_the_events_it_reacts_to_and_reads_past_the_rest(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    consumer = runtime.add_policy(WelcomeNote())
    tenant, _ = runtime.app.register_tenant("Acme")
    conversations = [receive(runtime, tenant, f"v-{i}") for i in range(3)]
    for _ in range(5):  # more messages to the last conversation: nothing to react to
        receive(runtime, tenant, "v-2")
    handed: list[str] = []
    real_select = runtime.app.recorder.select_notifications

    def select(*args: Any, **kwargs: Any) -> Any:
        found = real_select(*args, **kwargs)
        handed.extend(n.topic for n in found)
        return found

    monkeypatch.setattr(runtime.app.recorder, "select_notifications", select)
    runtime.feed.catch_up(consumer)
    assert sorted(handed) == sorted([get_topic(Conversation.Opened)] * 3)
    # it read past everything else (its own notes too), without being handed it
    assert runtime.feed.progress.get(consumer.name) == runtime.app.recorder.max_notification_id()
    for conversation in conversations:
        assert notes_of(runtime, tenant, conversation) == ["system:welcome"]
    handed.clear()
    receive(runtime, tenant, "v-2")
    runtime.feed.catch_up(consumer)
    assert handed == []
