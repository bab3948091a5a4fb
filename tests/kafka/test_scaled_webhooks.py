"""Outbound webhooks in scaled mode: two HTTP processes share PostgreSQL while Kafka
workers build the other read models. The webhook outbox follows the event store's log in
order in every process, one process at a time dispatches, and a receiver gets every event
once, in order per conversation, signed; an erasure is told."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from infra.config import Settings
from infra.runtime import Runtime, build
from tests.helpers import Api, until
from tests.kafka.test_scaled_http import bus, client_of
from tests.webhooks.conftest import Receiver, running_receiver

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@pytest.fixture
async def hook_receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as receiver:
        yield receiver


async def test_two_scaled_processes_deliver_every_event_once_in_order_per_conversation(
    scaled_settings: Settings, hook_receiver: Receiver
) -> None:
    settings = scaled_settings.with_overrides(
        webhook_allowed_networks=("127.0.0.1/32",), webhook_interval_ms=50
    )
    first, second = build(settings), build(settings)
    runtimes: list[Runtime] = [first, second]
    try:
        for runtime in runtimes:
            await asyncio.to_thread(runtime.start)
        async with (
            bus(settings, first),
            client_of(first) as first_client,
            client_of(second) as second_client,
        ):
            api = await Api.for_new_tenant(first_client, first, "Hooked Ltd")
            other = Api(second_client, api.token, api.tenant_id)
            status, hook = await api.post(
                "/v1/webhooks",
                {
                    "url": hook_receiver.url(),
                    "event_types": ["conversation.opened", "message.received", "data.erased"],
                },
            )
            assert status == 201, hook
            hook_receiver.secrets.append(hook["secret"])
            # the second process must see the subscription in its own outbox (log order)
            sent: dict[str, list[str]] = {}
            contacts: list[str] = []
            for i in range(12):
                writer = api if i % 2 else other  # both processes write
                received = await writer.receive(
                    channel="webchat",
                    sender={"kind": "visitor", "address": f"visitor-{i % 3}"},
                    to=None,
                    body=f"message {i}",
                )
                sent.setdefault(received["conversation_id"], []).append(received["message_id"])
                contacts.append(received["contact_id"])
            assert len(sent) == 3
            expected = 3 + 12  # three conversations opened, twelve messages

            await until(lambda: len(hook_receiver.unique()) >= expected, "every delivery")
            status, erased = await api.post(f"/v1/contacts/{contacts[0]}/erasure", {})
            assert status == 200, erased
            await until(lambda: bool(hook_receiver.of_type("data.erased")), "data.erased")
            await asyncio.sleep(0.5)  # a second dispatcher would send its copies now

        # Exactly once: one dispatcher at a time, so no event was sent twice.
        assert hook_receiver.unverified == 0
        ids = [d.id for d in hook_receiver.deliveries]
        assert len(ids) == len(set(ids)), "an event was delivered twice"
        messages = hook_receiver.of_type("message.received")
        assert len(messages) == 12
        for conversation, message_ids in sent.items():
            got = [
                d.payload["data"]["message_id"]
                for d in messages
                if d.payload["data"]["conversation_id"] == conversation
            ]
            assert got == message_ids, "per-conversation order"
            opened = [
                i
                for i, d in enumerate(hook_receiver.unique())
                if d.payload["type"] == "conversation.opened"
                and d.payload["data"]["conversation_id"] == conversation
            ]
            first_message = next(
                i
                for i, d in enumerate(hook_receiver.unique())
                if d.payload["type"] == "message.received"
                and d.payload["data"]["conversation_id"] == conversation
            )
            assert opened
            assert opened[0] < first_message
        kinds = {d.payload["data"]["subject"] for d in hook_receiver.of_type("data.erased")}
        assert "contact" in kinds
        body: Any = b"".join(d.body for d in hook_receiver.deliveries)
        assert b"message 1" not in body  # P16: ids and metadata only by default
    finally:
        for runtime in runtimes:
            await asyncio.to_thread(runtime.close)
