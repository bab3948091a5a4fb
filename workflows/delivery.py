"""The delivery workflow: every outbound reply reaches the customer's channel once.

:class:`DeliveryPolicy` turns each ``Conversation.MessageSent`` into a ``Delivery``
(which provider, to whom, in which thread). :class:`DeliveryTicker` finds deliveries that
are due, records the intent of an attempt, calls the channel's sender, and records the
outcome: accepted, failed for good, or failed for now (retried with backoff). A call
whose outcome is unknown (a timeout after the request went out, or a crash mid-call) is
never repeated: the provider's status callback resolves it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from contact_centre.application import ContactCentre, UnitOfWork
from contact_centre.conversations import Conversation
from contact_centre.deliveries import OutboundJob, SendResult
from contact_centre.errors import DomainError
from projections import deliveries
from projections.base import Tx, micros
from workflows.base import Policy, Ticker, reacts_to

log = logging.getLogger(__name__)


class Sender(Protocol):
    """A channel adapter's outbound side: hand one message to the provider and say what
    it answered. Provider errors are answers (a :class:`SendResult`), not exceptions."""

    def send(self, job: OutboundJob) -> SendResult: ...


class DeliveryPolicy(Policy):
    name = "delivery"

    def __init__(self, max_age: timedelta = timedelta(hours=24)) -> None:
        # A reply older than this when the workflow first sees it (the workflow was just
        # installed over an existing log) is history, not something to send now.
        self.max_age = max_age

    @reacts_to(Conversation.MessageSent)
    def _message_sent(self, uow: UnitOfWork, e: Any, position: int) -> None:
        if uow.now - e.at > self.max_age:
            return
        uow.app.request_delivery_in(
            uow, e.tenant_id, e.originator_id, e.message_id, e.author, e.body
        )


class DeliveryTicker(Ticker):
    name = "delivery"
    interval = 0.2

    def __init__(
        self,
        app: ContactCentre,
        read: Callable[[], AbstractContextManager[Tx]],
        senders: Mapping[str, Sender],
        batch: int = 20,
    ) -> None:
        self.app = app
        self.read = read
        self.senders = senders
        self.batch = batch

    def tick(self, now: datetime) -> int:
        with self.read() as tx:
            due = deliveries.due(tx, micros(now), self.batch)
        for raw in due:
            self.deliver(UUID(raw), now)
        return len(due)

    def deliver(self, delivery_id: UUID, now: datetime) -> SendResult | None:
        """One attempt: intent, call, outcome. None when there was nothing to do."""
        app = self.app
        try:
            job, _ = app.run(lambda uow: app.start_delivery_in(uow, delivery_id, now))
        except DomainError as error:
            log.warning("delivery %s not started (%s)", delivery_id, error.code)
            return None
        if job is None:
            return None
        result = self._send(job)
        app.run(lambda uow: app.record_send_result_in(uow, job, result))
        if not result.ok:
            log.info(
                "delivery %s attempt %d: %s%s",
                delivery_id,
                job.attempt,
                result.error_code,
                " (in doubt: waiting for the provider's status)" if result.in_doubt else "",
            )
        return result

    def _send(self, job: OutboundJob) -> SendResult:
        sender = self.senders.get(job.provider)
        if sender is None:
            return SendResult.failed("no_sender")
        try:
            return sender.send(job)
        except Exception as error:
            # A sender bug: whether the provider got the message is unknown, so it is not
            # retried (never send twice); logged by type only (messages can quote input).
            log.error("sender %s raised %s", job.provider, type(error).__name__)
            return SendResult.doubtful(f"sender_error:{type(error).__name__}")
