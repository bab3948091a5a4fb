"""The routing workflow: offers waiting work to agents, expires offers, overflows work
that waited too long (or whose queue closed) and records SLA breaches.

- :class:`RoutingFeed` keeps a :class:`~workflows.routing_state.RoutingState` current: a
  feed consumer that starts from the beginning of the log in every process (the state
  lives in memory, so a restart rebuilds it from the events) and then follows the log.
- :class:`Router` is the ticker that acts: it asks the state for due timers and for
  decisions, and runs each as a command through the application service. The write side
  has the last word (``Conversation.offer`` and ``Agent.receive_offer`` check the
  invariants under optimistic concurrency), so routers in several processes can run at
  once: a refused decision is cancelled and the work looked at again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from contact_centre.application import ContactCentre, UnitOfWork
from contact_centre.errors import DomainError
from workflows.base import Ticker
from workflows.routing_state import EVENT_TYPES, Decision, Due, RoutingState

log = logging.getLogger(__name__)

Listener = Callable[[Sequence[Any], RoutingState], None]


class RoutingFeed:
    """An in-memory consumer of the whole log (no durable position: it rebuilds)."""

    name = "routing-state"
    inline = True

    def __init__(self, state: RoutingState | None = None) -> None:
        self.state = state or RoutingState()
        self.lock = threading.RLock()
        self._position = 0
        self.listeners: list[Listener] = []  # called after each batch, under the lock
        self.on_work: Callable[[], None] | None = None  # wakes the router

    def interested_in(self, event_type: type[Any]) -> bool:
        return event_type in EVENT_TYPES

    def position(self, partition: int = -1) -> int | None:
        return self._position

    def process(self, items: Sequence[Any], last_position: int, partition: int = -1) -> None:
        with self.lock:
            if last_position <= self._position:
                return
            events = [item.event for item in items]
            try:
                self.state.apply_all(events)
            except Exception:
                # A half-applied batch leaves the state unknown: start again from the log.
                log.exception("routing state failed at %d: rebuilding it", last_position)
                self.state = RoutingState()
                self._position = 0
                raise
            self._position = last_position
            for listener in self.listeners:
                try:
                    listener(events, self.state)
                except Exception:  # a push must never stop routing
                    log.exception("routing listener failed")
            self.state.retired.clear()
            has_work = self.state.has_work()
        if has_work and self.on_work is not None:
            self.on_work()


class Router(Ticker):
    name = "routing"
    interval = 0.5

    def __init__(
        self, app: ContactCentre, feed: RoutingFeed, batch: int = 200, rounds: int = 20
    ) -> None:
        self.app = app
        self.feed = feed
        self.batch = batch
        self.rounds = rounds
        self.offers = 0
        self.refused = 0

    def tick(self, now: datetime) -> int:
        with self.feed.lock:
            due = self.feed.state.due(now)
        done = sum(self._timer(item) for item in due)
        for _ in range(self.rounds):  # bounded: refused decisions come back as work
            with self.feed.lock:
                decisions = self.feed.state.decide(now, self.batch)
            if not decisions:
                break
            done += self._offer(decisions)
        return done

    def _offer(self, decisions: list[Decision]) -> int:
        outcomes = self.app.run_batch([_offer_command(self.app, d) for d in decisions])
        made = 0
        for decision, outcome in zip(decisions, outcomes, strict=True):
            if outcome.error is None:
                made += 1
                continue
            self.refused += 1
            if not isinstance(outcome.error, DomainError):
                log.error("offer failed: %s", type(outcome.error).__name__)
            with self.feed.lock:
                self.feed.state.cancel(decision)
        self.offers += made
        return made

    def _timer(self, due: Due) -> int:
        app = self.app
        command: Callable[[UnitOfWork], Any]
        if due.kind == "expire":
            assert due.agent_id is not None
            agent_id = due.agent_id
            command = lambda uow: app.expire_offer_in(  # noqa: E731
                uow, due.tenant_id, due.conversation_id, agent_id
            )
        elif due.kind == "overflow":
            command = lambda uow: app.overflow_in(  # noqa: E731
                uow, due.tenant_id, due.conversation_id, due.detail
            )
        else:
            assert due.queue_id is not None
            assert due.started is not None
            queue_id, started = due.queue_id, due.started
            command = lambda uow: app.record_sla_breach_in(  # noqa: E731
                uow,
                due.tenant_id,
                due.conversation_id,
                queue_id,
                due.detail,
                due.threshold_seconds,
                started,
            )
        try:
            result, _ = app.run(command)
        except DomainError as error:
            log.info("%s of %s not done (%s)", due.kind, due.conversation_id, error.code)
            return 0
        return 1 if result else 0


def _offer_command(app: ContactCentre, d: Decision) -> Callable[[UnitOfWork], Any]:
    def command(uow: UnitOfWork) -> Any:
        return app.offer_in(uow, d.tenant_id, d.conversation_id, d.agent_id, d.timeout_seconds)

    return command
