"""Contacts: the people who talk to the contact centre, with identities on many channels."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.errors import ValidationError
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
        self.tags: set[str] = set()
        self.attributes: Sealed | None = None

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

    class Tagged(TenantAggregate.Event):
        added: list[str]
        removed: list[str]
        at: datetime

    def tag(self, add: list[str], remove: list[str], at: datetime) -> bool:
        """Add and remove tags; returns False (and records nothing) when nothing changes."""
        wanted = {normalise_tag(t) for t in add}
        unwanted = {normalise_tag(t) for t in remove} - wanted
        added = sorted(wanted - self.tags)
        removed = sorted(unwanted & self.tags)
        if len(self.tags) + len(added) - len(removed) > MAX_TAGS:
            raise ValidationError(f"a contact has at most {MAX_TAGS} tags")
        if not added and not removed:
            return False
        self._tagged(added=added, removed=removed, at=at)
        return True

    @event(Tagged)
    def _tagged(self, added: list[str], removed: list[str], at: datetime) -> None:
        self.tags = (self.tags | set(added)) - set(removed)

    class AttributesChanged(TenantAggregate.Event):
        """``attributes`` is the whole set after the change, sealed (CRM fields can be
        personal data): a JSON object of typed values."""

        attributes: Sealed
        at: datetime

    @event(AttributesChanged)
    def change_attributes(self, attributes: Sealed, at: datetime) -> None:
        self.attributes = attributes


MAX_TAGS = 100
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


def normalise_tag(tag: str) -> str:
    """Tags are short labels (letters, digits, ``_.:-``), compared case-insensitively.
    They are kept in clear, so they are labels, never personal data."""
    text = tag.strip().lower() if isinstance(tag, str) else ""
    if not _TAG.match(text):
        raise ValidationError(f"invalid tag {tag!r}: letters, digits and _.:- only, 1-64 long")
    return text
