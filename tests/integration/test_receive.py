"""The application service on both backends: find-or-create, idempotency, threading."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from contact_centre.application import NS_IDENTITY, NS_RECEIPT, NS_THREAD, Receive
from contact_centre.conversations import Conversation, ConversationStatus
from contact_centre.errors import NotFoundError, TenantInactiveError, ValidationError
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import Settings
from infra.runtime import Runtime, build
from projections import inbox
from tests.helpers import unique_phone

SHOP = "+442071838750"


def sms(
    tenant_id: UUID,
    sender: str,
    body: str = "hello",
    *,
    channel: Channel = Channel.SMS,
    message_id: str | None = None,
    name: str | None = None,
) -> Interaction:
    return Interaction(
        tenant_id=tenant_id,
        channel=channel,
        direction=Direction.INBOUND,
        provider="twilio",
        provider_message_id=message_id or f"SM{uuid4().hex}",
        sender=Identity(IdentityKind.PHONE, sender, name),
        recipient=Identity(IdentityKind.PHONE, SHOP),
        body=body,
        occurred_at=datetime.now(UTC),
    )


@pytest.fixture
def tenant(runtime: Runtime) -> UUID:
    tenant_id, _ = runtime.app.register_tenant("Acme")
    return tenant_id


def test_first_message_creates_contact_conversation_and_message(
    runtime: Runtime, tenant: UUID
) -> None:
    result = runtime.app.receive(sms(tenant, "+447700900123", "Where is my order?", name="Ann"))
    assert result.duplicate is False
    conversation = runtime.app.repository.get(result.conversation_id)
    assert isinstance(conversation, Conversation)
    assert conversation.contact_id == result.contact_id
    assert conversation.message_count == 1
    runtime.catch_up()
    with runtime.readdb.read() as tx:
        rows = inbox.list_messages(tx, str(tenant), str(result.conversation_id))
    assert [r["id"] for r in rows] == [str(result.message_id)]


def test_repeat_delivery_returns_the_same_ids_and_writes_nothing(
    runtime: Runtime, tenant: UUID
) -> None:
    first = runtime.app.receive(sms(tenant, "+447700900123", message_id="SMrepeat"))
    before = runtime.app.recorder.max_notification_id()
    again = runtime.app.receive(
        sms(tenant, "+447700900123", "different text", message_id="SMrepeat")
    )
    assert again.duplicate is True
    assert (again.conversation_id, again.contact_id, again.message_id) == (
        first.conversation_id,
        first.contact_id,
        first.message_id,
    )
    assert runtime.app.recorder.max_notification_id() == before


def test_the_same_provider_id_from_another_provider_is_a_new_message(
    runtime: Runtime, tenant: UUID
) -> None:
    first = runtime.app.receive(sms(tenant, "+447700900123", message_id="X1"))
    other = Interaction(
        tenant_id=tenant,
        channel=Channel.EMAIL,
        direction=Direction.INBOUND,
        provider="smtp",
        provider_message_id="X1",
        sender=Identity(IdentityKind.EMAIL, "ann@example.com"),
        occurred_at=datetime.now(UTC),
    )
    second = runtime.app.receive(other)
    assert second.duplicate is False
    assert second.message_id != first.message_id


def test_a_number_in_any_format_resolves_to_one_contact_across_phone_channels(
    runtime: Runtime, tenant: UUID
) -> None:
    by_sms = runtime.app.receive(sms(tenant, "+44 7700 900123"))
    by_voice = runtime.app.receive(sms(tenant, "+447700900123", channel=Channel.VOICE))
    by_whatsapp = runtime.app.receive(
        sms(tenant, "whatsapp:+447700900123", channel=Channel.WHATSAPP)
    )
    assert by_sms.contact_id == by_voice.contact_id == by_whatsapp.contact_id
    # one conversation per channel
    assert len({by_sms.conversation_id, by_voice.conversation_id, by_whatsapp.conversation_id}) == 3


def test_messages_on_the_same_thread_join_the_open_conversation(
    runtime: Runtime, tenant: UUID
) -> None:
    a = runtime.app.receive(sms(tenant, "+447700900123", "one"))
    b = runtime.app.receive(sms(tenant, "+447700900123", "two"))
    assert a.conversation_id == b.conversation_id


def test_a_resolved_conversation_is_reopened_and_a_closed_one_replaced(
    runtime: Runtime, tenant: UUID
) -> None:
    first = runtime.app.receive(sms(tenant, "+447700900123"))
    runtime.app.run(
        lambda uow: runtime.app.change_status_in(
            uow, tenant, first.conversation_id, ConversationStatus.RESOLVED, "agent:a"
        )
    )
    again = runtime.app.receive(sms(tenant, "+447700900123"))
    assert again.conversation_id == first.conversation_id
    conversation = runtime.app.repository.get(first.conversation_id)
    assert conversation.status is ConversationStatus.OPEN
    runtime.app.run(
        lambda uow: runtime.app.change_status_in(
            uow, tenant, first.conversation_id, ConversationStatus.CLOSED, "agent:a"
        )
    )
    third = runtime.app.receive(sms(tenant, "+447700900123"))
    assert third.conversation_id != first.conversation_id
    assert third.contact_id == first.contact_id


def test_tenants_never_share_contacts_or_conversations(runtime: Runtime) -> None:
    a, _ = runtime.app.register_tenant("A")
    b, _ = runtime.app.register_tenant("B")
    in_a = runtime.app.receive(sms(a, "+447700900123"))
    in_b = runtime.app.receive(sms(b, "+447700900123"))
    assert in_a.contact_id != in_b.contact_id
    with pytest.raises(NotFoundError):
        runtime.app.run(
            lambda uow: runtime.app.reply_in(uow, b, in_a.conversation_id, "agent:x", "hi")
        )


def test_an_unknown_or_terminated_tenant_is_refused_and_nothing_written(runtime: Runtime) -> None:
    before = runtime.app.recorder.max_notification_id()
    with pytest.raises(NotFoundError):
        runtime.app.receive(sms(uuid4(), "+447700900123"))
    assert runtime.app.recorder.max_notification_id() == before
    tenant_id, _ = runtime.app.register_tenant("Leaving")
    runtime.app.run(lambda uow: runtime.app.terminate_tenant_in(uow, tenant_id, 0))
    before = runtime.app.recorder.max_notification_id()
    with pytest.raises(TenantInactiveError):
        runtime.app.receive(sms(tenant_id, "+447700900123"))
    assert runtime.app.recorder.max_notification_id() == before


def test_an_invalid_sender_writes_nothing(runtime: Runtime, tenant: UUID) -> None:
    before = runtime.app.recorder.max_notification_id()
    with pytest.raises(ValidationError):
        runtime.app.receive(sms(tenant, "not a number"))
    assert runtime.app.recorder.max_notification_id() == before


def test_a_failing_command_in_a_batch_does_not_take_the_others_down(
    runtime: Runtime, tenant: UUID
) -> None:
    good = [sms(tenant, unique_phone(), f"m{i}") for i in range(5)]
    bad = sms(tenant, "nonsense")
    commands = [
        lambda uow, i=i: runtime.app.receive_in(uow, i) for i in [*good[:2], bad, *good[2:]]
    ]
    outcomes = runtime.app.run_batch(commands)
    assert [o.error is None for o in outcomes] == [True, True, False, True, True, True]
    assert isinstance(outcomes[2].error, ValidationError)
    for outcome in outcomes:
        if outcome.error is None:
            assert runtime.app.repository.get(outcome.result.conversation_id).message_count == 1


def test_a_batch_with_two_messages_from_one_new_sender_creates_one_contact(
    runtime: Runtime, tenant: UUID
) -> None:
    phone = unique_phone()
    first, second = sms(tenant, phone, "a"), sms(tenant, phone, "b")
    outcomes = runtime.app.run_batch(
        [
            lambda uow: runtime.app.receive_in(uow, first),
            lambda uow: runtime.app.receive_in(uow, second),
        ]
    )
    assert outcomes[0].result.contact_id == outcomes[1].result.contact_id
    assert outcomes[0].result.conversation_id == outcomes[1].result.conversation_id
    assert runtime.app.repository.get(outcomes[0].result.conversation_id).message_count == 2


def phone_identity(address: str) -> Identity:
    return Identity(IdentityKind.PHONE, address)


def _count_index_queries(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of keys of each write-index query the runtime makes from now on."""
    index = runtime.app.index
    real = index.get_in
    queries: list[int] = []

    def counted(wanted: Any) -> Any:
        queries.append(sum(len(keys) for keys in wanted.values()))
        return real(wanted)

    monkeypatch.setattr(index, "get_in", counted)
    return queries


