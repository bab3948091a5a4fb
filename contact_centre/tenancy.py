"""Tenants (the businesses running a contact centre) and their API tokens."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import Aggregate, event

from contact_centre.errors import ConflictError, ValidationError
from contact_centre.privacy import Sealed
from contact_centre.retention import RetentionPolicy
from contact_centre.tenanted import TenantAggregate

MAX_GRACE_DAYS = 30


class Role(StrEnum):
    ADMIN = "admin"
    SUPERVISOR = "supervisor"
    AGENT = "agent"
    INTEGRATION = "integration"


class TenantStatus(StrEnum):
    ACTIVE = "active"
    TERMINATED = "terminated"
    PURGED = "purged"  # everything destroyed; only the deletion certificate remains


class Tenant(Aggregate):
    """The data controller: everything else belongs to exactly one tenant."""

    class Registered(Aggregate.Created):
        name: str
        region: str
        at: datetime

    def __init__(self, name: str, region: str, at: datetime) -> None:
        self.name = name
        self.region = region
        self.registered_at = at
        self.status = TenantStatus.ACTIVE
        self.settings: dict[str, Any] = {}
        self.terminated_at: datetime | None = None
        self.purge_after: datetime | None = None
        self.retention = RetentionPolicy()
        self.certificate: dict[str, Any] | None = None
        self.export_key: Sealed | None = None
        self.export_key_fingerprint: str | None = None

    @classmethod
    def register(cls, tenant_id: UUID, name: str, region: str, at: datetime) -> Tenant:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValidationError("tenant name must be 1-200 characters")
        return cls._create(cls.Registered, id=tenant_id, name=name, region=region, at=at)

    class SettingsChanged(Aggregate.Event):
        changes: dict[str, Any]
        at: datetime

    @event(SettingsChanged)
    def change_settings(self, changes: dict[str, Any], at: datetime) -> None:
        self.settings.update(changes)

    class Terminated(Aggregate.Event):
        grace_days: int
        purge_after: datetime
        at: datetime

    def terminate(self, grace_days: int, at: datetime) -> None:
        if self.status is TenantStatus.TERMINATED:
            raise ConflictError("tenant is already terminated")
        if not 0 <= grace_days <= MAX_GRACE_DAYS:
            raise ValidationError(f"grace_days must be between 0 and {MAX_GRACE_DAYS}")
        self._terminated(grace_days=grace_days, purge_after=at + timedelta(days=grace_days), at=at)

    @event(Terminated)
    def _terminated(self, grace_days: int, purge_after: datetime, at: datetime) -> None:
        self.status = TenantStatus.TERMINATED
        self.terminated_at = at
        self.purge_after = purge_after

    class RetentionPolicyChanged(Aggregate.Event):
        changes: dict[str, Any]
        at: datetime

    def change_retention_policy(self, changes: dict[str, Any], at: datetime) -> RetentionPolicy:
        self.retention.with_changes(changes)  # validate before recording
        self._retention_policy_changed(changes=changes, at=at)
        return self.retention

    @event(RetentionPolicyChanged)
    def _retention_policy_changed(self, changes: dict[str, Any], at: datetime) -> None:
        self.retention = self.retention.with_changes(changes)

    class ExportKeyConfigured(Aggregate.Event):
        """The OpenPGP public key data-subject exports are encrypted to (P6); sealed,
        since its user id may name a person. ``public_key`` None removes it."""

        public_key: Sealed | None
        fingerprint: str | None
        at: datetime

    @event(ExportKeyConfigured)
    def configure_export_key(
        self, public_key: Sealed | None, fingerprint: str | None, at: datetime
    ) -> None:
        self.export_key = public_key
        self.export_key_fingerprint = fingerprint

    class Purged(Aggregate.Event):
        """Everything of the tenant was destroyed; ``certificate`` says what (counts by
        category, dates), with no personal data."""

        certificate: dict[str, Any]
        at: datetime

    def purge(self, certificate: dict[str, Any], at: datetime) -> None:
        if self.status is not TenantStatus.TERMINATED:
            raise ConflictError("only a terminated tenant is purged")
        if self.purge_after is not None and at < self.purge_after:
            raise ConflictError("the grace period has not ended")
        self._purged(certificate=certificate, at=at)

    @event(Purged)
    def _purged(self, certificate: dict[str, Any], at: datetime) -> None:
        self.status = TenantStatus.PURGED
        self.certificate = certificate

    class Reactivated(Aggregate.Event):
        at: datetime

    def reactivate(self, at: datetime) -> None:
        if self.status is TenantStatus.PURGED:
            raise ConflictError("the tenant has been purged: nothing is left to reactivate")
        if self.status is not TenantStatus.TERMINATED:
            raise ConflictError("tenant is not terminated")
        if self.purge_after is not None and at >= self.purge_after:
            raise ConflictError("the grace period has ended")
        self._reactivated(at=at)

    @event(Reactivated)
    def _reactivated(self, at: datetime) -> None:
        self.status = TenantStatus.ACTIVE
        self.terminated_at = None
        self.purge_after = None


class ApiToken(TenantAggregate):
    """A bearer token. Only its SHA-256 hash is ever stored; the token is shown once."""

    class Issued(TenantAggregate.Created):
        role: str
        token_hash: str
        label: str
        agent_id: UUID | None
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        role: str,
        token_hash: str,
        label: str,
        agent_id: UUID | None,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.role = Role(role)
        self.token_hash = token_hash
        self.label = label
        self.agent_id = agent_id
        self.issued_at = at
        self.revoked_at: datetime | None = None

    @classmethod
    def issue(
        cls,
        token_id: UUID,
        tenant_id: UUID,
        role: Role,
        token_hash: str,
        label: str,
        agent_id: UUID | None,
        at: datetime,
    ) -> ApiToken:
        if len(label) > 200:
            raise ValidationError("label must be at most 200 characters")
        return cls._create(
            cls.Issued,
            id=token_id,
            tenant_id=tenant_id,
            role=role.value,
            token_hash=token_hash,
            label=label,
            agent_id=agent_id,
            at=at,
        )

    class Revoked(TenantAggregate.Event):
        at: datetime

    def revoke(self, at: datetime) -> None:
        if self.revoked_at is not None:
            raise ConflictError("token is already revoked")
        self._revoked(at=at)

    @event(Revoked)
    def _revoked(self, at: datetime) -> None:
        self.revoked_at = at
