"""Scaled-mode fixtures: a real Kafka broker for the session (never skipped when missing),
and settings for a fresh PostgreSQL database and fresh topic per test."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.config import Settings, TestServices
from infra.localkafka import LocalKafka
from infra.runtime import Runtime, build

PARTITIONS = 4


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """CC_TEST_KAFKA_BOOTSTRAP, or a throwaway broker. A missing Kafka is an error."""
    given = TestServices.from_env().kafka_bootstrap
    if given:
        yield given
        return
    broker = LocalKafka()
    broker.start()
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def scaled_settings(postgres_url: str, kafka_bootstrap: str, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path / "data",
        database_url=postgres_url,
        master_key=os.urandom(32),
        kafka_bootstrap=kafka_bootstrap,
        kafka_topic_prefix=f"cc-test-{secrets.token_hex(4)}",
        kafka_partitions=PARTITIONS,
        kafka_session_timeout_ms=3_000,
        projection_wait_ms=10_000,
    )


@pytest.fixture
def scaled(scaled_settings: Settings) -> Iterator[Runtime]:
    """The write side of a scaled process (HTTP's runtime): PostgreSQL, no projections."""
    runtime = build(scaled_settings)
    try:
        yield runtime
    finally:
        runtime.close()
