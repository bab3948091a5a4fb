"""Outbound webhooks: a tenant's subscriptions, and the reports of delivery attempts.

A subscription names a target URL, the event types it wants and the personal fields it
opted in to (by default payloads carry ids and metadata only: P16). Its URL and signing
secrets are sealed under the tenant's secrets scope. What each subscription is owed is
derived from the event log (``projections/webhooks.py``); the dispatcher
(``workflows/webhooks.py``) records the outcome of every attempt as a
:class:`WebhookReport`, so delivery state is event-derived and survives restarts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from contact_centre.errors import ConflictError, ValidationError
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate

# The catalogue of event types a subscription can ask for (docs/webhooks.md shows the
# payload of each). Names are permanent: receivers switch on them.
EVENT_TYPES: dict[str, str] = {
    "conversation.opened": "a conversation started (a new thread on any channel)",
    "conversation.assigned": "a conversation was assigned to an agent, or unassigned",
    "conversation.resolved": "an agent resolved a conversation",
    "conversation.reopened": "a resolved or pending conversation was opened again",
    "conversation.closed": "a conversation was closed for good",
    "message.received": "a customer's message arrived",
    "message.sent": "an agent's reply was recorded",
    "call.completed": "a call ended after it was answered",
    "call.missed": "a call ended unanswered (no answer, busy, failed or canceled)",
    "contact.created": "a contact was created (by a channel or through the API)",
    "contact.updated": "a contact's details, identities, tags, attributes or consent changed",
    "contact.merged": "two contacts were merged into one",
    "contact.restricted": "processing of a contact was restricted (GDPR art. 18 and 19)",
    "contact.restriction_lifted": "a restriction was lifted",
    "data.erased": "a contact's or a conversation's personal data was erased",
    "request.due": "a data-subject request is due within 7 days",
    "webhook.disabled": "another webhook endpoint of the tenant was disabled",
}

# Personal fields a subscription can opt in to; without them payloads carry ids and
# metadata only.
PERSONAL_FIELDS: dict[str, str] = {
    "contact_details": "the contact's name, identities (phone, email...) and external id",
    "contact_attributes": "the contact's CRM attributes",
    "message_content": "message text, subject and the sender's and recipient's addresses",
}

# Retries: exponential backoff with jitter (the dispatcher picks the jitter), for about a
# day after the first failed attempt; then the delivery is given up (a dead letter).
FIRST_RETRY = timedelta(seconds=5)
RETRY_FACTOR = 3
MAX_RETRY = timedelta(hours=6)
GIVE_UP_AFTER = timedelta(hours=24)
SECRET_GRACE_MAX = timedelta(days=7)
MAX_URL = 2_000
MAX_DESCRIPTION = 200


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # by the admin, by a 410 answer, or after sustained failure
    DELETED = "deleted"


class DisableReason(StrEnum):
    ADMIN = "admin"
    GONE = "gone"  # the endpoint answered 410 Gone
    FAILING = "failing"  # no successful delivery for GIVE_UP_AFTER


class AttemptOutcome(StrEnum):
    DELIVERED = "delivered"  # a 2xx answer
    RETRY = "retry"  # failed; tried again at ``retry_at``
    DEAD = "dead"  # failed and given up (or 410): a dead letter, replayable
    SUPPRESSED = "suppressed"  # not sent: the contact is restricted, or the endpoint off


class ReplayScope(StrEnum):
    DELIVERY = "delivery"
    DEAD_LETTERS = "dead_letters"
    RANGE = "range"


def retry_delay(attempt: int, jitter: float) -> timedelta:
    """The wait after the ``attempt``-th failure: 5 s, 15 s, 45 s ... at most 6 h, times
    ``jitter`` (0.75-1.25, so that a fleet of failed deliveries does not retry at once)."""
    if not 0.5 <= jitter <= 1.5:
        raise ValueError("jitter must be between 0.5 and 1.5")
    wait: timedelta = FIRST_RETRY * int(RETRY_FACTOR ** max(attempt - 1, 0))
    capped: timedelta = min(wait, MAX_RETRY)
    return capped * jitter


def next_retry(
    attempt: int, first_attempt_at: datetime, now: datetime, jitter: float
) -> datetime | None:
    """When to try again, or None when the next try would fall past the give-up horizon."""
    retry_at = now + retry_delay(attempt, jitter)
    return retry_at if retry_at - first_attempt_at <= GIVE_UP_AFTER else None


def delivery_id(subscription_id: UUID, event_ref: str) -> UUID:
    """One delivery per event per subscription: the stable ``webhook-id`` receivers dedupe
    on (``event_ref`` is the event's originator id and version)."""
    return uuid5(NAMESPACE_URL, f"contact-centre:webhook:{subscription_id}:{event_ref}")


def check_event_types(event_types: list[str]) -> list[str]:
    if not isinstance(event_types, list) or not event_types:
        raise ValidationError("event_types must be a non-empty list")
    unknown = sorted({str(t) for t in event_types} - set(EVENT_TYPES))
    if unknown:
        raise ValidationError(f"unknown event type(s): {', '.join(unknown)}")
    return sorted(set(event_types))


def check_personal_fields(fields: list[str]) -> list[str]:
    if not isinstance(fields, list):
        raise ValidationError("personal_fields must be a list")
    unknown = sorted({str(f) for f in fields} - set(PERSONAL_FIELDS))
    if unknown:
        raise ValidationError(f"unknown personal field(s): {', '.join(unknown)}")
    return sorted(set(fields))


class WebhookSubscription(TenantAggregate):
    """An endpoint of a tenant's integration. ``url`` and the secrets are sealed under
    the tenant's secrets scope (URLs often carry tokens of their own)."""

    class Created(TenantAggregate.Created):
        url: Sealed
        event_types: list[str]
        personal_fields: list[str]
        description: str
        secret: Sealed
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        url: Sealed,
        event_types: list[str],
        personal_fields: list[str],
        description: str,
        secret: Sealed,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.url = url
        self.event_types = list(event_types)
        self.personal_fields = list(personal_fields)
        self.description = description
        self.secret = secret
        self.previous_secret: Sealed | None = None
        self.previous_valid_until: datetime | None = None
        self.status = SubscriptionStatus.ACTIVE
        self.created_at = at

    @classmethod
    def create(
        cls,
        subscription_id: UUID,
        tenant_id: UUID,
        url: Sealed,
        event_types: list[str],
        personal_fields: list[str],
        description: str,
        secret: Sealed,
        at: datetime,
    ) -> WebhookSubscription:
        if len(description) > MAX_DESCRIPTION:
            raise ValidationError(f"description must be at most {MAX_DESCRIPTION} characters")
        return cls._create(
            cls.Created,
            id=subscription_id,
            tenant_id=tenant_id,
            url=url,
            event_types=check_event_types(event_types),
            personal_fields=check_personal_fields(personal_fields),
            description=description,
            secret=secret,
            at=at,
        )

    def _require_not_deleted(self) -> None:
        if self.status is SubscriptionStatus.DELETED:
            raise ConflictError("this webhook was deleted")

    class Changed(TenantAggregate.Event):
        """Settings changed; a field that is None is unchanged."""

        url: Sealed | None
        event_types: list[str] | None
        personal_fields: list[str] | None
        description: str | None
        at: datetime

    def change(
        self,
        url: Sealed | None,
        event_types: list[str] | None,
        personal_fields: list[str] | None,
        description: str | None,
        at: datetime,
    ) -> bool:
        self._require_not_deleted()
        if description is not None and len(description) > MAX_DESCRIPTION:
            raise ValidationError(f"description must be at most {MAX_DESCRIPTION} characters")
        types = check_event_types(event_types) if event_types is not None else None
        fields = check_personal_fields(personal_fields) if personal_fields is not None else None
        if types == self.event_types:
            types = None
        if fields == self.personal_fields:
            fields = None
        if description == self.description:
            description = None
        if url is None and types is None and fields is None and description is None:
            return False
        self._changed(
            url=url, event_types=types, personal_fields=fields, description=description, at=at
        )
        return True

    @event(Changed)
    def _changed(
        self,
        url: Sealed | None,
        event_types: list[str] | None,
        personal_fields: list[str] | None,
        description: str | None,
        at: datetime,
    ) -> None:
        if url is not None:
            self.url = url
        if event_types is not None:
            self.event_types = list(event_types)
        if personal_fields is not None:
            self.personal_fields = list(personal_fields)
        if description is not None:
            self.description = description

    class SecretRotated(TenantAggregate.Event):
        """A new signing secret; the previous one still signs until
        ``previous_valid_until`` (both signatures are sent meanwhile)."""

        secret: Sealed
        previous: Sealed
        previous_valid_until: datetime
        at: datetime

    def rotate_secret(self, secret: Sealed, grace: timedelta, at: datetime) -> datetime:
        self._require_not_deleted()
        if not timedelta(0) <= grace <= SECRET_GRACE_MAX:
            raise ValidationError("the grace period is 0 to 168 hours")
        until = at + grace
        self._secret_rotated(secret=secret, previous=self.secret, previous_valid_until=until, at=at)
        return until

    @event(SecretRotated)
    def _secret_rotated(
        self, secret: Sealed, previous: Sealed, previous_valid_until: datetime, at: datetime
    ) -> None:
        self.secret = secret
        self.previous_secret = previous
        self.previous_valid_until = previous_valid_until

    class Disabled(TenantAggregate.Event):
        """Deliveries stopped: by an admin, a 410 answer, or sustained failure. What is
        still pending becomes dead letters (replayable once it is enabled again)."""

        reason: str
        at: datetime

    def disable(self, reason: DisableReason, at: datetime) -> bool:
        self._require_not_deleted()
        if self.status is SubscriptionStatus.DISABLED:
            return False
        self._disabled(reason=reason.value, at=at)
        return True

    @event(Disabled)
    def _disabled(self, reason: str, at: datetime) -> None:
        self.status = SubscriptionStatus.DISABLED

    class Enabled(TenantAggregate.Event):
        at: datetime

    def enable(self, at: datetime) -> bool:
        self._require_not_deleted()
        if self.status is SubscriptionStatus.ACTIVE:
            return False
        self._enabled(at=at)
        return True

    @event(Enabled)
    def _enabled(self, at: datetime) -> None:
        self.status = SubscriptionStatus.ACTIVE

    class Deleted(TenantAggregate.Event):
        at: datetime

    def delete(self, at: datetime) -> None:
        self._require_not_deleted()
        self._deleted(at=at)

    @event(Deleted)
    def _deleted(self, at: datetime) -> None:
        self.status = SubscriptionStatus.DELETED

    class ReplayRequested(TenantAggregate.Event):
        """Send deliveries again (same ``webhook-id``): one delivery, every dead letter
        so far, or every delivery of the events that occurred in [since, until)."""

        scope: str
        delivery_id: UUID | None
        since: datetime | None
        until: datetime | None
        at: datetime

    def request_replay(
        self,
        scope: ReplayScope,
        at: datetime,
        *,
        delivery: UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self._require_not_deleted()
        if self.status is not SubscriptionStatus.ACTIVE:
            raise ConflictError("enable the webhook before replaying deliveries")
        if scope is ReplayScope.DELIVERY and delivery is None:
            raise ValidationError("name the delivery to replay")
        if scope is ReplayScope.RANGE and (since is None or until is None or since >= until):
            raise ValidationError("a replay range needs from < to")
        self._replay_requested(
            scope=scope.value, delivery_id=delivery, since=since, until=until, at=at
        )

    @event(ReplayRequested)
    def _replay_requested(
        self,
        scope: str,
        delivery_id: UUID | None,
        since: datetime | None,
        until: datetime | None,
        at: datetime,
    ) -> None:
        pass


class WebhookReport(TenantAggregate):
    """What one dispatcher round did for one tenant: one entry per attempt.

    Each attempt is ``{"delivery_id", "subscription_id", "attempt", "outcome",
    "status_code", "latency_ms", "error", "retry_at"}``: ids as strings, ``outcome`` an
    :class:`AttemptOutcome`, ``status_code`` the HTTP status (None when no answer came),
    ``error`` a short code (``timeout``, ``connection``, ``http_503``...) and never the
    receiver's text, ``retry_at`` an aware datetime when retried. No personal data.
    """

    class Recorded(TenantAggregate.Created):
        attempts: list[dict[str, Any]]
        at: datetime

    def __init__(self, tenant_id: UUID, attempts: list[dict[str, Any]], at: datetime) -> None:
        self.tenant_id = tenant_id
        self.attempts = attempts
        self.at = at

    @classmethod
    def record(
        cls, report_id: UUID, tenant_id: UUID, attempts: list[dict[str, Any]], at: datetime
    ) -> WebhookReport:
        return cls._create(
            cls.Recorded, id=report_id, tenant_id=tenant_id, attempts=attempts, at=at
        )
