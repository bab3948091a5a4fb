"""The audit log: every read of personal data through the API, tamper-evident.

Entries hold ids only (who, which subjects, when, which endpoint: P13, P14). Each
tenant's entries form a hash chain: an entry's hash covers its fields and the previous
entry's hash, so changing, removing or reordering any entry breaks every hash after it.
``contact-centre audit verify`` recomputes the chains. Entries older than the usage
retention period are pruned from the front of a chain; the hash of the last pruned entry
is kept as the chain's new anchor, so what remains still verifies.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import queue
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from infra.db import Database, Tx
from projections.base import micros

GENESIS = "0" * 64

AUDIT_DDL = (
    "CREATE TABLE IF NOT EXISTS cc_audit ("
    " tenant_id TEXT NOT NULL, seq BIGINT NOT NULL, at BIGINT NOT NULL, actor TEXT NOT NULL,"
    " role TEXT NOT NULL, action TEXT NOT NULL, subject_kind TEXT NOT NULL,"
    " subjects TEXT NOT NULL, endpoint TEXT NOT NULL, prev_hash TEXT NOT NULL,"
    " hash TEXT NOT NULL, PRIMARY KEY (tenant_id, seq))",
    "CREATE INDEX IF NOT EXISTS cc_audit_at ON cc_audit (tenant_id, at)",
    "CREATE TABLE IF NOT EXISTS cc_audit_heads ("
    " tenant_id TEXT PRIMARY KEY, seq BIGINT NOT NULL, hash TEXT NOT NULL,"
    " anchor_seq BIGINT NOT NULL, anchor_hash TEXT NOT NULL)",
)


@dataclass(frozen=True)
class AuditEntry:
    tenant_id: UUID
    at: datetime
    actor: str
    role: str
    action: str
    subject_kind: str
    subjects: tuple[str, ...]
    endpoint: str


def entry_hash(prev_hash: str, tenant_id: str, seq: int, fields: dict[str, Any]) -> str:
    canonical = json.dumps(
        {"tenant_id": tenant_id, "seq": seq, **fields}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(f"{prev_hash}\n{canonical}".encode()).hexdigest()


def _fields(entry: AuditEntry) -> dict[str, Any]:
    return {
        "at": micros(entry.at),
        "actor": entry.actor,
        "role": entry.role,
        "action": entry.action,
        "subject_kind": entry.subject_kind,
        "subjects": list(entry.subjects),
        "endpoint": entry.endpoint,
    }


@dataclass
class VerifyResult:
    tenant_id: str
    entries: int
    ok: bool
    broken_at: int | None = None


class AuditLog:
    """Appends are batched by one thread; a request's data is sent only once its audit
    entry is durable."""

    def __init__(self, db: Database, max_batch: int = 500) -> None:
        self.db = db
        self.max_batch = max_batch
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None

    def create_tables(self) -> None:
        with self.db.transaction() as tx:
            for ddl in AUDIT_DDL:
                tx.execute(ddl)

    # -- appending ---------------------------------------------------------------------
    def append(self, entries: Sequence[AuditEntry]) -> None:
        """Append entries, in order, to their tenants' chains (one transaction)."""
        by_tenant: dict[str, list[AuditEntry]] = {}
        for entry in entries:
            by_tenant.setdefault(str(entry.tenant_id), []).append(entry)
        with self.db.transaction() as tx:
            for tenant_id, items in sorted(by_tenant.items()):
                seq, prev = self._head(tx, tenant_id, lock=True)
                rows = []
                for entry in items:
                    seq += 1
                    fields = _fields(entry)
                    digest = entry_hash(prev, tenant_id, seq, fields)
                    rows.append(
                        (
                            tenant_id,
                            seq,
                            fields["at"],
                            entry.actor,
                            entry.role,
                            entry.action,
                            entry.subject_kind,
                            json.dumps(fields["subjects"]),
                            entry.endpoint,
                            prev,
                            digest,
                        )
                    )
                    prev = digest
                tx.executemany(
                    "INSERT INTO cc_audit (tenant_id, seq, at, actor, role, action,"
                    " subject_kind, subjects, endpoint, prev_hash, hash)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    rows,
                )
                tx.execute(
                    "UPDATE cc_audit_heads SET seq = ?, hash = ? WHERE tenant_id = ?",
                    (seq, prev, tenant_id),
                )

    def _head(self, tx: Tx, tenant_id: str, *, lock: bool) -> tuple[int, str]:
        tx.execute(
            "INSERT INTO cc_audit_heads (tenant_id, seq, hash, anchor_seq, anchor_hash)"
            " VALUES (?, 0, ?, 0, ?) ON CONFLICT (tenant_id) DO NOTHING",
            (tenant_id, GENESIS, GENESIS),
        )
        lock_clause = " FOR UPDATE" if lock and tx.dialect == "postgres" else ""
        tx.execute(
            f"SELECT seq, hash FROM cc_audit_heads WHERE tenant_id = ?{lock_clause}", (tenant_id,)
        )
        row = tx.fetchone()
        assert row is not None
        return int(row[0]), str(row[1])

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="audit", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    async def record(self, entry: AuditEntry) -> None:
        """Append one entry (batched with others) and wait until it is durable."""
        if self._thread is None:  # not started (tests, CLI): append directly
            await asyncio.to_thread(self.append, [entry])
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._queue.put((entry, future, loop))
        await future

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.put(None)
                    break
                batch.append(item)
            error: BaseException | None = None
            try:
                self.append([entry for entry, _, _ in batch])
            except Exception as exc:  # the reads waiting on it fail: no unaudited data
                error = exc
            for _, future, loop in batch:
                loop.call_soon_threadsafe(_settle, future, error)

    # -- reading, verifying, pruning ---------------------------------------------------
    def entries(
        self,
        tenant_id: UUID,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        subject: str | None = None,
        after_seq: int = 0,
        limit: int = 200,
    ) -> list[dict[str, Any]]:
        where = ["tenant_id = ?", "seq > ?"]
        params: list[Any] = [str(tenant_id), after_seq]
        if since is not None:
            where.append("at >= ?")
            params.append(micros(since))
        if until is not None:
            where.append("at < ?")
            params.append(micros(until))
        if subject is not None:
            where.append("subjects LIKE ?")
            params.append(f'%"{subject}"%')
        params.append(limit)
        keys = (
            "seq",
            "at",
            "actor",
            "role",
            "action",
            "subject_kind",
            "subjects",
            "endpoint",
            "prev_hash",
            "hash",
        )
        with self.db.read() as tx:
            tx.execute(
                f"SELECT {', '.join(keys)} FROM cc_audit WHERE {' AND '.join(where)}"
                " ORDER BY seq LIMIT ?",
                params,
            )
            rows = [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]
        for row in rows:
            row["subjects"] = json.loads(row["subjects"])
        return rows

    def verify(self, tenant_id: UUID | None = None) -> list[VerifyResult]:
        results = []
        with self.db.read() as tx:
            tx.execute(
                "SELECT tenant_id, seq, hash, anchor_seq, anchor_hash FROM cc_audit_heads"
                + (" WHERE tenant_id = ?" if tenant_id else "")
                + " ORDER BY tenant_id",
                (str(tenant_id),) if tenant_id else (),
            )
            heads = tx.fetchall()
        for tenant, head_seq, head_hash, anchor_seq, anchor_hash in heads:
            results.append(
                self._verify_chain(
                    str(tenant), int(head_seq), str(head_hash), int(anchor_seq), str(anchor_hash)
                )
            )
        return results

    def _verify_chain(
        self, tenant: str, head_seq: int, head_hash: str, anchor_seq: int, anchor_hash: str
    ) -> VerifyResult:
        prev, expected_seq, count = anchor_hash, anchor_seq, 0
        after = anchor_seq
        while True:
            with self.db.read() as tx:
                tx.execute(
                    "SELECT seq, at, actor, role, action, subject_kind, subjects, endpoint,"
                    " prev_hash, hash FROM cc_audit WHERE tenant_id = ? AND seq > ?"
                    " ORDER BY seq LIMIT 5000",
                    (tenant, after),
                )
                rows = tx.fetchall()
            if not rows:
                break
            for seq, at, actor, role, action, kind, subjects, endpoint, prev_hash, digest in rows:
                expected_seq += 1
                fields = {
                    "at": at,
                    "actor": actor,
                    "role": role,
                    "action": action,
                    "subject_kind": kind,
                    "subjects": json.loads(subjects),
                    "endpoint": endpoint,
                }
                if (
                    seq != expected_seq
                    or prev_hash != prev
                    or entry_hash(prev, tenant, int(seq), fields) != digest
                ):
                    return VerifyResult(tenant, count, ok=False, broken_at=int(seq))
                prev, count = digest, count + 1
            after = int(rows[-1][0])
        if expected_seq != head_seq or prev != head_hash:
            return VerifyResult(tenant, count, ok=False, broken_at=expected_seq + 1)
        return VerifyResult(tenant, count, ok=True)

    def prune(self, tenant_id: UUID, before: datetime) -> int:
        """Delete a tenant's entries older than ``before`` (usage data retention), keeping
        the chain verifiable from the last deleted entry's hash."""
        with self.db.transaction() as tx:
            tx.execute(
                "SELECT seq, hash FROM cc_audit WHERE tenant_id = ? AND at < ?"
                " ORDER BY seq DESC LIMIT 1",
                (str(tenant_id), micros(before)),
            )
            last = tx.fetchone()
            if last is None:
                return 0
            tx.execute(
                "DELETE FROM cc_audit WHERE tenant_id = ? AND seq <= ?", (str(tenant_id), last[0])
            )
            deleted = tx.rowcount
            tx.execute(
                "UPDATE cc_audit_heads SET anchor_seq = ?, anchor_hash = ? WHERE tenant_id = ?",
                (last[0], last[1], str(tenant_id)),
            )
        return max(int(deleted), 0)

    def purge_tenant(self, tenant_id: UUID) -> int:
        with self.db.transaction() as tx:
            tx.execute("DELETE FROM cc_audit WHERE tenant_id = ?", (str(tenant_id),))
            deleted = tx.rowcount
            tx.execute("DELETE FROM cc_audit_heads WHERE tenant_id = ?", (str(tenant_id),))
        return max(int(deleted), 0)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
