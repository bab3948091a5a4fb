"""Deliveries: getting one outbound reply to the customer through its provider, once.

Calling a provider cannot be undone, so a delivery records its intent
(:class:`Delivery.AttemptStarted`) before the call and the outcome after it. An attempt
whose outcome was never recorded (the process died mid-call) stays ``sending``: it is
resolved by the provider's status callback, never by calling the provider again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from contact_centre.errors import ConflictError
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate

MAX_ATTEMPTS = 5
FIRST_BACKOFF = timedelta(seconds=2)
MAX_BACKOFF = timedelta(minutes=5)


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # waiting for its first attempt or for the backoff of a retry
    SENDING = "sending"  # an attempt is under way (or its outcome was lost in a crash)
    SENT = "sent"  # the provider accepted it
    DELIVERED = "delivered"  # the provider says it reached the customer
    READ = "read"
    FAILED = "failed"  # final: refused, undeliverable, or out of attempts


_RANK = {
    DeliveryStatus.PENDING: 0,
    DeliveryStatus.SENDING: 1,
    DeliveryStatus.SENT: 2,
    DeliveryStatus.DELIVERED: 3,
    DeliveryStatus.READ: 4,
}


def delivery_id(message_id: UUID) -> UUID:
    """One delivery per outbound message, whoever asks for it and however often."""
    return uuid5(NAMESPACE_URL, f"contact-centre:delivery:{message_id}")


def backoff(attempt: int) -> timedelta:
    """The wait after the ``attempt``-th transient failure: 2 s, 4 s, 8 s ... at most 5 min."""
    wait: timedelta = FIRST_BACKOFF * (2 ** max(attempt - 1, 0))
    return min(wait, MAX_BACKOFF)


@dataclass(frozen=True, slots=True)
class Route:
    """Where a reply goes and how it threads: opened only by the delivery workflow."""

    to: str  # the customer's address (phone, email, handle, visitor id)
    sender: str | None = None  # our address the customer wrote to
    thread: str | None = None  # the conversation's thread key
    subject: str | None = None  # email
    in_reply_to: str | None = None  # email Message-ID (or provider message id) replied to
    references: tuple[str, ...] = ()  # email References
    message_ref: str | None = None  # our own id for the outgoing message (email Message-ID)

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "to": self.to,
                "from": self.sender,
                "thread": self.thread,
                "subject": self.subject,
                "in_reply_to": self.in_reply_to,
                "references": list(self.references),
                "message_ref": self.message_ref,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> Route:
        doc = json.loads(text)
        return cls(
            to=doc["to"],
            sender=doc.get("from"),
            thread=doc.get("thread"),
            subject=doc.get("subject"),
            in_reply_to=doc.get("in_reply_to"),
            references=tuple(doc.get("references") or ()),
            message_ref=doc.get("message_ref"),
        )


@dataclass(frozen=True, slots=True)
class OutboundJob:
    """One attempt to hand a reply to a provider, as a channel adapter's sender sees it."""

    delivery_id: UUID
    tenant_id: UUID
    conversation_id: UUID
    message_id: UUID
    channel: str
    provider: str
    attempt: int
    body: str
    route: Route
    author: str = ""


@dataclass(frozen=True, slots=True)
class SendResult:
    """What the provider answered.

    ``ok``: it accepted the message (``provider_ref`` names it there). Otherwise
    ``transient`` failures (rate limits, 5xx, connection refused) are retried with backoff;
    ``in_doubt`` means the request may have reached the provider (a timeout after sending):
    it is left to the provider's status callback, never sent again blindly.
    """

    ok: bool
    provider_ref: str | None = None
    provider_status: str = ""
    error_code: str | None = None
    transient: bool = False
    in_doubt: bool = False

    @classmethod
    def accepted(cls, provider_ref: str, provider_status: str = "sent") -> SendResult:
        return cls(ok=True, provider_ref=provider_ref, provider_status=provider_status)

    @classmethod
    def failed(cls, error_code: str, *, transient: bool = False) -> SendResult:
        return cls(ok=False, error_code=error_code, transient=transient)

    @classmethod
    def doubtful(cls, error_code: str) -> SendResult:
        return cls(ok=False, error_code=error_code, in_doubt=True)


