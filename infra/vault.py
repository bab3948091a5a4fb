"""The key vault: one AES-256-GCM key per data scope, wrapped by the master key.

Sealing a value encrypts it under its scope's key with the scope id as associated data
(so ciphertext cannot be moved between scopes). Destroying a scope deletes its wrapped
key, leaves a tombstone (so values open as ERASED rather than failing) and bumps a
generation counter that other processes watch to drop cached keys.

Storage hygiene (P5): on SQLite the vault is its own file with ``secure_delete`` on, and
every destruction ends with a truncating WAL checkpoint (no older page image of a deleted
key lingers in the log); on PostgreSQL destroyed rows are deleted and the table vacuumed.
Keep vault backups for less than 7 days (docs/privacy.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contact_centre.clock import Clock, SystemClock
from contact_centre.errors import ConflictError
from contact_centre.privacy import ERASED, Revealed, Scope, ScopeKind, Sealed
from infra.db import Database
from infra.store import IndexConflictError

_NONCE = 12
_WRAP_AAD = b"contact-centre/vault/v1|"
_DESTROYED = b""  # cache marker for a destroyed scope


class VaultIntegrityError(Exception):
    """A sealed value or wrapped key failed authentication: tampering or a wrong master key."""


class ScopeErasedError(ConflictError):
    """Something tried to seal new data into a scope whose key was destroyed."""

    code = "erased"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


VAULT_DDL = [
    "CREATE TABLE IF NOT EXISTS cc_vault_keys ("
    "scope TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, wrapped TEXT NOT NULL, "
    "created_at BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS cc_vault_keys_tenant ON cc_vault_keys (tenant_id)",
    "CREATE TABLE IF NOT EXISTS cc_vault_destroyed ("
    "scope TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, destroyed_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cc_vault_meta (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
]


class KeyVault:
    """Implements :class:`contact_centre.privacy.Sealer`."""

    def __init__(
        self,
        db: Database,
        master_key: bytes,
        *,
        clock: Clock | None = None,
        cache_size: int = 100_000,
    ) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self.db = db
        self._master = AESGCM(master_key)
        self._clock = clock or SystemClock()
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_size = cache_size
        self._pending: dict[str, tuple[str, bytes]] = {}
        self._lock = threading.RLock()
        self._generation: int | None = None

    def create_tables(self) -> None:
        with self.db.transaction() as tx:
            for ddl in VAULT_DDL:
                tx.execute(ddl)
            tx.execute(
                "INSERT INTO cc_vault_meta (id, generation) VALUES (1, 0) "
                "ON CONFLICT (id) DO NOTHING"
            )

    # -- wrapping ----------------------------------------------------------------------
    def _wrap_key(self, scope_id: str, key: bytes) -> str:
        nonce = os.urandom(_NONCE)
        return _b64e(nonce + self._master.encrypt(nonce, key, _WRAP_AAD + scope_id.encode()))

    def _unwrap_key(self, scope_id: str, wrapped: str) -> bytes:
        raw = _b64d(wrapped)
        try:
            return self._master.decrypt(raw[:_NONCE], raw[_NONCE:], _WRAP_AAD + scope_id.encode())
        except InvalidTag:
            raise VaultIntegrityError(f"wrapped key of {scope_id} does not authenticate") from None

    # -- cache -------------------------------------------------------------------------
    def _cache_put(self, scope_id: str, key: bytes) -> None:
        self._cache[scope_id] = key
        self._cache.move_to_end(scope_id)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    def _lookup(self, scope_id: str) -> bytes | None:
        """The scope's key, _DESTROYED if destroyed, None if it never existed."""
        with self._lock:
            cached = self._cache.get(scope_id)
            if cached is not None:
                return cached
            pending = self._pending.get(scope_id)
            if pending is not None:
                return pending[1]
        with self.db.read() as tx:
            tx.execute("SELECT wrapped FROM cc_vault_keys WHERE scope = ?", (scope_id,))
            row = tx.fetchone()
            if row is None:
                tx.execute("SELECT 1 FROM cc_vault_destroyed WHERE scope = ?", (scope_id,))
                destroyed = tx.fetchone() is not None
        if row is None:
            if destroyed:
                with self._lock:
                    self._cache_put(scope_id, _DESTROYED)
                return _DESTROYED
            return None
        key = self._unwrap_key(scope_id, row[0])
        with self._lock:
            self._cache_put(scope_id, key)
        return key

    def _key_for_write(self, scope: Scope) -> bytes:
        key = self._lookup(scope.id)
        if key == _DESTROYED:
            raise ScopeErasedError(f"{scope.kind.value} data of this subject has been erased")
        if key is None:
            key = os.urandom(32)
            with self._lock:
                existing = self._pending.get(scope.id)
                if existing is not None:
                    return existing[1]
                self._pending[scope.id] = (str(scope.tenant_id), key)
        return key

    def refresh(self) -> None:
        """Drop cached keys if any process destroyed keys since the last look."""
        with self.db.read() as tx:
            tx.execute("SELECT generation FROM cc_vault_meta WHERE id = 1")
            row = tx.fetchone()
        generation = int(row[0]) if row else 0
        with self._lock:
            if self._generation is not None and generation != self._generation:
                self._cache.clear()
            self._generation = generation

    # -- Sealer port -------------------------------------------------------------------
    def seal(self, scope: Scope, plaintext: str) -> Sealed:
        key = self._key_for_write(scope)
        nonce = os.urandom(_NONCE)
        ciphertext = AESGCM(key).encrypt(nonce, plaintext.encode(), scope.id.encode())
        return Sealed(scope.id, _b64e(nonce + ciphertext))

    def open(self, sealed: Sealed) -> Revealed:
        key = self._lookup(sealed.scope)
        if key is None or key == _DESTROYED:
            # A key that never existed means the value was sealed by a transaction that
            # never committed its key: as unreadable as an erased one.
            return ERASED
        raw = _b64d(sealed.token)
        try:
            plaintext = AESGCM(key).decrypt(raw[:_NONCE], raw[_NONCE:], sealed.scope.encode())
        except InvalidTag:
            raise VaultIntegrityError(f"a value of {sealed.scope} does not authenticate") from None
        return plaintext.decode()

    def blind_index(self, tenant_id: UUID, purpose: str, value: str) -> str:
        key = self._key_for_write(Scope(tenant_id, ScopeKind.TENANT_INDEX, tenant_id))
        return hmac.new(key, f"{purpose}\x1e{value}".encode(), hashlib.sha256).hexdigest()

    def flush(self) -> None:
        with self._lock:
            pending = dict(self._pending)
        if not pending:
            return
        now = int(self._clock.now().timestamp() * 1_000_000)
        rows = [
            (scope_id, tenant, self._wrap_key(scope_id, key), now)
            for scope_id, (tenant, key) in pending.items()
        ]
        lost: list[str] = []
        with self.db.transaction() as tx:
            for row in rows:
                tx.execute(
                    "INSERT INTO cc_vault_keys (scope, tenant_id, wrapped, created_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (scope) DO NOTHING",
                    row,
                )
                if tx.rowcount != 1:
                    lost.append(row[0])
        with self._lock:
            for scope_id, (_, key) in pending.items():
                if self._pending.get(scope_id, (None, None))[1] == key:
                    del self._pending[scope_id]
                if scope_id in lost:
                    self._cache.pop(scope_id, None)
                else:
                    self._cache_put(scope_id, key)
        if lost:
            # Another process created the same scope's key first; values sealed under ours
            # would be unreadable, so the command must run again with the stored key.
            raise IndexConflictError(f"{len(lost)} scope keys were created concurrently")

    # -- destruction -------------------------------------------------------------------
    def destroy(self, scope_ids: Iterable[str]) -> int:
        """Crypto-shred scopes: their sealed values open as ERASED from now on."""
        ids = sorted(set(scope_ids))
        if not ids:
            return 0
        now = int(self._clock.now().timestamp() * 1_000_000)
        destroyed = 0
        with self.db.transaction() as tx:
            for scope_id in ids:
                tx.execute("SELECT tenant_id FROM cc_vault_keys WHERE scope = ?", (scope_id,))
                row = tx.fetchone()
                if row is None:
                    continue
                tx.execute("DELETE FROM cc_vault_keys WHERE scope = ?", (scope_id,))
                tx.execute(
                    "INSERT INTO cc_vault_destroyed (scope, tenant_id, destroyed_at) "
                    "VALUES (?, ?, ?) ON CONFLICT (scope) DO NOTHING",
                    (scope_id, row[0], now),
                )
                destroyed += 1
            tx.execute("UPDATE cc_vault_meta SET generation = generation + 1 WHERE id = 1")
        with self._lock:
            for scope_id in ids:
                self._pending.pop(scope_id, None)
                if scope_id in self._cache:
                    self._cache[scope_id] = _DESTROYED
        self._scrub()
        return destroyed

    def destroy_tenant(self, tenant_id: UUID) -> int:
        with self.db.read() as tx:
            tx.execute("SELECT scope FROM cc_vault_keys WHERE tenant_id = ?", (str(tenant_id),))
            scopes = [row[0] for row in tx.fetchall()]
        return self.destroy(scopes)

    def is_destroyed(self, scope_id: str) -> bool:
        return self._lookup(scope_id) == _DESTROYED

    def _scrub(self) -> None:
        """Make sure deleted key bytes do not linger in dead row versions.

        On SQLite ``secure_delete`` zeroes freed cells as they are freed; the checkpoint
        then copies the zeroed pages home and truncates the write-ahead log, so no older
        page image holding the key stays in the WAL file.
        """
        if self.db.dialect == "postgres":
            self.db.execute_outside_transaction("VACUUM cc_vault_keys")
        else:
            self.db.execute_outside_transaction("PRAGMA wal_checkpoint(TRUNCATE)")
