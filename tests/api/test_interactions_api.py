"""POST /v1/interactions: the generic inbound endpoint."""

from __future__ import annotations

import asyncio
from uuid import UUID

from infra.runtime import Runtime
from tests.helpers import Api, interaction, settle


async def test_a_new_interaction_is_201_with_ids_and_a_repeat_is_200_with_the_same_ids(
    api: Api, runtime: Runtime
) -> None:
    doc = interaction(provider_message_id="SMabc123")
    status, first = await api.post("/v1/interactions", doc)
    assert status == 201
    assert set(first) >= {"conversation_id", "contact_id", "message_id"}
    before = runtime.app.recorder.max_notification_id()
    status, again = await api.post("/v1/interactions", doc)
    assert status == 200
    assert {k: again[k] for k in ("conversation_id", "contact_id", "message_id")} == {
        k: first[k] for k in ("conversation_id", "contact_id", "message_id")
    }
    assert again["duplicate"] is True
    assert runtime.app.recorder.max_notification_id() == before


async def test_concurrent_repeats_of_one_delivery_record_it_once(
    api: Api, runtime: Runtime
) -> None:
    doc = interaction(provider_message_id="SMrace")
    results = await asyncio.gather(*(api.post("/v1/interactions", doc) for _ in range(20)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 19 + [201]
    assert len({body["message_id"] for _, body in results}) == 1
    await settle(runtime)
    _, inbox = await api.get("/v1/conversations")
    assert inbox["items"][0]["message_count"] == 1


async def test_the_interaction_shows_up_in_the_inbox(api: Api, runtime: Runtime) -> None:
    ids = await api.receive(
        body="Is my order shipped?",
        sender={"kind": "phone", "address": "+447700900123", "display_name": "Ann"},
    )
    await settle(runtime)
    status, body = await api.get("/v1/conversations")
    assert status == 200
    assert body["next"] is None
    [item] = body["items"]
    assert item["id"] == ids["conversation_id"]
    assert item["channel"] == "sms"
    assert item["status"] == "open"
    assert item["contact"] == {"id": ids["contact_id"], "display_name": "Ann"}
    assert item["last_message"]["preview"] == "Is my order shipped?"
    assert item["last_message"]["direction"] == "inbound"
    assert item["unread"] == 1


async def test_missing_thread_key_threads_phone_channels_by_the_pair_of_numbers(
    api: Api, runtime: Runtime
) -> None:
    sender = {"kind": "phone", "address": "+447700900123"}
    a = await api.receive(sender=sender, to={"kind": "phone", "address": "+442071838750"})
    b = await api.receive(sender=sender, to={"kind": "phone", "address": "+442071838750"})
    other_line = await api.receive(sender=sender, to={"kind": "phone", "address": "+442071838751"})
    assert a["conversation_id"] == b["conversation_id"]
    assert other_line["conversation_id"] != a["conversation_id"]
    assert other_line["contact_id"] == a["contact_id"]


async def test_messages_come_back_in_time_order_with_their_details(
    api: Api, runtime: Runtime
) -> None:
    sender = {"kind": "email", "address": "Ann@Example.com", "display_name": "Ann"}
    later = await api.receive(
        channel="email",
        provider="smtp",
        sender=sender,
        thread_key="t-1",
        subject="Hi",
        body="second",
        occurred_at="2026-11-21T10:05:00Z",
        attachments=[
            {"name": "photo.jpg", "content_type": "image/jpeg", "size": 2048, "sha256": "a" * 64}
        ],
    )
    earlier = await api.receive(
        channel="email",
        provider="smtp",
        sender=sender,
        thread_key="t-1",
        body="first",
        occurred_at="2026-11-21T10:00:00+00:00",
    )
    assert later["conversation_id"] == earlier["conversation_id"]
    await settle(runtime)
    status, body = await api.get(f"/v1/conversations/{later['conversation_id']}")
    assert status == 200
    assert [m["body"] for m in body["messages"]] == ["first", "second"]
    assert body["messages"][0]["occurred_at"] == "2026-11-21T10:00:00Z"
    second = body["messages"][1]
    assert second["from"] == {"kind": "email", "address": "ann@example.com", "display_name": "Ann"}
    assert second["subject"] == "Hi"
    assert second["attachments"] == [
        {
            "name": "photo.jpg",
            "content_type": "image/jpeg",
            "size": 2048,
            "sha256": "a" * 64,
            "url": None,
        }
    ]
    assert body["contact"]["identities"] == [{"kind": "email", "address": "ann@example.com"}]


async def test_a_new_contact_conversation_and_message_get_time_ordered_ids(api: Api) -> None:
    first = await api.receive(body="First")
    await asyncio.sleep(0.002)
    second = await api.receive(body="Second")
    for key in ("conversation_id", "contact_id", "message_id"):
        assert UUID(first[key]).version == UUID(second[key]).version == 7
        assert first[key] < second[key]  # later ids sort after earlier ones, as text too