class Delivery(TenantAggregate):
    """The delivery of one outbound message. ``body`` and ``route`` are sealed under the
    conversation's scope: erasing the conversation makes an unsent reply unsendable."""

    class Requested(TenantAggregate.Created):
        conversation_id: UUID
        message_id: UUID
        channel: str
        provider: str
        author: str
        body: Sealed
        route: Sealed
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        conversation_id: UUID,
        message_id: UUID,
        channel: str,
        provider: str,
        author: str,
        body: Sealed,
        route: Sealed,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.channel = channel
        self.provider = provider
        self.author = author
        self.body = body
        self.route = route
        self.requested_at = at
        self.status = DeliveryStatus.PENDING
        self.attempts = 0
        self.due_at: datetime | None = at
        self.provider_ref: Sealed | None = None
        self.provider_status: str | None = None
        self.error_code: str | None = None

    @classmethod
    def request(
        cls,
        tenant_id: UUID,
        conversation_id: UUID,
        message_id: UUID,
        channel: str,
        provider: str,
        author: str,
        body: Sealed,
        route: Sealed,
        at: datetime,
    ) -> Delivery:
        return cls._create(
            cls.Requested,
            id=delivery_id(message_id),
            tenant_id=tenant_id,
            conversation_id=conversation_id,
            message_id=message_id,
            channel=channel,
            provider=provider,
            author=author,
            body=body,
            route=route,
            at=at,
        )

    # -- attempts ----------------------------------------------------------------------
    class AttemptStarted(TenantAggregate.Event):
        """The intent: recorded (committed) before the provider is called."""

        attempt: int
        at: datetime

    def start_attempt(self, at: datetime) -> int:
        if self.status is not DeliveryStatus.PENDING:
            raise ConflictError(f"delivery is {self.status.value}, not pending")
        if self.due_at is not None and self.due_at > at:
            raise ConflictError("delivery is not due yet")
        self._attempt_started(attempt=self.attempts + 1, at=at)
        return self.attempts

    @event(AttemptStarted)
    def _attempt_started(self, attempt: int, at: datetime) -> None:
        self.attempts = attempt
        self.status = DeliveryStatus.SENDING
        self.due_at = None

    class Accepted(TenantAggregate.Event):
        """The provider took the message; ``provider_ref`` (sealed) names it there."""

        attempt: int
        provider_ref: Sealed
        provider_status: str
        at: datetime

    def accept(
        self, attempt: int, provider_ref: Sealed, provider_status: str, at: datetime
    ) -> bool:
        if self.status is not DeliveryStatus.SENDING or attempt != self.attempts:
            return False  # a status callback got here first
        self._accepted(
            attempt=attempt, provider_ref=provider_ref, provider_status=provider_status, at=at
        )
        return True

    @event(Accepted)
    def _accepted(
        self, attempt: int, provider_ref: Sealed, provider_status: str, at: datetime
    ) -> None:
        self.status = DeliveryStatus.SENT
        self.provider_ref = provider_ref
        self.provider_status = provider_status

    class AttemptFailed(TenantAggregate.Event):
        """The provider refused or could not be reached. With ``retry_at`` the delivery
        waits and tries again; without, it has failed for good."""

        attempt: int
        error_code: str
        transient: bool
        retry_at: datetime | None
        at: datetime

    def fail_attempt(self, attempt: int, error_code: str, transient: bool, at: datetime) -> bool:
        if self.status is not DeliveryStatus.SENDING or attempt != self.attempts:
            return False
        retry_at = at + backoff(attempt) if transient and attempt < MAX_ATTEMPTS else None
        self._attempt_failed(
            attempt=attempt, error_code=error_code, transient=transient, retry_at=retry_at, at=at
        )
        return True

    @event(AttemptFailed)
    def _attempt_failed(
        self,
        attempt: int,
        error_code: str,
        transient: bool,
        retry_at: datetime | None,
        at: datetime,
    ) -> None:
        self.error_code = error_code
        if retry_at is None:
            self.status = DeliveryStatus.FAILED
        else:
            self.status = DeliveryStatus.PENDING
            self.due_at = retry_at

    # -- what the provider reports afterwards -------------------------------------------
    class StatusReported(TenantAggregate.Event):
        """A provider's status callback (or receipt, or bounce). It may resolve an attempt
        whose outcome was lost, so it can carry the provider's reference too."""

        status: str
        provider_status: str
        error_code: str | None
        provider_ref: Sealed | None
        at: datetime

    def report_status(
        self,
        status: DeliveryStatus,
        provider_status: str,
        error_code: str | None,
        provider_ref: Sealed | None,
        at: datetime,
    ) -> bool:
        """Record a reported status; False when it says nothing new (a repeat, or a late
        callback for an earlier stage)."""
        if self.status is DeliveryStatus.FAILED:
            return False
        if status is not DeliveryStatus.FAILED and _RANK[status] <= _RANK[self.status]:
            return False
        if status in (DeliveryStatus.PENDING, DeliveryStatus.SENDING):
            return False
        self._status_reported(
            status=status.value,
            provider_status=provider_status,
            error_code=error_code,
            provider_ref=provider_ref if self.provider_ref is None else None,
            at=at,
        )
        return True

    @event(StatusReported)
    def _status_reported(
        self,
        status: str,
        provider_status: str,
        error_code: str | None,
        provider_ref: Sealed | None,
        at: datetime,
    ) -> None:
        self.status = DeliveryStatus(status)
        self.provider_status = provider_status
        self.due_at = None
        if error_code is not None:
            self.error_code = error_code
        if provider_ref is not None:
            self.provider_ref = provider_ref
