"""Legal holds and data-subject requests (GDPR arts. 15-22; P8, P11 in PRIVACY.md)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.errors import ConflictError, ValidationError
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate

REQUEST_DEADLINE = timedelta(days=30)
MAX_EXTENSION = timedelta(days=60)  # GDPR art. 12(3): two further months at most
DUE_SOON = timedelta(days=7)  # when an open request is announced as due soon


class HoldTarget(StrEnum):
    CONTACT = "contact"  # the contact and all its conversations
    CONVERSATION = "conversation"
    TENANT = "tenant"  # everything of the tenant


class LegalHold(TenantAggregate):
    """While placed, the scopes it covers neither expire nor can be erased (P11)."""

    class Placed(TenantAggregate.Created):
        target_kind: str
        target_id: UUID
        reason: Sealed
        placed_by: str
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        target_kind: str,
        target_id: UUID,
        reason: Sealed,
        placed_by: str,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.target_kind = HoldTarget(target_kind)
        self.target_id = target_id
        self.reason = reason
        self.placed_by = placed_by
        self.placed_at = at
        self.released_at: datetime | None = None

    @classmethod
    def place(
        cls,
        hold_id: UUID,
        tenant_id: UUID,
        target: HoldTarget,
        target_id: UUID,
        reason: Sealed,
        placed_by: str,
        at: datetime,
    ) -> LegalHold:
        return cls._create(
            cls.Placed,
            id=hold_id,
            tenant_id=tenant_id,
            target_kind=target.value,
            target_id=target_id,
            reason=reason,
            placed_by=placed_by,
            at=at,
        )

    @property
    def index_key(self) -> str:
        return f"{self.target_kind.value}:{self.target_id}"

    class Released(TenantAggregate.Event):
        released_by: str
        at: datetime

    def release(self, released_by: str, at: datetime) -> None:
        if self.released_at is not None:
            raise ConflictError("this hold has already been released")
        self._released(released_by=released_by, at=at)

    @event(Released)
    def _released(self, released_by: str, at: datetime) -> None:
        self.released_at = at


class RequestKind(StrEnum):
    ACCESS = "access"
    PORTABILITY = "portability"
    RECTIFICATION = "rectification"
    RESTRICTION = "restriction"
    OBJECTION = "objection"
    ERASURE = "erasure"
    CONSENT_WITHDRAWAL = "consent_withdrawal"


class RequestStatus(StrEnum):
    OPEN = "open"
    FULFILLED = "fulfilled"
    REJECTED = "rejected"


class DataSubjectRequest(TenantAggregate):
    """A data subject's request, answered within 30 days (extendable with a reason)."""

    class Received(TenantAggregate.Created):
        kind: str
        contact_ids: list[UUID]
        identity_kind: str | None
        note: Sealed | None
        received_at: datetime
        due_at: datetime
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        kind: str,
        contact_ids: list[UUID],
        identity_kind: str | None,
        note: Sealed | None,
        received_at: datetime,
        due_at: datetime,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.kind = RequestKind(kind)
        self.contact_ids = list(contact_ids)
        self.received_at = received_at
        self.due_at = due_at
        self.status = RequestStatus.OPEN
        self.outcome: dict[str, Any] | None = None
        self.reminded_for: datetime | None = None  # the due date last announced

    @classmethod
    def receive(
        cls,
        request_id: UUID,
        tenant_id: UUID,
        kind: RequestKind,
        contact_ids: list[UUID],
        identity_kind: str | None,
        note: Sealed | None,
        received_at: datetime,
        at: datetime,
    ) -> DataSubjectRequest:
        if received_at > at + timedelta(minutes=5):
            raise ValidationError("received_at cannot be in the future")
        return cls._create(
            cls.Received,
            id=request_id,
            tenant_id=tenant_id,
            kind=kind.value,
            contact_ids=contact_ids,
            identity_kind=identity_kind,
            note=note,
            received_at=received_at,
            due_at=received_at + REQUEST_DEADLINE,
            at=at,
        )

    def _require_open(self) -> None:
        if self.status is not RequestStatus.OPEN:
            raise ConflictError(f"the request is already {self.status.value}")

    class DeadlineExtended(TenantAggregate.Event):
        due_at: datetime
        reason: Sealed
        at: datetime

    def extend(self, days: int, reason: Sealed, at: datetime) -> datetime:
        self._require_open()
        due_at = self.due_at + timedelta(days=days)
        if days < 1 or due_at > self.received_at + REQUEST_DEADLINE + MAX_EXTENSION:
            raise ValidationError("a deadline can be extended by at most 60 days in all")
        self._deadline_extended(due_at=due_at, reason=reason, at=at)
        return due_at

    @event(DeadlineExtended)
    def _deadline_extended(self, due_at: datetime, reason: Sealed, at: datetime) -> None:
        self.due_at = due_at

    class DueSoon(TenantAggregate.Event):
        """The open request falls due within ``DUE_SOON`` (integrations are told by the
        ``request.due`` webhook); announced once per due date."""

        due_at: datetime
        at: datetime

    def remind_due(self, at: datetime) -> bool:
        if self.status is not RequestStatus.OPEN or self.reminded_for == self.due_at:
            return False
        if self.due_at - at > DUE_SOON:
            return False
        self._due_soon(due_at=self.due_at, at=at)
        return True

    @event(DueSoon)
    def _due_soon(self, due_at: datetime, at: datetime) -> None:
        self.reminded_for = due_at

    class Fulfilled(TenantAggregate.Event):
        """``outcome`` describes what was done, per scope where it applies; no personal
        data (ids, statuses and counts only)."""

        outcome: dict[str, Any]
        at: datetime

    def fulfil(self, outcome: dict[str, Any], at: datetime) -> None:
        self._require_open()
        self._fulfilled(outcome=outcome, at=at)

    @event(Fulfilled)
    def _fulfilled(self, outcome: dict[str, Any], at: datetime) -> None:
        self.status = RequestStatus.FULFILLED
        self.outcome = outcome

    class Rejected(TenantAggregate.Event):
        reason: Sealed
        at: datetime

    def reject(self, reason: Sealed, at: datetime) -> None:
        self._require_open()
        self._rejected(reason=reason, at=at)

    @event(Rejected)
    def _rejected(self, reason: Sealed, at: datetime) -> None:
        self.status = RequestStatus.REJECTED
