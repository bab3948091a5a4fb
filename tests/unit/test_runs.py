"""How ``Projection.apply_all`` cuts a batch into runs taken a class at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from projections.base import Projection, Tx, handles, handles_run

AT = datetime(2026, 11, 22, tzinfo=UTC)
TENANT = uuid4()


@dataclass(frozen=True)
class Opened:
    originator_id: UUID
    at: datetime = AT
    tenant_id: UUID = TENANT


@dataclass(frozen=True)
class Received:
    originator_id: UUID
    at: datetime = AT
    tenant_id: UUID = TENANT


@dataclass(frozen=True)
class Noted:  # no run handler
    originator_id: UUID
    at: datetime = AT
    tenant_id: UUID = TENANT


class Recorder(Projection):
    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []

    @handles(Opened, Received, Noted)
    def _one(self, tx: Tx, e: Any, position: int) -> None:
        self.calls.append(("one", [position]))

    @handles_run(Opened, Received)
    def _many(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self.calls.append((type(run[0][0]).__name__, [position for _, position in run]))


def _applied(events: list[Any]) -> list[tuple[str, list[int]]]:
    projection = Recorder()
    projection.apply_all(None, [(e, n) for n, e in enumerate(events, start=1)])  # type: ignore[arg-type]
    return projection.calls


def test_a_batch_of_distinct_aggregates_is_one_run_taken_a_class_at_a_time() -> None:
    a, b = uuid4(), uuid4()
    events = [Opened(a), Received(a), Opened(b), Received(b)]
    assert _applied(events) == [("Opened", [1, 3]), ("Received", [2, 4])]


def test_a_second_event_of_one_class_for_an_aggregate_starts_the_next_run() -> None:
    a, b, c = uuid4(), uuid4(), uuid4()
    events = [Opened(a), Received(a), Received(b), Received(a), Opened(c), Received(c)]
    # a's second message would go before its first if taken in the same run; in the next
    # run c's message would go before c's opening (Received ranks first there)
    assert _applied(events) == [
        ("Opened", [1]),
        ("Received", [2, 3]),
        ("Received", [4]),
        ("Opened", [5]),
        ("one", [6]),
    ]


def test_an_event_without_a_run_handler_or_of_another_command_ends_the_run() -> None:
    a, b = uuid4(), uuid4()
    later = datetime(2026, 11, 23, tzinfo=UTC)
    events = [Opened(a), Opened(b), Noted(a), Received(a), Received(b, at=later)]
    assert _applied(events) == [("Opened", [1, 2]), ("one", [3]), ("one", [4]), ("one", [5])]
