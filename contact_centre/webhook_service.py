"""Webhook use cases: subscriptions, secret rotation, replays, and recording what the
dispatcher did. Mixed into :class:`~contact_centre.application.ContactCentre`."""

from __future__ import annotations

import base64
import secrets
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from uuid import UUID

from contact_centre.compliance import DataSubjectRequest
from contact_centre.errors import ValidationError
from contact_centre.ids import new_id
from contact_centre.privacy import Scope, ScopeKind, Sealed
from contact_centre.webhooks import (
    MAX_URL,
    DisableReason,
    ReplayScope,
    WebhookReport,
    WebhookSubscription,
)

if TYPE_CHECKING:
    from contact_centre.application import UnitOfWork

SECRET_PREFIX = "whsec_"  # noqa: S105  (the Standard Webhooks prefix, not a secret)


def new_secret() -> str:
    """A Standard Webhooks signing secret: ``whsec_`` and 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


class WebhookCommands:
    """Webhook use cases; every method runs inside the caller's unit of work."""

    if TYPE_CHECKING:  # provided by ContactCentre

        def _seal(self, scope: Scope, value: str) -> Sealed: ...

        def _require_active_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]: ...

    def _secrets_scope(self, tenant_id: UUID) -> Scope:
        return Scope(tenant_id, ScopeKind.TENANT_SECRETS, tenant_id)

    def _check_url(self, url: str) -> str:
        # The network policy (which hosts may be called) is infra's; the shape is ours.
        if not url or len(url) > MAX_URL or not url.startswith(("https://", "http://")):
            raise ValidationError(f"url must be an http(s) URL of at most {MAX_URL} characters")
        return url

    def create_webhook_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        url: str,
        event_types: list[str],
        personal_fields: list[str],
        description: str,
    ) -> tuple[UUID, str]:
        """A new subscription; returns its id and its signing secret (shown only now)."""
        self._require_active_tenant(uow, tenant_id)
        scope = self._secrets_scope(tenant_id)
        secret = new_secret()
        subscription = WebhookSubscription.create(
            new_id(),
            tenant_id,
            self._seal(scope, self._check_url(url)),
            event_types,
            personal_fields,
            description,
            self._seal(scope, secret),
            uow.now,
        )
        uow.add(subscription)
        return subscription.id, secret

    def _subscription(
        self, uow: UnitOfWork, tenant_id: UUID, webhook_id: UUID
    ) -> WebhookSubscription:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(webhook_id, WebhookSubscription, tenant_id)

    def change_webhook_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        webhook_id: UUID,
        *,
        url: str | None = None,
        event_types: list[str] | None = None,
        personal_fields: list[str] | None = None,
        description: str | None = None,
        enabled: bool | None = None,
    ) -> bool:
        subscription = self._subscription(uow, tenant_id, webhook_id)
        sealed = (
            self._seal(self._secrets_scope(tenant_id), self._check_url(url))
            if url is not None
            else None
        )
        changed = subscription.change(sealed, event_types, personal_fields, description, uow.now)
        if enabled is True:
            changed = subscription.enable(uow.now) or changed
        elif enabled is False:
            changed = subscription.disable(DisableReason.ADMIN, uow.now) or changed
        return changed

    def rotate_webhook_secret_in(
        self, uow: UnitOfWork, tenant_id: UUID, webhook_id: UUID, grace: timedelta
    ) -> tuple[str, datetime]:
        """A new secret (returned once); the old one keeps signing during ``grace``."""
        subscription = self._subscription(uow, tenant_id, webhook_id)
        secret = new_secret()
        until = subscription.rotate_secret(
            self._seal(self._secrets_scope(tenant_id), secret), grace, uow.now
        )
        return secret, until

    def delete_webhook_in(self, uow: UnitOfWork, tenant_id: UUID, webhook_id: UUID) -> None:
        self._subscription(uow, tenant_id, webhook_id).delete(uow.now)

    def replay_webhook_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        webhook_id: UUID,
        scope: ReplayScope,
        *,
        delivery: UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self._subscription(uow, tenant_id, webhook_id).request_replay(
            scope, uow.now, delivery=delivery, since=since, until=until
        )

    def record_webhook_attempts_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        attempts: list[dict[str, Any]],
        disable: dict[UUID, DisableReason],
    ) -> UUID | None:
        """Record one dispatcher round's attempts for a tenant (one event), and disable
        the endpoints that answered 410 or kept failing."""
        report_id = None
        if attempts:
            report = WebhookReport.record(new_id(), tenant_id, attempts, uow.now)
            uow.add(report)
            report_id = report.id
        for webhook_id, reason in sorted(disable.items()):
            subscription = uow.get(webhook_id, WebhookSubscription, tenant_id)
            if subscription.status.value == "active":
                subscription.disable(reason, uow.now)
        return report_id

    def remind_request_due_in(self, uow: UnitOfWork, tenant_id: UUID, request_id: UUID) -> bool:
        """Announce an open data-subject request that falls due soon (once per due date)."""
        request = uow.get(request_id, DataSubjectRequest, tenant_id)
        return request.remind_due(uow.now)
