"""CRM sync use cases: upsert a contact by external id, email or phone; change its
details, identities, tags and attributes; merge two contacts. Mixed into
:class:`~contact_centre.application.ContactCentre`.

How a merge treats the write side (docs/api.md#merging-contacts says it for users):

- identities: each identity index entry of the merged-away contact is moved to the
  survivor by compare-and-set, and the address is re-sealed under the survivor's scope;
- external id: the survivor keeps its own; it takes the merged one's when it has none
  (otherwise the merged one's index entry is dropped);
- conversations: every conversation of the merged-away contact records
  ``Conversation.ContactChanged`` and its ``contact-conversation`` key moves to the
  survivor, so erasure, holds and exports of the survivor cover them;
- the merged-away contact records ``Contact.MergedInto`` and its scope key is destroyed
  after the commit (everything of it lives on, re-sealed, in the survivor); the retention
  ledger records that scope as erased with the rule ``contact_merged``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from contact_centre.compliance import HoldTarget
from contact_centre.contacts import Contact, ContactRestrictedError
from contact_centre.conversations import Conversation
from contact_centre.errors import ConflictError, ValidationError
from contact_centre.interaction import Identity, IdentityKind
from contact_centre.ports import IdentityNormaliser, IndexOp, IndexOpKind
from contact_centre.privacy import Erased, Scope, Sealed, Sealer

if TYPE_CHECKING:
    from contact_centre.application import UnitOfWork

NS_EXTERNAL_ID = "external-id"  # blind(external id) -> contact id
NS_UPSERT = "upsert"  # blind(Idempotency-Key) -> the first answer to it
# Namespaces of the application's (contact_centre/application.py), used here too.
NS_IDENTITY = "identity"
NS_SUPPRESSION = "suppression"
NS_CONTACT_CONVERSATION = "contact-conversation"
MAX_EXTERNAL_ID = 200
CRM_IDENTITY_KINDS = (IdentityKind.EMAIL, IdentityKind.PHONE)


@dataclass(frozen=True, slots=True)
class ContactChanges:
    """What a CRM asks to be true of a contact; None (or empty) leaves a part as it is."""

    external_id: str | None = None
    display_name: str | None = None
    identities: tuple[Identity, ...] = ()
    tags_add: tuple[str, ...] = ()
    tags_remove: tuple[str, ...] = ()
    attributes: dict[str, Any] | None = None

    def fingerprint(self) -> str:
        """A canonical text of the request (hashed with the tenant's key before use)."""
        return json.dumps(
            {
                "external_id": self.external_id,
                "display_name": self.display_name,
                "identities": [[i.kind.value, i.address] for i in self.identities],
                "tags_add": list(self.tags_add),
                "tags_remove": list(self.tags_remove),
                "attributes": self.attributes,
            },
            sort_keys=True,
            separators=(",", ":"),
        )


@dataclass(frozen=True, slots=True)
class UpsertResult:
    contact_id: UUID
    created: bool
    changed: tuple[str, ...]
    duplicate: bool = False


class Upsert:
    """The upsert command, which can say ahead which index keys it will look up, so that a
    batch (a bulk import) looks them up together (see ``ContactCentre._prefetch``)."""

    def __init__(
        self,
        app: CrmCommands,
        tenant_id: UUID,
        changes: ContactChanges,
        *,
        idempotency_key: str | None = None,
        allow_restricted: bool = True,
    ) -> None:
        self.app = app
        self.tenant_id = tenant_id
        self.changes = changes
        self.idempotency_key = idempotency_key
        self.allow_restricted = allow_restricted

    def index_keys(self, uow: UnitOfWork) -> dict[str, set[str]]:
        app, tenant = self.app, self.tenant_id
        _, identities = app._normalised(app._require_active_tenant(uow, tenant), self.changes)
        keys: dict[str, set[str]] = {
            NS_IDENTITY: {app._identity_key(tenant, i) for i in identities},
            NS_SUPPRESSION: {app.suppression_key(tenant, i) for i in identities[:1]},
        }
        if self.changes.external_id is not None:
            keys[NS_EXTERNAL_ID] = {app._external_key(tenant, self.changes.external_id)}
        if self.idempotency_key is not None:
            keys[NS_UPSERT] = {app._blind(tenant, "upsert", self.idempotency_key)}
        return keys

    def __call__(self, uow: UnitOfWork) -> UpsertResult:
        return self.app.upsert_contact_in(
            uow,
            self.tenant_id,
            self.changes,
            idempotency_key=self.idempotency_key,
            allow_restricted=self.allow_restricted,
        )


@dataclass
class MergeOutcome:
    survivor_id: UUID
    merged_contact_id: UUID
    conversation_ids: list[UUID] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)  # key(s) to destroy after the commit


