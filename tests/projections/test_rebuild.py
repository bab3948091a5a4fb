"""Rebuilding read models from the log: one projection at a time (`projections rebuild
NAME`) and all of them in one pass (`projections rebuild all`) give exactly the rows and
positions the live feed gave, with every index back."""

from __future__ import annotations

import re
from typing import Any

import pytest

from infra.feed import LOG_PARTITION, read_tracking
from infra.runtime import Runtime
from tests.helpers import read_model_dump


def _indexes(rt: Runtime) -> list[tuple[Any, ...]]:
    with rt.readdb.read() as tx:
        tx.execute(  # of the read models' tables (a reset also makes cc_kafka_offsets)
            "SELECT name, tbl_name, sql FROM sqlite_master"
            " WHERE type = 'index' AND tbl_name LIKE 'rm%'"
        )
        return sorted(tx.fetchall(), key=repr)


def _positions(rt: Runtime) -> dict[str, int | None]:
    with rt.readdb.read() as tx:
        return {c.name: read_tracking(tx, c.name, LOG_PARTITION) for c in rt.consumers}


def _tamper(rt: Runtime) -> None:
    """Rows a rebuild must replace, not keep."""
    with rt.readdb.transaction() as tx:
        tx.execute("UPDATE rm_crm_contacts SET total_conversations = 99, last_contact_at = 1")
        tx.execute("UPDATE rm_conversations SET message_count = 99")
        tx.execute("DELETE FROM rm_timeline")


@pytest.fixture
def projected(recorded: Runtime) -> Runtime:
    recorded.catch_up(workflows=False)
    return recorded


def test_rebuilding_all_projections_in_one_pass_gives_the_rows_of_the_live_feed(
    projected: Runtime,
) -> None:
    rt = projected
    before, indexes = read_model_dump(rt), _indexes(rt)
    latest = rt.app.recorder.max_notification_id()
    assert latest is not None
    assert latest > 500
    assert all(before[t] for t in ("rm_crm_contacts", "rm_timeline", "rm_metric_intervals"))
    assert any(row[7] is not None for row in before["rm_crm_contacts"])  # last_contact_at
    query_indexes = {i for c in rt.consumers for i in c.projection.query_indexes}
    assert query_indexes <= {row[0] for row in indexes}
    _tamper(rt)
    seen: list[tuple[int, int]] = []

    def progress(position: int, read: int) -> None:
        if not seen:  # the indexes only queries read are gone while it runs
            assert not query_indexes & {row[0] for row in _indexes(rt)}
        seen.append((position, read))

    rt.feed.REBUILD_BATCH = 97  # several batches, each committing every projection
    read = rt.feed.rebuild_together(rt.consumers, progress)
    assert read == latest
    assert len(seen) > 5
    assert seen[-1] == (latest, latest)
    assert read_model_dump(rt) == before
    assert _indexes(rt) == indexes
    assert _positions(rt) == {c.name: latest for c in rt.consumers}


def test_rebuilding_one_projection_at_a_time_gives_the_rows_of_the_live_feed(
    projected: Runtime,
) -> None:
    rt = projected
    before, indexes = read_model_dump(rt), _indexes(rt)
    _tamper(rt)
    latest = rt.app.recorder.max_notification_id()
    for consumer in rt.consumers:
        assert rt.feed.rebuild(consumer) == latest
    assert read_model_dump(rt) == before
    assert _indexes(rt) == indexes


def test_the_topic_filter_passes_every_event_a_projection_handles(
    projected: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rebuild decodes an event only if a projection handles its stored topic: each
    projection must still get exactly the events whose decoded type it handles."""
    rt = projected
    app = rt.app
    log = [
        (n.id, type(app.mapper.to_domain_event(n)))
        for n in app.recorder.select_notifications(start=1, limit=1_000_000)
    ]
    got: dict[str, list[int]] = {c.name: [] for c in rt.consumers}
    for consumer in rt.consumers:
        projection = consumer.projection

        def apply_all(tx: Any, items: Any, name: str = consumer.name) -> None:
            got[name].extend(position for _, position in items)

        monkeypatch.setattr(projection, "apply_all", apply_all)
    rt.feed.rebuild_together(rt.consumers)
    for consumer in rt.consumers:
        handled = consumer.projection._interests  # its handlers and Tenant.Purged
        expected = [position for position, kind in log if kind in handled]
        if consumer.name in ("inbox", "crm", "timeline", "retention", "metrics", "webhooks"):
            assert expected, consumer.name  # the recorded day has events for these
        assert got[consumer.name] == expected, consumer.name


def test_query_indexes_name_indexes_the_projection_creates(projected: Runtime) -> None:
    for projection in (c.projection for c in projected.consumers):
        created = {
            m.group(1)
            for statement in projection.ddl
            if (m := re.match(r"CREATE INDEX IF NOT EXISTS (\w+) ", statement))
        }
        assert set(projection.query_indexes) <= created, projection.name


def _secure_delete(rt: Runtime) -> int:
    with rt.readdb.read() as tx:
        tx.execute("PRAGMA secure_delete")
        row = tx.fetchone()
    assert row is not None
    return int(row[0])


def test_a_rebuild_frees_pages_without_zeroing_them_and_then_zeroes_them_again(
    projected: Runtime,
) -> None:
    """The pages a rebuild frees held rows it writes back from the log: zeroing them
    costs time and protects nothing. Outside a rebuild, deleted rows are zeroed."""
    rt = projected
    with rt.readdb.read() as tx:
        tx.execute("PRAGMA secure_delete=ON")
    during: list[int] = []
    rt.feed.rebuild_together(rt.consumers, lambda position, read: during.append(_secure_delete(rt)))
    assert during
    assert set(during) == {0}
    assert _secure_delete(rt) == 1
