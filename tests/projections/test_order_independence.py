"""Read models must not depend on the order of events *across* aggregates.

In scaled mode Kafka partitions events by tenant and aggregate: a contact's events and its
conversations' events reach a projection worker in any interleaving, only each
aggregate's own events keep their order. Here one recorded day (with privacy actions in
it) is applied in the log's order and in orders Kafka could deliver, and every read-model
table must come out the same.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from contact_centre.conversations import Conversation
from infra.db import Database, PostgresDatabase, SQLiteDatabase
from infra.runtime import Runtime, all_projections, partitioned_projections
from projections.crm import CrmProjection
from projections.inbox import InboxProjection
from projections.retention import RetentionLedgerProjection
from projections.webhooks import WebhooksProjection
from tests.conftest import BACKENDS


def _events(runtime: Runtime) -> list[tuple[int, Any]]:
    app = runtime.app
    return [
        (n.id, app.mapper.to_domain_event(n))
        for n in app.recorder.select_notifications(start=1, limit=1_000_000)
    ]


def _interleaved(events: list[tuple[int, Any]], rng: random.Random | None) -> list[Any]:
    """Each aggregate's events in order; aggregates interleaved at random, or (no rng)
    one whole aggregate after another, the last to appear first."""
    streams: dict[Any, list[tuple[int, Any]]] = {}
    for item in events:
        streams.setdefault(item[1].originator_id, []).append(item)
    queues = list(streams.values())
    if rng is None:
        return [item for stream in reversed(queues) for item in stream]
    out = []
    while queues:
        queue = rng.choice(queues)
        out.append(queue.pop(0))
        if not queue:
            queues.remove(queue)
    return out


def _apply(runtime: Runtime, path: Path, events: list[Any]) -> dict[str, list[tuple[Any, ...]]]:
    db = SQLiteDatabase(str(path))
    projections = partitioned_projections(runtime.vault)
    try:
        with db.transaction() as tx:
            for projection in projections:
                projection.setup(tx)
        return _dump_after(db, projections, events, 0)
    finally:
        db.close()


def test_every_read_model_is_the_same_whichever_aggregate_s_events_arrive_first(
    recorded: Runtime, tmp_path: Path
) -> None:
    events = _events(recorded)
    assert len(events) > 500
    in_log_order = _apply(recorded, tmp_path / "log.sqlite", events)
    assert sum(map(len, in_log_order.values())) > 500
    # answered within the service level: needs the queue's threshold (positive control)
    assert sum(row[8] for row in in_log_order["rm_metric_intervals"]) > 0
    orders = {
        "aggregates last-first": _interleaved(events, None),
        "random interleaving 1": _interleaved(events, random.Random(1)),
        "random interleaving 2": _interleaved(events, random.Random(2)),
    }
    for name, order in orders.items():
        assert order != events
        other = _apply(recorded, tmp_path / f"{name}.sqlite", order)
        differing = _differences(in_log_order, other)
        assert not differing, f"{name}: {differing}"


def _differences(
    expected: dict[str, list[Any]], actual: dict[str, list[Any]]
) -> dict[str, tuple[list[Any], list[Any]]]:
    """Per table whose rows differ: up to two rows only in ``actual``, two only in
    ``expected``."""
    return {
        table: (
            sorted(set(actual[table]) - set(rows), key=repr)[:2],
            sorted(set(rows) - set(actual[table]), key=repr)[:2],
        )
        for table, rows in expected.items()
        if actual[table] != rows
    }


def _dump_after(
    db: Database, projections: list[Any], events: list[Any], batch: int
) -> dict[str, list[tuple[Any, ...]]]:
    """The projections' rows after ``events``, applied to emptied tables one at a time
    (``batch`` 0) or ``batch`` at a time through ``apply_all``, as the feed does."""
    with db.transaction() as tx:
        for projection in projections:
            projection.reset(tx)
        if batch:
            for start in range(0, len(events), batch):
                chunk = events[start : start + batch]
                for projection in projections:
                    projection.apply_all(
                        tx, [(e, p) for p, e in chunk if projection.interested_in(type(e))]
                    )
        else:
            for position, event in events:
                for projection in projections:
                    if projection.interested_in(type(event)):
                        projection.apply(tx, event, position)
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with db.read() as tx:
        for projection in projections:
            for table in projection.tables:
                tx.execute(f"SELECT * FROM {table}")
                dump[table] = sorted(tx.fetchall(), key=repr)
    return dump


@pytest.mark.parametrize("backend", BACKENDS)
def test_events_taken_in_runs_leave_the_same_rows_as_one_at_a_time(
    recorded: Runtime,
    tmp_path: Path,
    backend: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An erasure's Closed and ContentErased events, and a write batch's new contacts,
    conversations and messages, taken a class at a time in set-based statements, change
    the read models as each event on its own would."""
    app = recorded.app
    recorded.catch_up()
    with recorded.readdb.read() as tx:
        tx.execute("SELECT tenant_id, id FROM rm_crm_contacts ORDER BY id")
        contacts = [(UUID(t), UUID(c)) for t, c in tx.fetchall()]
    for tenant_id, contact_id in contacts:  # every conversation closed and erased in runs
        app.run(
            lambda uow, t=tenant_id, c=contact_id: app.erase_contact_in(
                uow, t, c, "request:erasure"
            )
        )
    events = _events(recorded)
    erasures: dict[Any, int] = {}
    for _, event in events:
        if type(event) is Conversation.ContentErased:
            erasures[event.at] = erasures.get(event.at, 0) + 1
    assert max(erasures.values()) > 1  # positive control: one command erased several
    db: Database = (
        PostgresDatabase(request.getfixturevalue("postgres_url"))
        if backend == "postgres"
        else SQLiteDatabase(str(tmp_path / "runs.sqlite"))
    )
    projections = all_projections(recorded.vault)  # applied in log order here
    # positive control: the scenario's write batches reach the handlers as runs of many
    taken: dict[str, list[int]] = {}
    for cls, name in (
        (CrmProjection, "_registered_run"),
        (InboxProjection, "_opened_run"),
        (RetentionLedgerProjection, "_received_run"),
        (WebhooksProjection, "_contacts_created"),
    ):
        monkeypatch.setattr(cls, name, _counting(getattr(cls, name), taken.setdefault(name, [])))
    try:
        with db.transaction() as tx:
            for projection in projections:
                projection.setup(tx)
        one_by_one = _dump_after(db, projections, events, 0)
        assert sum(map(len, one_by_one.values())) > 500
        for batch in (len(events), 500, 7):
            in_runs = _dump_after(db, projections, events, batch)
            differing = _differences(one_by_one, in_runs)
            assert not differing, f"batches of {batch}: {differing}"
    finally:
        db.close()
    assert all(max(sizes) > 1 for sizes in taken.values()), taken


def _counting(handler: Any, sizes: list[int]) -> Any:
    def counted(self: Any, tx: Any, run: list[Any]) -> None:
        sizes.append(len(run))
        handler(self, tx, run)

    return counted
