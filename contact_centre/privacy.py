"""Privacy primitives: data scopes, sealed personal values and the erased marker.

Every personal field of every event is a :class:`Sealed` value: ciphertext under the key
of one *data scope* (one contact's identity data, one conversation's content, one agent,
one visitor's network data...). The keys live in a key vault outside the domain (see
:class:`Sealer`). Destroying a scope's key ("crypto-shredding") makes every sealed value
of that scope open as :data:`ERASED`, while the events, and so the aggregates, still load.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Final, Protocol
from uuid import UUID


class ScopeKind(StrEnum):
    CONTACT = "contact"  # a contact's identities and details
    CONVERSATION = "conversation"  # a conversation's content: bodies, subjects, thread keys
    VISITOR_NETWORK = "visitor-network"  # a webchat visitor's IP and cookie
    AGENT = "agent"  # an agent's name and email
    TENANT_SECRETS = "tenant-secrets"  # a tenant's provider credentials
    TENANT_INDEX = "tenant-index"  # the tenant's blind-index (keyed hash) key
    TENANT_RECORDS = "tenant-records"  # admins' free text: hold reasons, request notes


@dataclass(frozen=True, slots=True)
class Scope:
    """A unit of personal data that is encrypted, retained and erased as one."""

    tenant_id: UUID
    kind: ScopeKind
    subject_id: UUID
    id: str = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.kind.value}:{self.subject_id}")

    @classmethod
    def contact(cls, tenant_id: UUID, contact_id: UUID) -> Scope:
        return cls(tenant_id, ScopeKind.CONTACT, contact_id)

    @classmethod
    def conversation(cls, tenant_id: UUID, conversation_id: UUID) -> Scope:
        return cls(tenant_id, ScopeKind.CONVERSATION, conversation_id)

    @classmethod
    def agent(cls, tenant_id: UUID, agent_id: UUID) -> Scope:
        return cls(tenant_id, ScopeKind.AGENT, agent_id)


@dataclass(frozen=True, slots=True)
class Sealed:
    """A personal value encrypted under the key of ``scope`` (a :attr:`Scope.id`).

    ``token`` is opaque to the domain (nonce and ciphertext, base64url). Sealed values
    compare by ciphertext, so two seals of the same text are different values.
    """

    scope: str
    token: str

    def __repr__(self) -> str:  # never print ciphertext into logs either
        return f"Sealed(scope={self.scope!r})"


class Erased:
    """The explicit marker a sealed value opens to once its scope key is destroyed."""

    _instance: Erased | None = None

    def __new__(cls) -> Erased:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ERASED"

    def __bool__(self) -> bool:
        return False


ERASED: Final = Erased()

Revealed = str | Erased


class Sealer(Protocol):
    """Port to the key vault: seals and opens personal values, computes blind indexes.

    Implementations must make a newly created scope key durable in :meth:`flush`, which
    the application calls before it saves events that carry values sealed under it.
    """

    def seal(self, scope: Scope, plaintext: str) -> Sealed: ...

    def new_scope(self, scope: Scope) -> None:
        """Declare a scope that cannot have a key yet (its subject was just created), so
        that sealing into it need not look for one."""
        ...

    def open(self, sealed: Sealed) -> Revealed: ...

    def preload(self, scope_ids: Iterable[str]) -> None:
        """Fetch the keys of many scopes at once, before opening values of each (a hint:
        opening works without it, one scope at a time)."""
        ...

    def blind_index(self, tenant_id: UUID, purpose: str, value: str) -> str:
        """A keyed hash of ``value`` for exact lookups, never reversible to ``value``."""
        ...

    def blind_indexes(self, tenant_id: UUID, purpose: str, values: Iterable[str]) -> list[str]:
        """:meth:`blind_index` of each of ``values`` (the tenant's key looked up once)."""
        ...

    def flush(self) -> None: ...


def reveal(sealer: Sealer, value: Sealed | None) -> Revealed | None:
    if value is None:
        return None
    return sealer.open(value)
