"""A tenant's settings for one channel provider (Twilio, Slack, Meta, email, webchat).

Public settings (phone numbers, channel ids, mailbox addresses, the widget key...) are
kept as given; secrets (auth tokens, signing secrets, passwords) are sealed together as
one JSON value under the tenant's secrets scope and never shown again.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate


class Provider(StrEnum):
    TWILIO = "twilio"
    SLACK = "slack"
    META = "meta"
    EMAIL = "email"
    WEBCHAT = "webchat"


def settings_id(tenant_id: UUID, provider: Provider) -> UUID:
    """One settings aggregate per tenant and provider, found without a lookup."""
    return uuid5(NAMESPACE_URL, f"contact-centre:channel-settings:{tenant_id}:{provider.value}")


class ChannelSettings(TenantAggregate):
    class Created(TenantAggregate.Created):
        provider: str
        at: datetime

    def __init__(self, tenant_id: UUID, provider: str, at: datetime) -> None:
        self.tenant_id = tenant_id
        self.provider = Provider(provider)
        self.created_at = at
        self.settings: dict[str, Any] = {}
        self.secrets: Sealed | None = None
        self.secret_fields: list[str] = []

    @classmethod
    def create(cls, tenant_id: UUID, provider: Provider, at: datetime) -> ChannelSettings:
        return cls._create(
            cls.Created,
            id=settings_id(tenant_id, provider),
            tenant_id=tenant_id,
            provider=provider.value,
            at=at,
        )

    class Configured(TenantAggregate.Event):
        """``settings`` holds no secret; ``secrets`` is the sealed JSON object of the
        secret fields named in ``secret_fields``."""

        settings: dict[str, Any]
        secrets: Sealed | None
        secret_fields: list[str]
        at: datetime

    @event(Configured)
    def configure(
        self,
        settings: dict[str, Any],
        secrets: Sealed | None,
        secret_fields: list[str],
        at: datetime,
    ) -> None:
        self.settings = settings
        self.secrets = secrets
        self.secret_fields = secret_fields
