"""The versioned message shape on the events topic, and how events are keyed."""

from __future__ import annotations

import secrets
from pathlib import Path
from uuid import UUID

import pytest
from aiokafka.partitioner import DefaultPartitioner

from infra.config import ConfigError, Settings
from infra.kafka.messages import (
    H_SCHEMA,
    MessageFormatError,
    event_key,
    from_record,
    partition_for,
    to_message,
)
from infra.runtime import build
from tests.integration.test_feed import receive_many


def test_a_stored_event_crosses_kafka_unchanged_and_is_keyed_by_tenant_and_aggregate(
    tmp_path: Path,
) -> None:
    runtime = build(Settings(data_dir=tmp_path / "data"))
    try:
        tenant, _ = runtime.app.register_tenant("Acme")
        receive_many(runtime, tenant, 2)
        stored = runtime.app.recorder.select_notifications(start=None, limit=100)
        for n in stored:
            event = runtime.app.mapper.to_domain_event(n)
            message = to_message(n, event)
            received = from_record(3, 17, message.value, message.headers)
            assert received.notification == n  # id, aggregate, version, topic, state bytes
            assert (received.partition, received.offset) == (3, 17)
            originator = UUID(str(n.originator_id))
            assert message.key == event_key(tenant, originator)
            assert message.tenant_id == tenant  # a Tenant's own events: its own id
    finally:
        runtime.close()


def test_the_partition_is_the_one_any_kafka_client_computes_for_the_key() -> None:
    default = DefaultPartitioner()
    for _ in range(200):
        key = f"{UUID(bytes=secrets.token_bytes(16))}/{UUID(bytes=secrets.token_bytes(16))}"
        partitions = secrets.choice([1, 3, 12, 64])
        everyone = list(range(partitions))
        assert partition_for(key.encode(), partitions) == default(key.encode(), everyone, everyone)


def test_a_record_of_another_schema_version_is_refused() -> None:
    with pytest.raises(MessageFormatError, match="schema"):
        from_record(0, 5, b"{}", [(H_SCHEMA, b"2")])
    with pytest.raises(MessageFormatError, match="valid"):
        from_record(0, 5, b"{}", [(H_SCHEMA, b"1")])


def test_kafka_needs_postgresql_and_a_plain_topic_prefix() -> None:
    with pytest.raises(ConfigError, match="CC_DATABASE_URL"):
        Settings.from_env({"CC_KAFKA_BOOTSTRAP": "127.0.0.1:9092"})
    with pytest.raises(ConfigError, match="PREFIX"):
        Settings.from_env(
            {
                "CC_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
                "CC_DATABASE_URL": "postgresql://x@h/db",
                "CC_KAFKA_TOPIC_PREFIX": "a b",
            }
        )
    settings = Settings.from_env(
        {"CC_KAFKA_BOOTSTRAP": "127.0.0.1:9092", "CC_DATABASE_URL": "postgresql://x@h/db"}
    )
    assert settings.uses_kafka
    assert settings.kafka_topic_prefix == "contact-centre"
