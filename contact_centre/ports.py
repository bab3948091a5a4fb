"""Ports the application service needs from the outside world.

Implementations live in ``infra/`` (SQL, phonenumbers, the key vault); tests may pass
their own implementations, never patches.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from contact_centre.interaction import Identity


class IndexOpKind(StrEnum):
    INSERT = "insert"  # fails (IntegrityError) if the key exists: claims a unique key
    UPSERT = "upsert"
    DELETE = "delete"
    CAS = "cas"  # replace ``expected`` by ``value``; fails if the stored value differs
    DELETE_PREFIX = "delete-prefix"  # every key beginning with ``key`` (a tenant purge)


@dataclass(frozen=True, slots=True)
class IndexOp:
    """A change to the write-side index, committed in the same transaction as events."""

    kind: IndexOpKind
    namespace: str
    key: str
    value: str | None = None
    expected: str | None = None


class WriteIndex(Protocol):
    """Unique lookups the write side needs before it can decide (find-or-create).

    Keys are keyed hashes or ids, never personal data in clear. Values are short JSON
    documents. Changes are not made here: they travel as :class:`IndexOp` with the events
    (``Application.save(..., index_ops=[...])``) so that both commit or neither does.
    """

    def get_many(self, namespace: str, keys: Sequence[str]) -> dict[str, str]: ...

    def get_in(self, wanted: Mapping[str, Sequence[str]]) -> dict[tuple[str, str], str]:
        """Keys of several namespaces in one read: (namespace, key) → value, for those
        found."""
        ...

    def scan_prefix(self, namespace: str, prefix: str) -> list[tuple[str, str]]:
        """Every (key, value) whose key begins with ``prefix`` (which ends with ':')."""
        ...


class IdentityNormaliser(Protocol):
    """Brings an identity into canonical form (E.164 phone numbers, lower-case email)."""

    def normalise(self, identity: Identity, default_region: str | None = None) -> Identity:
        """The canonical identity, or :class:`~contact_centre.errors.ValidationError`."""
        ...
