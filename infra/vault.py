"""The key vault: one AES-256-GCM key per data scope, wrapped by the master key.

Sealing a value encrypts it under its scope's key with the scope id as associated data
(so ciphertext cannot be moved between scopes). Destroying a scope deletes its wrapped
key, leaves a tombstone (so values open as ERASED rather than failing) and bumps a
generation counter that other processes watch to drop cached keys.

Storage hygiene (P5): on SQLite the vault is its own file with ``secure_delete`` on, and
every destruction ends with a truncating WAL checkpoint (no older page image of a deleted
key lingers in the log); on PostgreSQL destroyed rows are deleted and the table vacuumed
(in the background, right after the destruction commits; closing waits for it).
Keep vault backups for less than 7 days (docs/privacy.md).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Iterable
from typing import Any
from uuid import UUID

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contact_centre.clock import Clock, SystemClock
from contact_centre.errors import ConflictError
from contact_centre.privacy import ERASED, Revealed, Scope, ScopeKind, Sealed
from infra.db import Database, keep_without_rowid
from infra.store import IndexConflictError
from projections.base import one_of

log = logging.getLogger(__name__)

_NONCE = 12
_CHUNK = 200  # scopes per statement (SQLite allows 32,766 parameters; 3 per row)
_WRAP_AAD = b"contact-centre/vault/v1|"


class VaultIntegrityError(Exception):
    """A sealed value or wrapped key failed authentication: tampering or a wrong master key."""


class ScopeErasedError(ConflictError):
    """Something tried to seal new data into a scope whose key was destroyed."""

    code = "erased"


def _keyed_hashes(key: bytes, purpose: str, values: Iterable[str]) -> list[str]:
    """HMAC-SHA256 of ``purpose``, a separator and each value: the hash is keyed once and
    copied for each (a name gives ~20 search prefixes)."""
    keyed = hmac.new(key, f"{purpose}\x1e".encode(), hashlib.sha256)
    digests = []
    for value in values:
        one = keyed.copy()
        one.update(value.encode())
        digests.append(one.hexdigest())
    return digests


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


KEYS_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_vault_keys ("
    "scope TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, wrapped TEXT NOT NULL, "
    "created_at BIGINT NOT NULL)"
)
VAULT_DDL = [
    KEYS_DDL,
    "CREATE INDEX IF NOT EXISTS cc_vault_keys_tenant ON cc_vault_keys (tenant_id)",
    "CREATE TABLE IF NOT EXISTS cc_vault_destroyed ("
    "scope TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, destroyed_at BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cc_vault_meta (id INTEGER PRIMARY KEY, generation BIGINT NOT NULL)",
]


class _Key:
    """An unwrapped scope key, with its cipher object ready (building one costs as much
    as sealing a short value)."""

    __slots__ = ("aead", "raw")

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.aead = AESGCM(raw)


_DESTROYED_KEY = _Key(bytes(32))  # marker only: never used to seal or open


class KeyVault:
    """Implements :class:`contact_centre.privacy.Sealer`."""

    def __init__(
        self,
        db: Database,
        master_key: bytes,
        *,
        clock: Clock | None = None,
        cache_size: int = 100_000,
        scrub_in_background: bool = False,
    ) -> None:
        if len(master_key) != 32:
            raise ValueError("the master key must be 32 bytes")
        self.db = db
        self._master = AESGCM(master_key)
        self._clock = clock or SystemClock()
        # Insertion-ordered, evicted oldest first. Reads need no lock (dict reads are
        # atomic); every change happens under the lock.
        self._cache: dict[str, _Key] = {}
        self._cache_size = cache_size
        self._pending: dict[str, tuple[str, _Key]] = {}
        self._lock = threading.RLock()
        self._generation: int | None = None
        # Storage hygiene after a destruction: inline, or by a thread woken right after
        # the destruction commits (its fsyncs, or on PostgreSQL a VACUUM of the vault's
        # table, stay out of the erasure's latency). Destructions
        # while a scrub runs are covered by the next one.
        self._scrub_in_background = scrub_in_background
        self._scrub_cv = threading.Condition()
        self._scrubs_wanted = 0  # destructions so far
        self._scrubs_done = 0  # destructions whose rows a finished scrub covered
        self._scrubber: threading.Thread | None = None
        self._closing = False

    def create_tables(self) -> None:
        with self.db.transaction() as tx:
            if self.db.dialect == "sqlite":
                # keys stored in their scope's order: one B-tree to find, add or delete
                # a key in, not a key index beside a rowid table (before the tenant index
                # below, which moving an older vault's table over drops with it)
                keep_without_rowid(
                    tx.execute, tx.fetchone, "cc_vault_keys", f"{KEYS_DDL} WITHOUT ROWID"
                )
            for ddl in VAULT_DDL:
                tx.execute(ddl)
            tx.execute(
                "INSERT INTO cc_vault_meta (id, generation) VALUES (1, 0) "
                "ON CONFLICT (id) DO NOTHING"
            )
        if self.db.dialect != "postgres":
            # A process that died between a destruction and its scrub left the destroyed
            # keys' older page images in the log: truncate it now (cheap when it is not).
            self._scrub()

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
    def _cache_put(self, scope_id: str, key: _Key) -> None:
        with self._lock:
            self._cache[scope_id] = key
            while len(self._cache) > self._cache_size:
                del self._cache[next(iter(self._cache))]

    def _lookup(self, scope_id: str) -> _Key | None:
        """The scope's key, _DESTROYED_KEY if destroyed, None if it never existed."""
        cached = self._cache.get(scope_id)
        if cached is not None:
            return cached
        pending = self._pending.get(scope_id)
        if pending is not None:
            return pending[1]
        with self.db.read() as tx:
            tx.execute("SELECT wrapped FROM cc_vault_keys WHERE scope = ?", (scope_id,))
            row = tx.fetchone()
            destroyed = False
            if row is None:
                tx.execute("SELECT 1 FROM cc_vault_destroyed WHERE scope = ?", (scope_id,))
                destroyed = tx.fetchone() is not None
        if row is None:
            if destroyed:
                self._cache_put(scope_id, _DESTROYED_KEY)
                return _DESTROYED_KEY
            return None
        key = _Key(self._unwrap_key(scope_id, row[0]))
        self._cache_put(scope_id, key)
        return key

    def preload(self, scope_ids: Iterable[str]) -> None:
        """Bring the keys of many scopes into the cache in one query per chunk, instead
        of one read transaction per :meth:`open` (a round trip each on PostgreSQL)."""
        wanted = sorted({s for s in scope_ids if s not in self._cache and s not in self._pending})
        if not wanted:
            return
        found: dict[str, str] = {}
        destroyed: set[str] = set()
        with self.db.read() as tx:
            for start in range(0, len(wanted), _CHUNK):
                chunk = wanted[start : start + _CHUNK]
                marks, params = one_of(tx, chunk)
                tx.execute(f"SELECT scope, wrapped FROM cc_vault_keys WHERE scope {marks}", params)
                found.update((str(r[0]), str(r[1])) for r in tx.fetchall())
                missing = [s for s in chunk if s not in found]
                if missing:
                    marks, params = one_of(tx, missing)
                    tx.execute(f"SELECT scope FROM cc_vault_destroyed WHERE scope {marks}", params)
                    destroyed.update(str(r[0]) for r in tx.fetchall())
        for scope_id, wrapped in found.items():
            self._cache_put(scope_id, _Key(self._unwrap_key(scope_id, wrapped)))
        for scope_id in destroyed:
            self._cache_put(scope_id, _DESTROYED_KEY)

    def _key_for_write(self, scope: Scope) -> _Key:
        key = self._lookup(scope.id)
        if key is _DESTROYED_KEY:
            raise ScopeErasedError(f"{scope.kind.value} data of this subject has been erased")
        if key is None:
            with self._lock:
                existing = self._pending.get(scope.id)
                if existing is not None:
                    return existing[1]
                key = _Key(os.urandom(32))
                self._pending[scope.id] = (str(scope.tenant_id), key)
        return key

    def refresh(self) -> None:
        """Drop cached keys if any process destroyed keys since the last look."""
        rows = self.db.fetch("SELECT generation FROM cc_vault_meta WHERE id = 1")
        generation = int(rows[0][0]) if rows else 0
        with self._lock:
            if self._generation is not None and generation != self._generation:
                self._cache.clear()
            self._generation = generation

    # -- Sealer port -------------------------------------------------------------------
    def new_scope(self, scope: Scope) -> None:
        with self._lock:
            if scope.id not in self._pending and scope.id not in self._cache:
                self._pending[scope.id] = (str(scope.tenant_id), _Key(os.urandom(32)))

    def seal(self, scope: Scope, plaintext: str) -> Sealed:
        scope_id = scope.id
        key = self._key_for_write(scope)
        nonce = os.urandom(_NONCE)
        ciphertext = key.aead.encrypt(nonce, plaintext.encode(), scope_id.encode())
        return Sealed(scope_id, _b64e(nonce + ciphertext))

    def open(self, sealed: Sealed) -> Revealed:
        key = self._lookup(sealed.scope)
        if key is None or key is _DESTROYED_KEY:
            # A key that never existed means the value was sealed by a transaction that
            # never committed its key: as unreadable as an erased one.
            return ERASED
        raw = _b64d(sealed.token)
        try:
            plaintext = key.aead.decrypt(raw[:_NONCE], raw[_NONCE:], sealed.scope.encode())
        except InvalidTag:
            raise VaultIntegrityError(f"a value of {sealed.scope} does not authenticate") from None
        return plaintext.decode()

    def blind_index(self, tenant_id: UUID, purpose: str, value: str) -> str:
        return self.blind_indexes(tenant_id, purpose, (value,))[0]

    def blind_indexes(self, tenant_id: UUID, purpose: str, values: Iterable[str]) -> list[str]:
        key = self._key_for_write(self._index_scope(tenant_id))
        return _keyed_hashes(key.raw, purpose, values)

    @staticmethod
    def _index_scope(tenant_id: UUID) -> Scope:
        return Scope(tenant_id, ScopeKind.TENANT_INDEX, tenant_id)

    def existing_blind_index(self, tenant_id: UUID, purpose: str, value: str) -> str | None:
        """As :meth:`blind_index`, for reads: None (and no key made) when the tenant has no
        index key yet, or it was destroyed."""
        key = self._lookup(self._index_scope(tenant_id).id)
        if key is None or key is _DESTROYED_KEY:
            return None
        return _keyed_hashes(key.raw, purpose, (value,))[0]

    def flush(self) -> None:
        with self._lock:
            pending = dict(self._pending)
        if not pending:
            return
        now = int(self._clock.now().timestamp() * 1_000_000)
        rows = [
            (scope_id, tenant, self._wrap_key(scope_id, key.raw), now)
            for scope_id, (tenant, key) in pending.items()
        ]
        stored: set[str] = set()
        with self.db.transaction() as tx:
            for start in range(0, len(rows), 200):
                chunk = rows[start : start + 200]
                if tx.dialect == "postgres":  # one text whatever the count, 4 parameters
                    source = "SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::bigint[])"
                    params: list[Any] = [list(column) for column in zip(*chunk, strict=True)]
                else:
                    source = "VALUES " + ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                    params = [value for row in chunk for value in row]
                tx.execute(
                    "INSERT INTO cc_vault_keys (scope, tenant_id, wrapped, created_at) "
                    + source
                    + " ON CONFLICT (scope) DO NOTHING RETURNING scope",
                    params,
                )
                stored.update(str(r[0]) for r in tx.fetchall())
        lost = [
            scope_id
            for scope_id, _, _, _ in rows
            if scope_id not in stored and not self._stored_key_is(scope_id, pending[scope_id][1])
        ]
        with self._lock:
            for scope_id, (_, key) in pending.items():
                current = self._pending.get(scope_id)
                if current is not None and current[1] is key:
                    del self._pending[scope_id]
                if scope_id in lost:
                    self._cache.pop(scope_id, None)
                else:
                    self._cache_put(scope_id, key)
        if lost:
            # Another process created the same scope's key first; values sealed under ours
            # would be unreadable, so the command must run again with the stored key.
            raise IndexConflictError(f"{len(lost)} scope keys were created concurrently")

    def _stored_key_is(self, scope_id: str, key: _Key) -> bool:
        """Whether the stored key of ``scope_id`` is ``key`` (another thread of this
        process may have flushed our pending key first: not a conflict)."""
        with self.db.read() as tx:
            tx.execute("SELECT wrapped FROM cc_vault_keys WHERE scope = ?", (scope_id,))
            row = tx.fetchone()
        return row is not None and self._unwrap_key(scope_id, row[0]) == key.raw

    # -- destruction -------------------------------------------------------------------
    def destroy(self, scope_ids: Iterable[str]) -> int:
        """Crypto-shred scopes: their sealed values open as ERASED from now on."""
        ids = sorted(set(scope_ids))
        if not ids:
            return 0
        now = int(self._clock.now().timestamp() * 1_000_000)
        destroyed = 0
        with self.db.transaction() as tx:
            # A few statements per chunk of scopes, not three per scope: on PostgreSQL
            # every read of a result is a round trip.
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks, params = one_of(tx, chunk)
                tx.execute(
                    f"DELETE FROM cc_vault_keys WHERE scope {marks} RETURNING scope, tenant_id",
                    params,
                )
                gone = sorted((str(r[0]), str(r[1])) for r in tx.fetchall())
                if not gone:
                    continue
                if self.db.dialect == "postgres":  # arrays, as in one_of
                    tx.execute(
                        "INSERT INTO cc_vault_destroyed (scope, tenant_id, destroyed_at)"
                        " SELECT s, t, ? FROM unnest(?::text[], ?::text[]) AS u (s, t)"
                        " ON CONFLICT (scope) DO NOTHING",
                        (now, [g[0] for g in gone], [g[1] for g in gone]),
                    )
                else:
                    tx.execute(
                        "INSERT INTO cc_vault_destroyed (scope, tenant_id, destroyed_at) VALUES "
                        + ", ".join(["(?, ?, ?)"] * len(gone))
                        + " ON CONFLICT (scope) DO NOTHING",
                        [value for scope_id, tenant in gone for value in (scope_id, tenant, now)],
                    )
                destroyed += len(gone)
            tx.execute("UPDATE cc_vault_meta SET generation = generation + 1 WHERE id = 1")
        with self._lock:
            for scope_id in ids:
                self._pending.pop(scope_id, None)
                self._cache[scope_id] = _DESTROYED_KEY
        if self._scrub_in_background:
            self._request_scrub()
        else:
            self._scrub()
        return destroyed

    def destroy_tenant(self, tenant_id: UUID) -> int:
        with self.db.read() as tx:
            tx.execute("SELECT scope FROM cc_vault_keys WHERE tenant_id = ?", (str(tenant_id),))
            scopes = [row[0] for row in tx.fetchall()]
        return self.destroy(scopes)

    def is_destroyed(self, scope_id: str) -> bool:
        return self._lookup(scope_id) is _DESTROYED_KEY

    # -- storage hygiene ---------------------------------------------------------------
    def _request_scrub(self) -> None:
        with self._scrub_cv:
            self._scrubs_wanted += 1
            if self._scrubber is None or not self._scrubber.is_alive():
                self._scrubber = threading.Thread(
                    target=self._scrub_loop, name="vault-scrub", daemon=True
                )
                self._scrubber.start()
            self._scrub_cv.notify_all()

    def _scrub_loop(self) -> None:
        failures = 0
        while True:
            with self._scrub_cv:
                self._scrub_cv.wait_for(
                    lambda: self._scrubs_done < self._scrubs_wanted or self._closing
                )
                if self._scrubs_done >= self._scrubs_wanted:
                    return  # closing, nothing left to scrub
                target = self._scrubs_wanted
            try:
                self._scrub()
            except Exception as error:  # the next destruction (or retry) scrubs again
                failures += 1
                log.warning("vacuum of the vault failed: %s", type(error).__name__)
                if self._closing and failures >= 3:
                    return
                time.sleep(min(5.0, 0.1 * 2**failures))
                continue
            failures = 0
            with self._scrub_cv:
                self._scrubs_done = max(self._scrubs_done, target)
                self._scrub_cv.notify_all()

    def wait_scrubbed(self, timeout: float = 30.0) -> bool:
        """Wait until the storage of every key destroyed so far has been scrubbed (at once
        when scrubbing inline); False if that took longer than ``timeout`` seconds."""
        with self._scrub_cv:
            target = self._scrubs_wanted
            return self._scrub_cv.wait_for(lambda: self._scrubs_done >= target, timeout)

    def close(self, timeout: float = 30.0) -> None:
        """Finish the pending scrub (a process that erased and exits still leaves no
        destroyed key in the table's pages), then stop the scrubbing thread."""
        with self._scrub_cv:
            self._closing = True
            self._scrub_cv.notify_all()
            scrubber = self._scrubber
        if scrubber is not None:
            scrubber.join(timeout)
            if scrubber.is_alive():
                log.warning("the vault's scrub did not finish within %.0f s", timeout)

    def _scrub(self) -> None:
        """Make sure deleted key bytes do not linger in dead row versions.

        On SQLite ``secure_delete`` zeroes freed cells as they are freed; the checkpoint
        then copies the zeroed pages home and truncates the write-ahead log, so no older
        page image holding the key stays in the WAL file. On PostgreSQL VACUUM removes the
        dead row versions (and their index entries) from the table's pages.

        PARALLEL 0: PostgreSQL otherwise starts a worker process for the index cleanup of
        a table this size even when it has nothing to clean (an erasure's few dead rows
        fall under its bypass threshold). Measured on a vault of 259,405 keys with 51 just
        deleted: 16-25 ms with the worker, 1.2-1.9 ms without; the same rows removed.
        """
        if self.db.dialect == "postgres":
            self.db.execute_outside_transaction("VACUUM (PARALLEL 0) cc_vault_keys")
        else:
            self.db.execute_outside_transaction("PRAGMA wal_checkpoint(TRUNCATE)")
