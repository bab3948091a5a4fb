"""Fault tests on the real broker: whatever happens to the processes, every read model ends
equal to what the embedded mode builds from the same log — nothing lost, nothing twice."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from infra.config import Settings
from infra.kafka.messages import events_topic
from infra.runtime import Runtime
from tests.kafka.conftest import PARTITIONS
from tests.kafka.support import (
    Process,
    Stream,
    assigned_partitions,
    behind,
    caught_up,
    differences,
    embedded_reference,
    end_offsets,
    read_models,
    relay_position,
    tracking,
    wait_until,
    worker_offsets,
    worker_story,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def applied_some(runtime: Runtime) -> bool:
    return any(n > 0 for (name, _), n in tracking(runtime).items() if name == "inbox")


def assert_caught_up(runtime: Runtime, logs: Path) -> None:
    assert wait_until(caught_up(runtime, PARTITIONS), timeout=120), (
        behind(runtime, PARTITIONS) + "\n" + worker_story(logs)
    )


def assert_equal_to_embedded(runtime: Runtime, settings: Settings, tmp_path: Path) -> None:
    assert_caught_up(runtime, tmp_path / "logs")
    expected = embedded_reference(runtime, tmp_path / "reference")
    assert sum(map(len, expected.values())) > 100
    actual = read_models(runtime)
    assert actual == expected, differences(actual, expected)


def test_a_worker_killed_mid_stream_and_restarted_loses_and_repeats_nothing(
    tmp_path: Path, scaled_settings: Settings, scaled: Runtime
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    relay = Process(scaled_settings, logs, "relay")
    first = Process(scaled_settings, logs, "projections")
    second = Process(scaled_settings, logs, "projections")
    started = [relay, first, second]
    try:
        with Stream(scaled) as stream:
            assert wait_until(lambda: assigned_partitions(first.text()), 60), first.text()
            assert wait_until(lambda: applied_some(scaled), 60)
            assert stream.running
            first.kill()  # mid-stream: its batch in flight is lost with it, uncommitted
            killed_at = stream.latest()
            time.sleep(1.0)
            restarted = Process(scaled_settings, logs, "projections")
            started.append(restarted)
            assert wait_until(lambda: assigned_partitions(restarted.text()), 60)
            assert wait_until(lambda: stream.latest() > killed_at + 200, 60)
        assert_equal_to_embedded(scaled, scaled_settings, tmp_path)
    finally:
        for process in started:
            process.stop()


def test_restarting_the_relay_and_republishing_loses_and_repeats_nothing(
    tmp_path: Path, scaled_settings: Settings, scaled: Runtime
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    relay = Process(scaled_settings, logs, "relay")
    started = [relay, *(Process(scaled_settings, logs, "projections") for _ in range(2))]
    try:
        with Stream(scaled) as stream:
            assert wait_until(lambda: relay_position(scaled) > 0, 60), relay.text()
            relay.kill()  # mid-stream
            killed_at = stream.latest()
            again = Process(scaled_settings, logs, "relay")
            started.append(again)
            assert wait_until(lambda: relay_position(scaled) > killed_at, 60), again.text()
        assert_caught_up(scaled, logs)

        # A relay that crashed after Kafka acknowledged but before it saved its position
        # publishes that stretch again: rewind the position to make sure it happens.
        again.stop()
        latest = stream.latest()
        with psycopg.connect(scaled_settings.database_url or "") as conn:
            conn.execute(
                "UPDATE cc_kafka_relay SET position = %s WHERE topic = %s",
                (latest // 2, events_topic(scaled_settings.kafka_topic_prefix)),
            )
        before = sum(end_offsets(scaled_settings).values())
        started.append(Process(scaled_settings, logs, "relay"))
        assert wait_until(lambda: relay_position(scaled) == latest, 60)
        ends = end_offsets(scaled_settings)
        assert sum(ends.values()) > before  # the duplicates are on the topic
        # the workers have read them all (and applied none of them)
        assert wait_until(
            lambda: all(worker_offsets(scaled).get(p, -1) == end - 1 for p, end in ends.items()),
            60,
        )
        assert_equal_to_embedded(scaled, scaled_settings, tmp_path)
    finally:
        for process in started:
            process.stop()


def test_a_second_worker_joining_mid_stream_takes_partitions_and_changes_nothing(
    tmp_path: Path, scaled_settings: Settings, scaled: Runtime
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    relay = Process(scaled_settings, logs, "relay")
    first = Process(scaled_settings, logs, "projections")
    started = [relay, first]
    try:
        with Stream(scaled) as stream:
            assert wait_until(lambda: assigned_partitions(first.text()) == set(range(4)), 60)
            assert wait_until(lambda: applied_some(scaled), 60)
            assert stream.running
            joined_at = stream.latest()
            second = Process(scaled_settings, logs, "projections")
            started.append(second)
            assert wait_until(lambda: assigned_partitions(second.text()), 60), second.text()
            assert wait_until(lambda: stream.latest() > joined_at + 200, 60)
        assert "revoked" in first.text()  # a real rebalance: the first gave partitions up
        assert_equal_to_embedded(scaled, scaled_settings, tmp_path)
    finally:
        for process in started:
            process.stop()