def test_a_batch_for_a_tenant_seen_before_looks_its_keys_up_in_one_query(
    runtime: Runtime, tenant: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = runtime.app
    app.run_batch([Receive(app, sms(tenant, unique_phone())) for _ in range(2)])
    queries = _count_index_queries(runtime, monkeypatch)
    batch = [sms(tenant, unique_phone(), f"m{i}") for i in range(5)]
    outcomes = app.run_batch([Receive(app, i) for i in batch])
    assert [o.error for o in outcomes] == [None] * 5
    # the tenant and, for each message, its receipt, identity, thread and suppression
    assert queries == [1 + 4 * 5]


def test_a_batch_plans_again_when_another_process_changed_the_tenant_region(
    settings: Settings, runtime: Runtime, tenant: UUID, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch plans with the tenant entry the last one read; a changed entry is noticed
    in the same query, and the numbers are normalised with the region as it is now."""
    app = runtime.app
    app.run(lambda uow: app.change_tenant_settings_in(uow, tenant, {"phone_region": "FR"}))
    app.run_batch([Receive(app, sms(tenant, unique_phone())) for _ in range(2)])
    other = build(settings)
    try:
        other.app.run(
            lambda uow: other.app.change_tenant_settings_in(uow, tenant, {"phone_region": "NL"})
        )
    finally:
        other.close()
    queries = _count_index_queries(runtime, monkeypatch)
    outcomes = app.run_batch(
        [Receive(app, sms(tenant, "0612345678", "a")), Receive(app, sms(tenant, unique_phone()))]
    )
    assert [o.error for o in outcomes] == [None, None]
    assert len(queries) == 2

    def subject(phone: str) -> list[UUID]:
        found, _ = app.run(lambda uow: app.resolve_subject(uow, tenant, phone_identity(phone)))
        return found

    assert subject("+31612345678") == [outcomes[0].result.contact_id]
    assert subject("+33612345678") == []


def test_concurrent_deliveries_from_two_processes_to_one_conversation_lose_nothing(
    settings: Settings, runtime: Runtime, tenant: UUID
) -> None:
    """Two independent runtimes (as two processes would be) race on the same thread."""
    other = build(settings)
    try:
        per_writer = 25
        errors: list[BaseException] = []

        def deliver(rt: Runtime, label: str) -> None:
            try:
                for i in range(per_writer):
                    rt.app.receive(sms(tenant, "+447700900999", f"{label}-{i}"))
            except BaseException as error:  # surfaced below
                errors.append(error)

        threads = [
            threading.Thread(target=deliver, args=(runtime, "a")),
            threading.Thread(target=deliver, args=(other, "b")),
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        runtime.catch_up()
        with runtime.readdb.read() as tx:
            rows = inbox.list_conversations(tx, str(tenant))
            assert len(rows) == 1
            messages = inbox.list_messages(tx, str(tenant), str(rows[0]["id"]))
        assert len(messages) == 2 * per_writer
        # the store (not a process's cache) holds every message, each exactly once
        stored = list(runtime.app.events.get(UUID(str(rows[0]["id"]))))
        received = [e for e in stored if isinstance(e, Conversation.MessageReceived)]
        assert len(received) == 2 * per_writer
        assert len({e.message_id for e in received}) == 2 * per_writer
    finally:
        other.close()


def test_a_write_batch_keeps_an_erased_opted_out_address_opted_out(
    runtime: Runtime, tenant: UUID
) -> None:
    """The batch reads its index keys (suppression entries among them) in one query."""
    app = runtime.app
    suppressed, other = unique_phone(), unique_phone()
    first = app.receive(sms(tenant, suppressed, "STOP"))
    sender = Identity(IdentityKind.PHONE, suppressed)
    app.run(lambda uow: app.update_suppression(uow, tenant, sender, "sms", True))
    app.run(lambda uow: app.erase_contact_in(uow, tenant, first.contact_id, "request:erasure"))
    outcomes = app.run_batch(
        [Receive(app, sms(tenant, suppressed, "hello again")), Receive(app, sms(tenant, other))]
    )
    again, fresh = (outcome.result for outcome in outcomes)
    assert again.contact_id != first.contact_id
    contacts = {c: app.repository.get(c) for c in (again.contact_id, fresh.contact_id)}
    assert contacts[again.contact_id].opted_out == {"sms"}
    assert contacts[fresh.contact_id].opted_out == set()


def test_the_write_index_reads_several_namespaces_at_once(runtime: Runtime, tenant: UUID) -> None:
    app = runtime.app
    app.receive(sms(tenant, unique_phone()))
    identities = dict(app.index.scan_prefix(NS_IDENTITY, ""))
    threads = dict(app.index.scan_prefix(NS_THREAD, ""))
    assert identities
    assert threads
    found = app.index.get_in(
        {NS_IDENTITY: [*identities, "absent"], NS_THREAD: list(threads), NS_RECEIPT: ["absent"]}
    )
    assert found == {
        **{(NS_IDENTITY, k): v for k, v in identities.items()},
        **{(NS_THREAD, k): v for k, v in threads.items()},
    }
