"""The same events give the same read models embedded and scaled, through real Kafka."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import Settings
from infra.runtime import Runtime, build
from tests.kafka.conftest import PARTITIONS
from tests.kafka.scenario import Scenario
from tests.kafka.support import (
    Process,
    assigned_partitions,
    caught_up,
    copy_sqlite_log_to_postgres,
    copy_vault,
    differences,
    read_models,
    wait_until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]


def test_a_scenario_run_embedded_and_scaled_with_two_workers_gives_identical_read_models(
    tmp_path: Path, scaled_settings: Settings, scaled: Runtime
) -> None:
    # Embedded: SQLite and the in-process feed, projections applied as events are saved.
    # Ids and ciphertexts are random, so "the same scenario" is its recorded events: the
    # scaled side gets exactly those (same bytes, same notification ids).
    embedded = build(
        Settings(data_dir=tmp_path / "embedded", master_key=scaled_settings.master_key)
    )
    try:
        embedded.start()
        scenario = Scenario(embedded.app)
        scenario.setup()
        for _ in range(12):
            scenario.step(50)
        embedded.stop()
        embedded.catch_up()
        expected = read_models(embedded)
        assert copy_vault(embedded, scaled) > 0  # before any worker starts
    finally:
        embedded.close()
    assert sum(map(len, expected.values())) > 500  # a scenario of some size

    assert scaled_settings.database_url is not None
    copied = copy_sqlite_log_to_postgres(
        tmp_path / "embedded" / "events.sqlite", scaled_settings.database_url
    )
    assert copied > 1000
    assert read_models(scaled) != expected  # nothing projected yet on this side

    logs = tmp_path / "logs"
    logs.mkdir()
    workers = [Process(scaled_settings, logs, "projections") for _ in range(2)]
    processes = list(workers)
    try:
        # both workers share the partitions before anything is published
        for worker in workers:
            assert wait_until(lambda w=worker: assigned_partitions(w.text()), 60), worker.text()
        processes.append(Process(scaled_settings, logs, "relay"))
        assert wait_until(caught_up(scaled, PARTITIONS), timeout=90), [p.text() for p in processes]
        actual = read_models(scaled)
        assert actual == expected, differences(actual, expected)
        for process in processes:
            assert process.popen.poll() is None, process.text()  # none of them crashed
        for worker in workers:  # both took part to the end
            assert 0 < len(assigned_partitions(worker.text())) < PARTITIONS, worker.text()
    finally:
        for process in processes:
            process.stop()
