"""Scaled HTTP: PostgreSQL writes, read models from Kafka workers, read-your-writes across
processes; and nothing personal on the topic in clear."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer, TopicPartition

from infra.config import Settings
from infra.http.app import PathOnlyAccessLogger, create_app
from infra.kafka.commands import projection_targets
from infra.kafka.messages import events_topic
from infra.kafka.relay import Relay
from infra.kafka.targets import ProjectionTarget
from infra.kafka.worker import run_workers
from infra.runtime import EVENTS_TABLE, Runtime, build
from projections import inbox
from tests.helpers import Api
from tests.integration.test_feed import receive_many
from tests.integration.test_workflows import receive
from tests.kafka.test_targets import Recording, seen
from tests.scan import needles

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


@contextlib.asynccontextmanager
async def bus(settings: Settings, runtime: Runtime, workers: bool = True) -> AsyncIterator[Relay]:
    """The relay and (one member per projection of) a worker, in this event loop."""
    stop = asyncio.Event()
    app = runtime.app
    relay = Relay(settings, app.recorder, app.mapper, runtime.readdb, listen_channel=EVENTS_TABLE)
    tasks = [asyncio.create_task(relay.run(stop))]
    if workers:
        tasks.append(asyncio.create_task(run_workers(settings, projection_targets(runtime), stop)))
    try:
        yield relay
    finally:
        stop.set()
        await asyncio.gather(*tasks)


@contextlib.asynccontextmanager
async def client_of(runtime: Runtime) -> AsyncIterator[TestClient[Any, Any]]:
    app = create_app(runtime)
    server = TestServer(app, host="127.0.0.1", access_log_class=PathOnlyAccessLogger)
    client: TestClient[Any, Any] = TestClient(server)
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def test_two_scaled_http_processes_read_their_own_writes_from_kafka_workers(
    scaled_settings: Settings, scaled: Runtime
) -> None:
    other = build(scaled_settings)  # a second HTTP process on the same database
    try:
        async with (
            bus(scaled_settings, scaled),
            client_of(scaled) as first_client,
            client_of(other) as second_client,
        ):
            first = await Api.for_new_tenant(first_client, scaled, "Acme Support")
            second = Api(second_client, first.token, first.tenant_id)
            visitor = {"kind": "visitor", "address": "v-1"}
            received = await first.receive(channel="webchat", sender=visitor, to=None)
            conversation = received["conversation_id"]
            # interactions are acknowledged before projection; notes wait for it
            for _ in range(200):
                status, _ = await second.get(f"/v1/conversations/{conversation}")
                if status == 200:
                    break
                await asyncio.sleep(0.05)
            assert status == 200
            for i in range(5):
                api = (first, second)[i % 2]
                reader = (second, first)[i % 2]
                began = time.monotonic()
                path = f"/v1/conversations/{conversation}/notes"
                status, _ = await api.post(path, {"body": f"n{i}"})
                assert status == 201
                # answered once the worker applied it, well before the 10 s bound ran out
                assert time.monotonic() - began < 5
                status, body = await reader.get(f"/v1/conversations/{conversation}")
                assert status == 200
                # visible at once, through the other process
                assert [n["body"] for n in body["notes"]] == [f"n{j}" for j in range(i + 1)]
            # /ready reports each projection's watermark, and it reaches the log's head
            for _ in range(200):
                ready = await (await first_client.get("/ready")).json()
                head = ready["event_store"]["position"]
                if ready["projections"]["inbox"]["lag"] == 0:
                    break
                await asyncio.sleep(0.05)
            assert ready["relay"] == {"position": head, "lag": 0}
            assert ready["projections"]["inbox"] == {"position": head, "lag": 0, "error": None}
    finally:
        other.close()


async def raw_records(settings: Settings) -> list[bytes]:
    """Every record on the events topic as raw bytes: key, headers and value."""
    name = events_topic(settings.kafka_topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in range(settings.kafka_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        found: list[bytes] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for r in records:
                    headers = b"".join(k.encode() + v for k, v in r.headers)
                    found.append((r.key or b"") + headers + (r.value or b""))
        return found
    finally:
        with contextlib.suppress(asyncio.CancelledError):  # see tests/kafka/support.py
            await consumer.stop()


async def test_nothing_personal_is_on_the_kafka_topic_in_clear(
    scaled_settings: Settings, scaled: Runtime
) -> None:
    async with client_of(scaled) as client, bus(scaled_settings, scaled, workers=False) as relay:
        api = await Api.for_new_tenant(client, scaled, "Plaintext Probe Ltd")
        personal = {
            "phone": "+447700900417",
            "email": "wilhelmina.fairweather@example.org",
            "name": "Wilhelmina Fairweather",
            "body": "my card ends 4242 and I live at 9 Quince Lane",
            "visitor": "visitor-quince-77",
        }
        name = personal["name"]
        phone = {"kind": "phone", "address": personal["phone"], "display_name": name}
        await api.receive(sender=phone, body=personal["body"])
        await api.receive(
            channel="email",
            provider="postmark",
            sender={"kind": "email", "address": personal["email"], "display_name": name},
            to={"kind": "email", "address": "help@example.com"},
            subject="Quince Lane delivery",
            body=personal["body"],
        )
        visitor = {"kind": "visitor", "address": personal["visitor"]}
        await api.receive(channel="webchat", provider="webchat", sender=visitor, to=None)
        latest = await asyncio.to_thread(scaled.app.recorder.max_notification_id)
        for _ in range(300):
            if relay.position >= (latest or 0):
                break
            await asyncio.sleep(0.05)
        assert relay.position == latest
        records = await raw_records(scaled_settings)
    assert len(records) == latest  # every event is on the topic, each once
    blob = b"\x00".join(records)
    assert b"Plaintext Probe Ltd" in blob  # real payloads are scanned (a business name is public)
    hits = [p for p in needles(*personal.values(), "Quince Lane") if p in blob]
    assert hits == []


async def test_an_erasure_is_told_on_the_topic_and_nothing_personal_is_there(
    scaled_settings: Settings, scaled: Runtime
) -> None:
    personal = ["+447700900418", "Bartholomew Inkwell", "parcel PLUMTREE-5512 is missing"]
    async with client_of(scaled) as client, bus(scaled_settings, scaled) as relay:
        api = await Api.for_new_tenant(client, scaled, "Erasure Probe Ltd")
        sender = {"kind": "phone", "address": personal[0], "display_name": personal[1]}
        received = await api.receive(sender=sender, body=personal[2])
        status, outcome = await api.post(f"/v1/contacts/{received['contact_id']}/erasure", {})
        assert status == 200
        assert {"kind": "contact", "id": received["contact_id"], "status": "erased"} in outcome[
            "subjects"
        ]
        latest = await asyncio.to_thread(scaled.app.recorder.max_notification_id)
        for _ in range(300):
            if relay.position >= (latest or 0):
                break
            await asyncio.sleep(0.05)
        assert relay.position == latest
        # the workers have applied it: the contact is gone from the read models
        assert (await api.get(f"/v1/contacts/{received['contact_id']}"))[0] == 404
    name = events_topic(scaled_settings.kafka_topic_prefix)
    consumer = AIOKafkaConsumer(bootstrap_servers=scaled_settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for p in range(scaled_settings.kafka_partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await consumer.stop()
    erased = [r for r in records if dict(r.headers)["cc-topic"].endswith(b"Contact.Erased")]
    assert len(erased) == 1  # a CRM consuming the topic learns to delete its copy...
    header = dict(erased[0].headers)
    assert header["cc-originator-id"].decode() == received["contact_id"]
    blob = b"\x00".join(
        (r.key or b"") + b"".join(k.encode() + v for k, v in r.headers) + (r.value or b"")
        for r in records
    )
    assert b"Erasure Probe Ltd" in blob  # real payloads are scanned
    assert [p for p in needles(*personal, "PLUMTREE-5512") if p in blob] == []  # ...and no more


async def test_a_workflow_on_two_kafka_members_reacts_once_to_each_event(
    scaled_settings: Settings, scaled: Runtime
) -> None:
    from infra.kafka.targets import PolicyTarget
    from tests.kafka.test_targets import NoteOnOpen

    topic = events_topic(scaled_settings.kafka_topic_prefix)
    policies = [PolicyTarget(NoteOnOpen(), scaled.make_app(), topic) for _ in range(2)]
    stop = asyncio.Event()
    members = [asyncio.create_task(run_workers(scaled_settings, [p], stop)) for p in policies]
    try:
        async with bus(scaled_settings, scaled):
            tenant, _ = await asyncio.to_thread(scaled.app.register_tenant, "Acme")
            for i in range(6):
                await asyncio.to_thread(receive, scaled, tenant, f"visitor-{i}")

            def notes() -> list[list[str]]:
                with scaled.readdb.read() as tx:
                    rows = inbox.list_conversations(tx, str(tenant))
                    listed = [inbox.list_messages(tx, str(tenant), r["id"]) for r in rows]
                return [[m["author"] for m in entries if m["kind"] == "note"] for entries in listed]

            for _ in range(400):
                if (await asyncio.to_thread(notes)) == [["system:hi"]] * 6:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.0)  # time enough for a second reaction, were there one
            assert (await asyncio.to_thread(notes)) == [["system:hi"]] * 6
    finally:
        stop.set()
        await asyncio.gather(*members)


class FailsOnce(Recording):
    """Fails the first time it reaches one event (a transient error), then works."""

    name = "fails-once"
    once_at: ClassVar[int | None] = None
    failures: ClassVar[int] = 0

    def apply(self, tx: Any, event: Any, position: int) -> None:
        if position == self.once_at and FailsOnce.failures == 0:
            FailsOnce.failures += 1
            raise RuntimeError("transient failure")
        super().apply(tx, event, position)


async def test_a_batch_that_fails_is_retried_from_what_is_stored_never_skipped(
    scaled_settings: Settings, scaled: Runtime
) -> None:
    topic = events_topic(scaled_settings.kafka_topic_prefix)
    target = ProjectionTarget(FailsOnce(), scaled.readdb, scaled.app.mapper, topic)
    await asyncio.to_thread(target.setup)
    tenant, _ = await asyncio.to_thread(scaled.app.register_tenant, "Acme")
    await asyncio.to_thread(receive_many, scaled, tenant, 30)
    received = [
        n.id
        for n in await asyncio.to_thread(scaled.app.recorder.select_notifications, None, 1000)
        if n.topic.endswith("MessageReceived")
    ]
    FailsOnce.once_at, FailsOnce.failures = received[len(received) // 2], 0
    stop = asyncio.Event()
    async with bus(scaled_settings, scaled, workers=False):
        member = asyncio.create_task(run_workers(scaled_settings, [target], stop))
        try:
            for _ in range(300):
                if await asyncio.to_thread(seen, scaled) == received:
                    break
                await asyncio.sleep(0.05)
        finally:
            stop.set()
            await member
    assert FailsOnce.failures == 1
    assert await asyncio.to_thread(seen, scaled) == received  # all of them, each once
