"""Read models replayed from a recorded sequence of events, compared with what is expected.

The scenario runs with a manual clock, so every time (and so every metric) is exact.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from contact_centre.clock import ManualClock
from contact_centre.conversations import ConversationStatus
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from contact_centre.staff import AgentPresence
from infra.config import Settings
from infra.runtime import Runtime, build
from projections import crm, metrics, queues, timeline
from projections.base import loads, sealed_from_text
from tests.helpers import read_model_dump

T0 = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)  # an interval boundary
MICRO = 1_000_000


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def us(moment: datetime) -> int:
    return int(moment.timestamp() * MICRO)


@pytest.fixture
def manual() -> ManualClock:
    return ManualClock(T0 - timedelta(hours=1))


@pytest.fixture
def scenario_runtime(settings: Settings, manual: ManualClock) -> Any:
    rt = build(settings, clock=manual)
    try:
        yield rt
    finally:
        rt.close()


class Scenario:
    """A morning of work, command by command, with the clock set before each."""

    def __init__(self, rt: Runtime, clock: ManualClock) -> None:
        self.rt, self.clock, self.app = rt, clock, rt.app
        self.tenant, _ = self.app.register_tenant("Acme")

    def run(self, seconds: float, command: Any) -> Any:
        self.clock.set(at(seconds))
        result, _ = self.app.run(command)
        self.rt.catch_up()  # placement reacts; projections follow
        return result

    def message(
        self,
        seconds: float,
        channel: Channel,
        kind: IdentityKind,
        address: str,
        name: str | None,
        body: str,
    ) -> Any:
        self.clock.set(at(seconds))
        result = self.app.receive(
            Interaction(
                tenant_id=self.tenant,
                channel=channel,
                direction=Direction.INBOUND,
                provider="test",
                provider_message_id=str(uuid4()),
                sender=Identity(kind, address, name),
                body=body,
                occurred_at=at(seconds),
            )
        )
        self.rt.catch_up()
        return result


def play(sc: Scenario) -> dict[str, Any]:
    app, t = sc.app, sc.tenant
    sms_queue = sc.run(-3600, lambda u: app.create_queue_in(u, t, "Phone lines", [Channel.SMS]))
    sc.run(-3600, lambda u: app.configure_queue_in(u, t, sms_queue, {"sl_threshold_seconds": 30}))
    email_queue = sc.run(-3600, lambda u: app.create_queue_in(u, t, "Email", [Channel.EMAIL]))
    alice = sc.run(-3600, lambda u: app.create_agent_in(u, t, "Alice", None, ["billing:3"]))
    bob = sc.run(-3600, lambda u: app.create_agent_in(u, t, "Bob", None, []))
    sc.run(-60, lambda u: app.set_presence_in(u, t, alice, AgentPresence.AVAILABLE))
    sc.run(-60, lambda u: app.set_presence_in(u, t, bob, AgentPresence.AWAY, "lunch"))

    ann = sc.message(0, Channel.SMS, IdentityKind.PHONE, "+447700900123", "Ann Jones", "Order?")
    sc.run(20, lambda u: app.assign_in(u, t, ann.conversation_id, alice, "agent:a"))
    sc.run(60, lambda u: app.reply_in(u, t, ann.conversation_id, "agent:a", "On its way"))
    sc.run(
        300,
        lambda u: app.change_status_in(
            u, t, ann.conversation_id, ConversationStatus.RESOLVED, "agent:a"
        ),
    )

    ben = sc.message(120, Channel.SMS, IdentityKind.PHONE, "+447700900456", "Ben", "Hello?")
    sc.run(180, lambda u: app.abandon_in(u, t, ben.conversation_id, "caller_hung_up"))

    cara = sc.message(600, Channel.EMAIL, IdentityKind.EMAIL, "cara@example.com", "Cara", "Invoice")
    sc.run(1200, lambda u: app.assign_in(u, t, cara.conversation_id, alice, "agent:a"))

    dan = sc.message(1000, Channel.SMS, IdentityKind.PHONE, "+447700900789", None, "Refund")
    sc.run(1100, lambda u: app.tag_contact_in(u, t, ann.contact_id, ["vip", "billing"], []))
    sc.run(
        1100,
        lambda u: app.set_contact_attributes_in(
            u, t, ann.contact_id, {"plan": "gold", "seats": 12, "active": True}
        ),
    )
    return {
        "sms_queue": sms_queue,
        "email_queue": email_queue,
        "alice": alice,
        "bob": bob,
        "ann": ann,
        "ben": ben,
        "cara": cara,
        "dan": dan,
    }


def test_metrics_intervals_are_exact_for_a_recorded_morning(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    sc = Scenario(scenario_runtime, manual)
    ids = play(sc)
    with scenario_runtime.readdb.read() as tx:
        rows = metrics.intervals(tx, str(sc.tenant), us(T0), us(at(3600)))
    by_key = {(r["queue_id"], r["channel"], r["interval_start"]): r for r in rows}
    sms = by_key[(str(ids["sms_queue"]), "sms", us(T0))]
    # Ann answered after 20 s (SL 30 s), Ben abandoned; Dan (10:16:40) is the next interval's
    assert (sms["offered"], sms["answered"], sms["abandoned"]) == (2, 1, 1)
    assert sms["answered_in_sl"] == 1
    assert sms["answer_time"] == 20 * MICRO
    assert (sms["handled"], sms["handle_time"]) == (1, 280 * MICRO)
    assert (sms["responded"], sms["response_time"]) == (1, 60 * MICRO)
    email = by_key[(str(ids["email_queue"]), "email", us(T0))]
    assert (email["offered"], email["answered"], email["answered_in_sl"]) == (1, 1, 1)
    assert email["answer_time"] == 600 * MICRO
    later = by_key[(str(ids["sms_queue"]), "sms", us(at(900)))]  # Dan, 10:16:40
    assert (later["offered"], later["answered"], later["abandoned"]) == (1, 0, 0)
    with scenario_runtime.readdb.read() as tx:
        assert metrics.presence_counts(tx, str(sc.tenant)) == {"available": 1, "away": 1}
        assert metrics.in_progress(tx, str(sc.tenant)) == 1  # Cara, with Alice


def test_queue_state_holds_exactly_the_waiting_work_oldest_first(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    sc = Scenario(scenario_runtime, manual)
    ids = play(sc)
    eve = sc.message(1500, Channel.SMS, IdentityKind.PHONE, "+447700900111", None, "Hi")
    vip = sc.message(1600, Channel.SMS, IdentityKind.PHONE, "+447700900222", None, "Urgent")
    sc.run(
        1601,
        lambda u: sc.app.queue_conversation_in(
            u, sc.tenant, vip.conversation_id, ids["sms_queue"], 50, "manual"
        ),
    )
    with scenario_runtime.readdb.read() as tx:
        rows = queues.waiting(tx, str(sc.tenant))
    assert [(r["conversation_id"], r["priority"], r["waiting_since"]) for r in rows] == [
        (str(vip.conversation_id), 50, us(at(1601))),
        (str(ids["dan"].conversation_id), 0, us(at(1000))),
        (str(eve.conversation_id), 0, us(at(1500))),
    ]


def test_crm_view_counts_conversations_times_tags_and_finds_by_name(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    sc = Scenario(scenario_runtime, manual)
    ids = play(sc)
    ann = ids["ann"].contact_id
    with scenario_runtime.readdb.read() as tx:
        row = crm.get_contact(tx, str(sc.tenant), str(ann))
        assert row is not None
        assert (row["open_conversations"], row["total_conversations"]) == (0, 1)
        assert row["first_contact_at"] == us(at(0))
        assert row["last_contact_at"] == us(at(60))
        assert loads(row["tags"]) == ["billing", "vip"]
        assert scenario_runtime.vault.open(sealed_from_text(row["attributes"])) == (
            '{"active": true, "plan": "gold", "seats": 12}'
        )

        def find(word: str) -> list[str]:
            token = scenario_runtime.vault.blind_index(sc.tenant, "search", word)
            return crm.search_contact_ids(tx, str(sc.tenant), [token])

        assert find("jon") == [str(ann)]  # prefix of "Jones"
        assert find("jones") == [str(ann)]
        assert find("447700900123") == [str(ann)]
        assert find("example") == [str(ids["cara"].contact_id)]
        assert find("nobody") == []


def test_timeline_lists_everything_for_the_contact_in_time_order(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    sc = Scenario(scenario_runtime, manual)
    ids = play(sc)
    with scenario_runtime.readdb.read() as tx:
        rows = timeline.list_timeline(tx, str(sc.tenant), [str(ids["ann"].contact_id)])
    assert [(r["kind"], r["direction"], r["occurred_at"]) for r in rows] == [
        ("status", None, us(at(0))),
        ("message", "inbound", us(at(0))),
        ("queued", None, us(at(0))),
        ("assigned", None, us(at(20))),
        ("message", "outbound", us(at(60))),
        ("status", None, us(at(300))),
    ]
    with scenario_runtime.readdb.read() as tx:
        page = timeline.list_timeline(
            tx,
            str(sc.tenant),
            [str(ids["ann"].contact_id)],
            after=(rows[2]["occurred_at"], rows[2]["position"]),
            limit=2,
        )
    assert [r["id"] for r in page] == [rows[3]["id"], rows[4]["id"]]


def test_every_read_model_rebuilt_from_the_log_is_identical(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    play(Scenario(scenario_runtime, manual))
    before = read_model_dump(scenario_runtime)
    assert all(before[t] for t in ("rm_crm_contacts", "rm_timeline", "rm_metric_intervals"))
    for consumer in scenario_runtime.consumers:
        scenario_runtime.feed.reset(consumer)
        assert all(
            not rows
            for t, rows in read_model_dump(scenario_runtime).items()
            if t in consumer.projection.tables
        )
        scenario_runtime.feed.catch_up(consumer)
    assert read_model_dump(scenario_runtime) == before


def test_all_read_models_rebuilt_in_one_pass_are_identical(
    scenario_runtime: Runtime, manual: ManualClock
) -> None:
    play(Scenario(scenario_runtime, manual))
    before = read_model_dump(scenario_runtime)
    with scenario_runtime.readdb.transaction() as tx:  # rows the rebuild must replace
        tx.execute("UPDATE rm_crm_contacts SET total_conversations = 99, last_contact_at = 1")
    latest = scenario_runtime.app.recorder.max_notification_id()
    scenario_runtime.feed.REBUILD_BATCH = 7
    assert scenario_runtime.feed.rebuild_together(scenario_runtime.consumers) == latest
    assert read_model_dump(scenario_runtime) == before


def test_a_changed_projection_version_rebuilds_it(settings: Settings) -> None:
    rt = build(settings)
    try:
        tenant, _ = rt.app.register_tenant("Acme")
        rt.app.receive(
            Interaction(
                tenant_id=tenant,
                channel=Channel.SMS,
                direction=Direction.INBOUND,
                provider="t",
                provider_message_id="1",
                sender=Identity(IdentityKind.PHONE, "+447700900123"),
                occurred_at=datetime.now(UTC),
            )
        )
        rt.catch_up()
    finally:
        rt.close()
    from projections.timeline import TimelineProjection

    TimelineProjection.version += 1
    try:
        rebuilt = build(settings)
        try:
            consumer = rebuilt.consumer("timeline")
            assert consumer.position() is None  # dropped, to be rebuilt from the log
            rebuilt.catch_up()
            with rebuilt.readdb.read() as tx:
                tx.execute("SELECT COUNT(*) FROM rm_timeline")
                assert tx.fetchone() == (2,)  # opened + the message
        finally:
            rebuilt.close()
    finally:
        TimelineProjection.version -= 1
