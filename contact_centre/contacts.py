"""Contacts: the people who talk to the contact centre, with identities on many channels."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.errors import ConflictError, ValidationError
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
        self.restricted = False
        self.erased = False
        self.notice_delete_after: datetime | None = None
        self.external_id: Sealed | None = None  # the tenant's CRM id for this person
        self.merged_into: UUID | None = None

        # Channels the contact opted out of (STOP). Consent carries no personal data, so it
        # outlives the erasure of everything else about the contact (P12).
        self.opted_out: set[str] = set()

    def _require_not_erased(self) -> None:
        if self.erased:
            raise ConflictError("this contact's data has been erased")

    def require_current(self) -> None:
        """Refuse changes to an erased contact or one merged into another."""
        self._require_not_erased()
        if self.merged_into is not None:
            raise ConflictError(f"this contact was merged into {self.merged_into}")

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

    def link_identity(self, kind: str, address: Sealed, at: datetime) -> None:
        self._require_not_erased()
        self._identity_linked(kind=kind, address=address, at=at)

    @event(IdentityLinked)
    def _identity_linked(self, kind: str, address: Sealed, at: datetime) -> None:
        self.identities.append((IdentityKind(kind), address))

    class DetailsCorrected(TenantAggregate.Event):
        display_name: Sealed | None
        source: str
        at: datetime

    def correct_details(self, display_name: Sealed | None, source: str, at: datetime) -> None:
        self._require_not_erased()
        self._details_corrected(display_name=display_name, source=source, at=at)

    @event(DetailsCorrected)
    def _details_corrected(self, display_name: Sealed | None, source: str, at: datetime) -> None:
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

    class Tagged(TenantAggregate.Event):
        added: list[str]
        removed: list[str]
        at: datetime

    def tag(self, add: list[str], remove: list[str], at: datetime) -> bool:
        """Add and remove tags; returns False (and records nothing) when nothing changes."""
        self._require_not_erased()
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

    def change_attributes(self, attributes: Sealed, at: datetime) -> None:
        self._require_not_erased()
        self._attributes_changed(attributes=attributes, at=at)

    @event(AttributesChanged)
    def _attributes_changed(self, attributes: Sealed, at: datetime) -> None:
        self.attributes = attributes

    class Restricted(TenantAggregate.Event):
        """Processing restricted (GDPR art. 18) or objected to (art. 21): the data stays,
        but is left out of attribute routing, integration exports and marketing."""

        reason: str
        request_id: UUID | None
        at: datetime

    def restrict(self, reason: str, request_id: UUID | None, at: datetime) -> bool:
        self._require_not_erased()
        if self.restricted:
            return False
        self._restricted(reason=reason, request_id=request_id, at=at)
        return True

    @event(Restricted)
    def _restricted(self, reason: str, request_id: UUID | None, at: datetime) -> None:
        self.restricted = True

    class RestrictionLifted(TenantAggregate.Event):
        at: datetime

    def lift_restriction(self, at: datetime) -> bool:
        if not self.restricted:
            return False
        self._restriction_lifted(at=at)
        return True

    @event(RestrictionLifted)
    def _restriction_lifted(self, at: datetime) -> None:
        self.restricted = False

    class InactivityNoticeIssued(TenantAggregate.Event):
        """The contact has been inactive for the policy's period: it will be deleted after
        ``delete_after`` unless it becomes active again (P9: deletion after notice)."""

        delete_after: datetime
        at: datetime

    @event(InactivityNoticeIssued)
    def issue_inactivity_notice(self, delete_after: datetime, at: datetime) -> None:
        self.notice_delete_after = delete_after

    class Erased(TenantAggregate.Event):
        """The contact's personal data was destroyed (its scope key shredded); downstream
        copies (CRMs, webhooks, Kafka consumers) should delete theirs."""

        reason: str
        request_id: UUID | None
        at: datetime

    def erase(self, reason: str, request_id: UUID | None, at: datetime) -> None:
        if self.erased:
            raise ConflictError("this contact's data has already been erased")
        self._erased(reason=reason, request_id=request_id, at=at)

    @event(Erased)
    def _erased(self, reason: str, request_id: UUID | None, at: datetime) -> None:
        self.erased = True
        self.display_name = None
        self.attributes = None
        self.external_id = None

    # -- CRM sync ----------------------------------------------------------------------
    class ExternalIdSet(TenantAggregate.Event):
        """The tenant's CRM id for this contact (sealed: it names a person in the CRM);
        None removes it."""

        external_id: Sealed | None
        at: datetime

    def set_external_id(self, external_id: Sealed | None, at: datetime) -> None:
        self.require_current()
        self._external_id_set(external_id=external_id, at=at)

    @event(ExternalIdSet)
    def _external_id_set(self, external_id: Sealed | None, at: datetime) -> None:
        self.external_id = external_id

    class Merged(TenantAggregate.Event):
        """Another contact was merged into this one: its identities, details, tags,
        attributes and consent were copied here (by the events before this one) and its
        conversations now belong to this contact."""

        merged_contact_id: UUID
        conversation_ids: list[UUID]
        at: datetime

    def record_merge(
        self, merged_contact_id: UUID, conversation_ids: list[UUID], at: datetime
    ) -> None:
        self.require_current()
        self._merged(merged_contact_id=merged_contact_id, conversation_ids=conversation_ids, at=at)

    @event(Merged)
    def _merged(self, merged_contact_id: UUID, conversation_ids: list[UUID], at: datetime) -> None:
        pass

    class MergedInto(TenantAggregate.Event):
        """This contact was merged into ``survivor_id`` and is no longer used; its own
        scope key is destroyed (its data lives on, re-sealed, in the survivor)."""

        survivor_id: UUID
        at: datetime

    def merge_into(self, survivor_id: UUID, at: datetime) -> None:
        self.require_current()
        if self.restricted:
            raise ContactRestrictedError("a restricted contact cannot be merged")
        self._merged_into(survivor_id=survivor_id, at=at)

    @event(MergedInto)
    def _merged_into(self, survivor_id: UUID, at: datetime) -> None:
        self.merged_into = survivor_id


class ContactRestrictedError(ConflictError):
    """Processing of the contact is restricted (GDPR art. 18): integrations may not
    change it, and it cannot be merged."""

    code = "restricted"


MAX_TAGS = 100
_TAG = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")


def normalise_tag(tag: str) -> str:
    """Tags are short labels (letters, digits, ``_.:-``), compared case-insensitively.
    They are kept in clear, so they are labels, never personal data."""
    text = tag.strip().lower() if isinstance(tag, str) else ""
    if not _TAG.match(text):
        raise ValidationError(f"invalid tag {tag!r}: letters, digits and _.:- only, 1-64 long")
    return text