class CrmCommands:
    """CRM sync use cases; every method runs inside the caller's unit of work."""

    if TYPE_CHECKING:  # provided by ContactCentre
        sealer: Sealer
        normaliser: IdentityNormaliser

        def _blind(self, tenant_id: UUID, purpose: str, *parts: str) -> str: ...

        def _seal(self, scope: Scope, value: str) -> Sealed: ...

        def _require_active_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]: ...

        def is_held(
            self, uow: UnitOfWork, tenant_id: UUID, *targets: tuple[HoldTarget, UUID]
        ) -> bool: ...

        def contact_attributes(self, contact: Contact) -> dict[str, Any]: ...

        def set_contact_attributes_in(
            self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID, changes: dict[str, Any]
        ) -> dict[str, Any]: ...

        def suppression_key(self, tenant_id: UUID, identity: Identity) -> str: ...

        def _find_or_create_contact(
            self, uow: UnitOfWork, tenant_id: UUID, identity: Identity, identity_key: str
        ) -> Contact: ...

        def link_identity_in(
            self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID, identity: Identity
        ) -> None: ...

    # -- helpers ------------------------------------------------------------------------
    def _opened(self, sealed: Sealed | None) -> str | None:
        if sealed is None:
            return None
        value = self.sealer.open(sealed)
        return None if isinstance(value, Erased) else value

    def _identity_key(self, tenant_id: UUID, identity: Identity) -> str:
        return self._blind(tenant_id, "identity", identity.kind.value, identity.address)

    def _external_key(self, tenant_id: UUID, external_id: str) -> str:
        return self._blind(tenant_id, "external-id", external_id)

    def _normalised(
        self, entry: dict[str, Any], changes: ContactChanges
    ) -> tuple[ContactChanges, list[Identity]]:
        if changes.external_id is not None and not (
            0 < len(changes.external_id.strip()) <= MAX_EXTERNAL_ID
        ):
            raise ValidationError(f"external_id must be 1-{MAX_EXTERNAL_ID} characters")
        region = entry.get("phone_region")
        identities: list[Identity] = []
        for identity in changes.identities:
            if identity.kind not in CRM_IDENTITY_KINDS:
                raise ValidationError("a CRM sets email and phone identities only")
            normal = self.normaliser.normalise(identity, region)
            if normal not in identities:
                identities.append(normal)
        if changes.display_name is not None and not 0 < len(changes.display_name) <= 200:
            raise ValidationError("display_name must be 1-200 characters")
        return changes, identities

    # -- upsert -------------------------------------------------------------------------
    def upsert_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        changes: ContactChanges,
        *,
        idempotency_key: str | None = None,
        allow_restricted: bool = True,
    ) -> UpsertResult:
        """Find the contact by external id, else by any of the identities, and make the
        changes; create it when none matches (that needs an email or phone).

        With an ``idempotency_key``, a repeat of the same request answers as the first one
        did and writes nothing; the same key with another request is a conflict.
        """
        entry = self._require_active_tenant(uow, tenant_id)
        changes, identities = self._normalised(entry, changes)
        receipt_key = digest = None
        if idempotency_key is not None:
            receipt_key = self._blind(tenant_id, "upsert", idempotency_key)
            stored = uow.lookup(NS_UPSERT, receipt_key)
            # the request's fingerprint is kept as a keyed hash (it holds personal data)
            digest = self.sealer.blind_index(tenant_id, "upsert-body", changes.fingerprint())
            if stored is not None:
                doc = json.loads(stored)
                if doc["request"] != digest:
                    raise ConflictError("this Idempotency-Key was used for another request")
                return UpsertResult(
                    UUID(doc["contact_id"]), doc["created"], tuple(doc["changed"]), True
                )
        owners: set[str] = set()
        if changes.external_id is not None:
            found = uow.lookup(NS_EXTERNAL_ID, self._external_key(tenant_id, changes.external_id))
            if found is not None:
                owners.add(found)
        for identity in identities:
            found = uow.lookup(NS_IDENTITY, self._identity_key(tenant_id, identity))
            if found is not None:
                owners.add(found)
        if len(owners) > 1:
            raise ConflictError(
                "the external id and identities belong to different contacts "
                f"({', '.join(sorted(owners))}): merge them first"
            )
        if owners:
            contact = uow.get(UUID(owners.pop()), Contact, tenant_id)
            changed = self._apply(uow, tenant_id, contact, changes, identities, allow_restricted)
            result = UpsertResult(contact.id, False, tuple(changed))
        else:
            result = self._create(uow, tenant_id, changes, identities)
        if receipt_key is not None:
            doc = {
                "contact_id": str(result.contact_id),
                "created": result.created,
                "changed": list(result.changed),
                "request": digest,
            }
            uow.index(IndexOp(IndexOpKind.INSERT, NS_UPSERT, receipt_key, json.dumps(doc)))
        return result

    def _create(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        changes: ContactChanges,
        identities: list[Identity],
    ) -> UpsertResult:
        if not identities:
            raise ValidationError("a new contact needs an email or phone identity")
        first = identities[0]
        named = Identity(first.kind, first.address, changes.display_name or "")
        contact = self._find_or_create_contact(
            uow, tenant_id, named, self._identity_key(tenant_id, first)
        )
        rest = ContactChanges(
            external_id=changes.external_id,
            tags_add=changes.tags_add,
            tags_remove=changes.tags_remove,
            attributes=changes.attributes,
        )
        self._apply(uow, tenant_id, contact, rest, identities[1:], True)
        return UpsertResult(contact.id, True, ())

    # -- changes to a known contact -----------------------------------------------------
    def update_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        changes: ContactChanges,
        *,
        allow_restricted: bool = True,
    ) -> UpsertResult:
        entry = self._require_active_tenant(uow, tenant_id)
        changes, identities = self._normalised(entry, changes)
        contact = uow.get(contact_id, Contact, tenant_id)
        changed = self._apply(uow, tenant_id, contact, changes, identities, allow_restricted)
        return UpsertResult(contact_id, False, tuple(changed))

    def _apply(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact: Contact,
        changes: ContactChanges,
        identities: Sequence[Identity],
        allow_restricted: bool,
    ) -> list[str]:
        contact.require_current()
        if contact.restricted and not allow_restricted:
            raise ContactRestrictedError(
                "processing of this contact is restricted: integrations may not change it"
            )
        scope = Scope.contact(tenant_id, contact.id)
        changed: list[str] = []
        if changes.external_id is not None:
            current = self._opened(contact.external_id)
            wanted = changes.external_id.strip()
            if current != wanted:
                key = self._external_key(tenant_id, wanted)
                owner = uow.lookup(NS_EXTERNAL_ID, key)
                if owner is not None and owner != str(contact.id):
                    raise ConflictError("that external id belongs to another contact")
                if current is not None:
                    uow.index(
                        IndexOp(
                            IndexOpKind.DELETE,
                            NS_EXTERNAL_ID,
                            self._external_key(tenant_id, current),
                        )
                    )
                uow.index(IndexOp(IndexOpKind.INSERT, NS_EXTERNAL_ID, key, str(contact.id)))
                contact.set_external_id(self._seal(scope, wanted), uow.now)
                changed.append("external_id")
        linked = False
        for identity in identities:
            if uow.lookup(NS_IDENTITY, self._identity_key(tenant_id, identity)) != str(contact.id):
                self.link_identity_in(uow, tenant_id, contact.id, identity)
                linked = True
        if linked:
            changed.append("identities")
        if changes.display_name is not None and changes.display_name != self._opened(
            contact.display_name
        ):
            contact.correct_details(self._seal(scope, changes.display_name), "crm", uow.now)
            changed.append("display_name")
        if (changes.tags_add or changes.tags_remove) and contact.tag(
            list(changes.tags_add), list(changes.tags_remove), uow.now
        ):
            changed.append("tags")
        if changes.attributes:
            from contact_centre.application import check_attributes

            before = self.contact_attributes(contact)
            after = dict(before)
            for key, value in check_attributes(changes.attributes).items():
                if value is None:
                    after.pop(key, None)
                else:
                    after[key] = value
            if after != before:
                self.set_contact_attributes_in(uow, tenant_id, contact.id, changes.attributes)
                changed.append("attributes")
        return changed

    # -- merge --------------------------------------------------------------------------
    def merge_contacts_in(
        self, uow: UnitOfWork, tenant_id: UUID, survivor_id: UUID, merged_id: UUID
    ) -> MergeOutcome:
        """Merge ``merged_id`` into ``survivor_id`` (see the module docstring)."""
        self._require_active_tenant(uow, tenant_id)
        survivor = uow.get(survivor_id, Contact, tenant_id)
        merged = uow.get(merged_id, Contact, tenant_id)
        if survivor_id == merged_id:
            raise ValidationError("a contact cannot be merged into itself")
        for contact in (survivor, merged):
            contact.require_current()
            if contact.restricted:
                raise ContactRestrictedError("a restricted contact cannot be merged")
        if self.is_held(uow, tenant_id, (HoldTarget.CONTACT, merged_id)):
            raise ConflictError(
                "a legal hold covers the contact to merge away: release it, or merge the "
                "other way round"
            )
        scope = Scope.contact(tenant_id, survivor_id)
        now = uow.now
        for kind, sealed in merged.identities:
            address = self._opened(sealed)
            if address is None:
                continue
            key = self._identity_key(tenant_id, Identity(kind, address))
            if uow.lookup(NS_IDENTITY, key) == str(merged_id):
                uow.index(
                    IndexOp(IndexOpKind.CAS, NS_IDENTITY, key, str(survivor_id), str(merged_id))
                )
            survivor.link_identity(kind.value, self._seal(scope, address), now)
        name = self._opened(merged.display_name)
        if survivor.display_name is None and name:
            survivor.correct_details(self._seal(scope, name), "merge", now)
        external = self._opened(merged.external_id)
        if external is not None:
            key = self._external_key(tenant_id, external)
            if survivor.external_id is None:
                uow.index(
                    IndexOp(IndexOpKind.CAS, NS_EXTERNAL_ID, key, str(survivor_id), str(merged_id))
                )
                survivor.set_external_id(self._seal(scope, external), now)
            else:
                uow.index(IndexOp(IndexOpKind.DELETE, NS_EXTERNAL_ID, key))
        if merged.tags:
            survivor.tag(sorted(merged.tags), [], now)
        extra = self.contact_attributes(merged) if merged.attributes is not None else {}
        mine = self.contact_attributes(survivor)
        missing = {k: v for k, v in extra.items() if k not in mine}
        if missing:
            self.set_contact_attributes_in(uow, tenant_id, survivor_id, missing)
        for channel in sorted(merged.opted_out - survivor.opted_out):
            survivor.opt_out(channel, "merge", now)
        outcome = MergeOutcome(survivor_id, merged_id)
        prefix = f"{tenant_id}:{merged_id}:"
        for key in sorted(uow.scan(NS_CONTACT_CONVERSATION, prefix)):
            conversation_id = UUID(key.rsplit(":", 1)[1])
            conversation = uow.get(conversation_id, Conversation, tenant_id)
            conversation.change_contact(survivor_id, now)
            uow.index(IndexOp(IndexOpKind.DELETE, NS_CONTACT_CONVERSATION, key))
            uow.index(
                IndexOp(
                    IndexOpKind.INSERT,
                    NS_CONTACT_CONVERSATION,
                    f"{tenant_id}:{survivor_id}:{conversation_id}",
                    "",
                )
            )
            outcome.conversation_ids.append(conversation_id)
        survivor.record_merge(merged_id, outcome.conversation_ids, now)
        merged.merge_into(survivor_id, now)
        outcome.scopes.append(Scope.contact(tenant_id, merged_id).id)
        return outcome
