"""Kafka client plumbing shared by the relay and the workers: the topic, its creation."""

from __future__ import annotations

import asyncio
import logging

from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]

from infra.config import ConfigError, Settings
from infra.kafka.messages import events_topic

log = logging.getLogger(__name__)

# An event's sealed fields are base64 and a message body may be 1 MiB, so an event can be
# larger than Kafka's default 1 MB record limit: raise it for this topic and the producer.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
_TOPIC_ALREADY_EXISTS = 36


def bootstrap(settings: Settings) -> str:
    if not settings.kafka_bootstrap:
        raise ConfigError("CC_KAFKA_BOOTSTRAP is not set (the Kafka workers need it)")
    if not settings.database_url:
        raise ConfigError("CC_KAFKA_BOOTSTRAP needs CC_DATABASE_URL (scaled mode is PostgreSQL)")
    return settings.kafka_bootstrap


def topic(settings: Settings) -> str:
    return events_topic(settings.kafka_topic_prefix)


async def ensure_topic(settings: Settings) -> int:
    """Create the events topic if it is missing; return its partition count.

    An existing topic is used as it is: its partition count decides where each key goes,
    so it is never changed here (see docs/scaled.md before changing it by hand).
    """
    name = topic(settings)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap(settings), client_id="contact-centre")
    await admin.start()
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name,
                    num_partitions=settings.kafka_partitions,
                    replication_factor=settings.kafka_replication_factor,
                    topic_configs={"max.message.bytes": str(MAX_MESSAGE_BYTES)},
                )
            ]
        )
        for _, code, message in response.topic_errors:
            if code not in (0, _TOPIC_ALREADY_EXISTS):
                raise RuntimeError(f"cannot create topic {name}: error {code} {message}")
            if code == 0:
                log.info("created topic %s (%d partitions)", name, settings.kafka_partitions)
        for _ in range(100):
            described = await admin.describe_topics([name])
            partitions = described[0]["partitions"] if described else []
            if described and described[0]["error_code"] == 0 and partitions:
                return len(partitions)
            await asyncio.sleep(0.1)  # metadata of a topic just created may lag
        raise RuntimeError(f"topic {name} has no partitions")
    finally:
        await admin.close()
