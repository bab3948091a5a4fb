"""Contacts: the people who talk to the contact centre, with identities on many channels."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.interaction import IdentityKind
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate


class Contact(TenantAggregate):
    """A person. Identity addresses and details are sealed under the contact's scope key."""

    class Registered(TenantAggregate.Created):
        identity_kind: str
        identity_address: Sealed
        display_name: Sealed | None
        at: datetime

    def __init__(
        self,
        tenant_id: UUID,
        identity_kind: str,
        identity_address: Sealed,
        display_name: Sealed | None,
        at: datetime,
    ) -> None:
        self.tenant_id = tenant_id
        self.identities: list[tuple[IdentityKind, Sealed]] = [
            (IdentityKind(identity_kind), identity_address)
        ]
        self.display_name = display_name
        self.registered_at = at
        # Channels the contact opted out of (STOP). Consent carries no personal data, so it
        # outlives the erasure of everything else about the contact (P12).
        self.opted_out: set[str] = set()

    @classmethod
    def register(
        cls,
        contact_id: UUID,
        tenant_id: UUID,
        kind: IdentityKind,
        address: Sealed,
        display_name: Sealed | None,
        at: datetime,
    ) -> Contact:
        return cls._create(
            cls.Registered,
            id=contact_id,
            tenant_id=tenant_id,
            identity_kind=kind.value,
            identity_address=address,
            display_name=display_name,
            at=at,
        )

    class IdentityLinked(TenantAggregate.Event):
        kind: str
        address: Sealed
        at: datetime

    @event(IdentityLinked)
    def link_identity(self, kind: str, address: Sealed, at: datetime) -> None:
        self.identities.append((IdentityKind(kind), address))

    class DetailsCorrected(TenantAggregate.Event):
        display_name: Sealed | None
        source: str
        at: datetime

    @event(DetailsCorrected)
    def correct_details(self, display_name: Sealed | None, source: str, at: datetime) -> None:
        self.display_name = display_name

    class OptedOut(TenantAggregate.Event):
        """The contact asked not to be messaged on ``channel`` (e.g. SMS ``STOP``)."""

        channel: str
        keyword: str
        at: datetime

    class OptedIn(TenantAggregate.Event):
        """The contact asked to be messaged on ``channel`` again (e.g. SMS ``START``)."""

        channel: str
        keyword: str
        at: datetime

    def opt_out(self, channel: str, keyword: str, at: datetime) -> bool:
        if channel in self.opted_out:
            return False
        self._opted_out(channel=channel, keyword=keyword, at=at)
        return True

    def opt_in(self, channel: str, keyword: str, at: datetime) -> bool:
        if channel not in self.opted_out:
            return False
        self._opted_in(channel=channel, keyword=keyword, at=at)
        return True

    @event(OptedOut)
    def _opted_out(self, channel: str, keyword: str, at: datetime) -> None:
        self.opted_out.add(channel)

    @event(OptedIn)
    def _opted_in(self, channel: str, keyword: str, at: datetime) -> None:
        self.opted_out.discard(channel)
