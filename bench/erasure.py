"""Erasure benchmark: how long one subject's erasure takes as the event log grows, and the
retention sweep's rate.

For each store size (events in the log) a fresh store is filled with background traffic
(email, SMS and webchat from many senders, in batches as the HTTP writer sends them), with
the benchmark's subjects spread through it: each subject has 50 conversations (one per
email thread). Then each subject is erased as an erasure request does it (the privacy
service: erasure events, blind-index removal, key destruction with the vault's storage
hygiene, read models blanked inline) and timed. Target: p99 < 100 ms at every size (the
work is per subject, so it must not grow with the log). Beside it, the part of that time
until the subject's data was unreadable: erasure events committed and keys destroyed,
before the read models took the events.

Last, the clock moves seven months ahead and a retention sweep erases the chat-visitor
data that fell due; its rate is scopes erased per second.

    ./dev bench erasure [--backend sqlite|postgres|both] [--sizes 10000,1000000]
                        [--subjects 20] [--conversations 50] [--batch 2000]
                        [--data-dir DIR [--reuse] [--fill traffic|copy-sqlite]]
                        [--cache MODE] [--pace PACE] [--no-freeze]

With --data-dir the filled stores are kept under DIR (SQLite files, or a PostgreSQL
cluster kept there) with a manifest.json beside each: the subjects' contact ids, the
tenant id and the clock at the end of the fill (ids only: the traffic is synthetic). Every
run erases in a copy of the filled store, so --reuse measures the same store again
without the fill, which at 1,000,000 events takes most of an hour.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from common import backend, percentile, shared_memory

from contact_centre.application import Receive
from contact_centre.clock import ManualClock
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.config import RESERVE_CACHE_MIB, Settings
from infra.localpg import LocalPostgres
from infra.runtime import Runtime, build, freeze_startup_heap
from infra.scheduler import TickerRunner

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BATCH = 2000  # interactions per write transaction (the HTTP writer batches too)


def _interaction(
    tenant: UUID,
    channel: Channel,
    kind: IdentityKind,
    address: str,
    thread: str | None,
    at: datetime,
) -> Interaction:
    return Interaction(
        tenant_id=tenant,
        channel=channel,
        direction=Direction.INBOUND,
        provider="bench",
        provider_message_id=str(uuid4()),
        sender=Identity(kind, address, "Bench Sender"),
        body="Hello, I have a question about my order and would like a call back",
        occurred_at=at,
        thread_key=thread,
    )


def fill(
    rt: Runtime,
    tenant: UUID,
    events: int,
    subjects: int,
    conversations: int,
    clock: ManualClock,
    batch_size: int = BATCH,
) -> list[UUID]:
    """Background traffic up to ``events`` events, the subjects' conversations spread
    through it; returns the subjects' contact ids."""
    app = rt.app
    rng = random.Random(7)
    senders = max(100, events // 10)
    # the subjects' messages, shuffled into the stream
    pending = [(s, c) for s in range(subjects) for c in range(conversations)]
    rng.shuffle(pending)
    contacts: dict[int, UUID] = {}
    started = time.perf_counter()
    last_report = started
    while True:
        written = app.recorder.max_notification_id() or 0
        if written >= events and not pending:
            break
        batch = []
        for _ in range(batch_size):
            clock.advance(timedelta(milliseconds=50))
            at = clock.now()
            roll = rng.random()
            remaining = max(1.0, (events - written) / 1.6)  # messages still to come, roughly
            if pending and (written >= events or rng.random() < len(pending) / remaining):
                s, c = pending.pop()
                item = _interaction(
                    tenant,
                    Channel.EMAIL,
                    IdentityKind.EMAIL,
                    f"subject{s}@bench.example",
                    f"s{s}-t{c}",
                    at,
                )
                batch.append((s, Receive(app, item)))
            elif written < events:
                if roll < 0.03:  # a new webchat visitor: chat-visitor data, due in 6 months
                    item = _interaction(
                        tenant,
                        Channel.WEBCHAT,
                        IdentityKind.VISITOR,
                        f"v-{uuid4().hex[:12]}",
                        None,
                        at,
                    )
                elif roll < 0.5:
                    n = rng.randrange(senders)
                    item = _interaction(
                        tenant,
                        Channel.EMAIL,
                        IdentityKind.EMAIL,
                        f"user{n}@bench.example",
                        f"t{n}",
                        at,
                    )
                else:
                    n = rng.randrange(senders)
                    item = _interaction(
                        tenant,
                        Channel.SMS,
                        IdentityKind.PHONE,
                        f"+1202555{n % 10_000:04d}",
                        None,
                        at,
                    )
                batch.append((None, Receive(app, item)))
        if not batch:
            continue
        outcomes = app.run_batch([command for _, command in batch])
        for (s, _), outcome in zip(batch, outcomes, strict=True):
            if outcome.error is not None:
                raise outcome.error
            if s is not None:
                contacts[s] = outcome.result.contact_id
        now = time.perf_counter()
        if now - last_report > 10:
            last_report = now
            written = app.recorder.max_notification_id() or 0
            print(f"  filled {written:,} events ({written / (now - started):,.0f}/s)", flush=True)
    rt.catch_up()
    return [contacts[s] for s in range(subjects)]


MANIFEST_VERSION = 1


@dataclass
class Store:
    """A filled store: where it is, and what the benchmark needs to find its subjects
    again (ids and the clock; the bench's own synthetic data, nothing personal)."""

    settings: Settings
    tenant_id: UUID
    subjects: list[UUID]
    clock_at: datetime
    events: int
    fill_seconds: float

    def manifest(self, size: int, conversations: int) -> dict[str, Any]:
        return {
            "version": MANIFEST_VERSION,
            "size": size,
            "conversations": conversations,
            "events": self.events,
            "tenant_id": str(self.tenant_id),
            "subjects": [str(s) for s in self.subjects],
            "clock_at": self.clock_at.isoformat(),
            "fill_seconds": round(self.fill_seconds, 1),
        }


def _fill_store(
    settings: Settings, size: int, subjects: int, conversations: int, batch: int
) -> Store:
    clock = ManualClock(T0)
    rt = build(settings, clock=clock)
    try:
        tenant, _ = rt.app.register_tenant("Bench")
        began = time.perf_counter()
        # one subject more than are timed: the warm-up erases it (see _warm_up)
        ids = fill(rt, tenant, size, subjects + 1, conversations, clock, batch)
        total = rt.app.recorder.max_notification_id() or 0
        fill_s = time.perf_counter() - began
    finally:
        rt.close()
    return Store(settings, tenant, ids, clock.now(), total, fill_s)


def _load_manifest(path: Path, size: int, subjects: int, conversations: int) -> dict[str, Any]:
    manifest = dict(json.loads(path.read_text()))
    if manifest.get("version") != MANIFEST_VERSION or manifest["size"] != size:
        raise SystemExit(f"{path}: made by another version of this benchmark; remove it")
    if manifest["conversations"] != conversations or len(manifest["subjects"]) < subjects:
        raise SystemExit(
            f"{path}: filled with {len(manifest['subjects'])} subjects of"
            f" {manifest['conversations']} conversations; remove it to fill again"
        )
    return manifest


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    tmp.replace(path)  # present only once the fill is complete


# what a copy of a kept SQLite store brings to PostgreSQL: (SQLite file, SELECT, table, columns);
# the read models are not copied but rebuilt from the log, as `projections rebuild all` does
_COPIED = (
    (
        "events.sqlite",
        "SELECT originator_id, originator_version, topic, state, rowid FROM stored_events"
        " ORDER BY rowid",
        "cc_events",
        "originator_id, originator_version, topic, state, notification_id",
    ),
    (
        "events.sqlite",
        "SELECT application_name, notification_id FROM tracking",
        "cc_events_tracking",
        "application_name, notification_id",
    ),
    (
        "events.sqlite",
        "SELECT namespace, key, value FROM cc_index",
        "cc_index",
        "namespace, key, value",
    ),
    (
        "vault.sqlite",
        "SELECT scope, tenant_id, wrapped, created_at FROM cc_vault_keys",
        "cc_vault_keys",
        "scope, tenant_id, wrapped, created_at",
    ),
    ("vault.sqlite", "SELECT id, generation FROM cc_vault_meta", "cc_vault_meta", "id, generation"),
    (
        "vault.sqlite",
        "SELECT scope, tenant_id, destroyed_at FROM cc_vault_destroyed",
        "cc_vault_destroyed",
        "scope, tenant_id, destroyed_at",
    ),
)


def _copy_sqlite_store(settings: Settings, source: Path, manifest: dict[str, Any]) -> Store:
    """Fill an empty PostgreSQL store with what a kept SQLite store holds, as stored (its
    personal fields stay sealed under the same master key), then rebuild every read model
    from the copied log: the same events without sending the traffic again."""
    assert settings.database_url is not None
    began = time.perf_counter()
    clock = ManualClock(datetime.fromisoformat(manifest["clock_at"]))
    build(settings, clock=clock).close()  # the tables, empty; projections at position 0
    with psycopg.connect(settings.database_url) as conn:
        for table in ("cc_vault_meta", "cc_events_tracking"):  # what the build wrote
            conn.execute(f"DELETE FROM {table}")
        for file, select, table, columns in _COPIED:
            source_db = sqlite3.connect(source / file)
            try:
                with conn.cursor().copy(f"COPY {table} ({columns}) FROM STDIN") as copy:
                    for row in source_db.execute(select):
                        copy.write_row(row)
            finally:
                source_db.close()
        conn.execute(
            "SELECT setval(pg_get_serial_sequence('cc_events', 'notification_id'),"
            " (SELECT MAX(notification_id) FROM cc_events))"
        )
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    print(f"  copied the log in {time.perf_counter() - began:,.0f} s; rebuilding read models")
    rt = build(settings, clock=clock)
    try:
        rt.feed.rebuild_together(rt.consumers, None)
        total = rt.app.recorder.max_notification_id() or 0
    finally:
        rt.close()
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE")
    store = _stored(settings, manifest)
    assert total == store.events, (total, store.events)
    return replace(store, fill_seconds=time.perf_counter() - began)


@contextmanager
def prepared(
    name: str,
    size: int,
    subjects: int,
    conversations: int,
    *,
    data_dir: Path | None,
    reuse: bool,
    batch: int,
    fill_from: str = "traffic",
) -> Iterator[Store]:
    """A filled store to erase in. With ``data_dir`` the filled store is kept there (one
    per backend and size) and each run erases in a copy of it, so that the next run, with
    ``reuse``, skips the fill."""
    if data_dir is None:
        with backend(name) as b:
            settings = Settings(
                data_dir=b.data_dir,
                database_url=b.database_url,
                master_key=base64.b64decode(b.env["CC_MASTER_KEY"]) if b.database_url else None,
                retention_interval_seconds=0,
                reserve_cache_mib=RESERVE_CACHE_MIB,
            )
            yield _fill_store(settings, size, subjects, conversations, batch)
        return
    home = data_dir / f"{name}-{size}"
    manifest_path = home / "manifest.json"
    if manifest_path.exists() and not reuse:
        raise SystemExit(f"{home} holds a filled store: pass --reuse, or remove it")
    home.mkdir(parents=True, exist_ok=True)
    manifest = (
        _load_manifest(manifest_path, size, subjects, conversations)
        if manifest_path.exists()
        else None
    )
    if name == "sqlite":
        filled, work = home / "filled", home / "run"
        if manifest is None:
            shutil.rmtree(filled, ignore_errors=True)  # an interrupted fill
            store = _fill_store(
                Settings(data_dir=filled, retention_interval_seconds=0),
                size,
                subjects,
                conversations,
                batch,
            )
            manifest = store.manifest(size, conversations)
            _write_manifest(manifest_path, manifest)
            print(f"  kept the filled store in {filled}")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(filled, work)
        # a store at rest: otherwise the first fsyncs while erasing write the whole copy out
        os.sync()
        try:
            settings = Settings(
                data_dir=work, retention_interval_seconds=0, reserve_cache_mib=RESERVE_CACHE_MIB
            )
            yield _stored(settings, manifest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return
    server = LocalPostgres(durable=True, directory=data_dir / "postgres-cluster")
    server.start()
    print(f"  {shared_memory(server)}", flush=True)
    try:
        key_path = home / "master.key"
        source = data_dir / f"sqlite-{size}"
        if manifest is None and fill_from == "copy-sqlite":
            if not (source / "manifest.json").exists():
                raise SystemExit(f"{source}: no filled SQLite store to copy (fill one first)")
            # the copied personal fields are sealed under the SQLite store's master key
            shutil.copy(source / "filled" / "master.key", key_path)
            os.chmod(key_path, 0o600)
        if not key_path.exists():
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(os.urandom(32))
        master_key = key_path.read_bytes()
        filled, work = f"bench_erasure_{size}", f"bench_erasure_{size}_run"
        with psycopg.connect(server.url, autocommit=True) as conn:
            if manifest is None:
                conn.execute(f'DROP DATABASE IF EXISTS "{filled}"')
                conn.execute(f'CREATE DATABASE "{filled}"')
                fill_settings = Settings(
                    data_dir=home / "data",
                    database_url=server.url_for(filled),
                    master_key=master_key,
                    retention_interval_seconds=0,
                )
                if fill_from == "copy-sqlite":
                    kept = _load_manifest(source / "manifest.json", size, subjects, conversations)
                    store = _copy_sqlite_store(fill_settings, source / "filled", kept)
                else:
                    store = _fill_store(fill_settings, size, subjects, conversations, batch)
                manifest = store.manifest(size, conversations)
                _write_manifest(manifest_path, manifest)
                print(f"  kept the filled store in {server.dir} (database {filled})")
            conn.execute(f'DROP DATABASE IF EXISTS "{work}"')
            # copied file by file (not through the write-ahead log, PostgreSQL 15's
            # default, which writes the whole store into the log and sets off one
            # checkpoint after another while the erasures run), then checkpointed: a
            # store at rest, as the SQLite copy is after its sync
            conn.execute(f'CREATE DATABASE "{work}" TEMPLATE "{filled}" STRATEGY FILE_COPY')
            conn.execute("CHECKPOINT")
        try:
            yield _stored(
                Settings(
                    data_dir=home / "data",
                    database_url=server.url_for(work),
                    master_key=master_key,
                    retention_interval_seconds=0,
                ),
                manifest,
            )
        finally:
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{work}"')
    finally:
        server.stop()


def _stored(settings: Settings, manifest: dict[str, Any]) -> Store:
    return Store(
        settings,
        UUID(manifest["tenant_id"]),
        [UUID(s) for s in manifest["subjects"]],
        datetime.fromisoformat(manifest["clock_at"]),
        int(manifest["events"]),
        float(manifest["fill_seconds"]),
    )


def _warm_up(rt: Runtime, tenant: UUID, spare: UUID | None) -> None:
    """Erase one subject first, untimed: the timed erasures run in a process that has
    erased before (as the fill's own process did, and a running ``serve`` has), not the
    first one after start-up, which also prepares every statement an erasure of that
    size runs. A store filled with a spare subject (the bench fills one more than it
    times) warms up on it; an older store on a background sender (one conversation)."""
    if spare is not None:
        rt.privacy.erase_contact(tenant, spare, "request:erasure")
        return
    found, _ = rt.app.run(
        lambda uow: rt.app.resolve_subject(
            uow, tenant, Identity(IdentityKind.EMAIL, "user1@bench.example")
        )
    )
    for contact_id in found:
        rt.privacy.erase_contact(tenant, contact_id, "request:erasure")


def _settle(rt: Runtime) -> None:
    """Let the background work the erasures before left behind finish, as it does in a
    server between requests: the vault's scrub, and (SQLite) the checkpoints that copy
    the write-ahead logs into the files."""
    rt.vault.wait_scrubbed()
    if rt.checkpointer is not None:
        rt.checkpointer.flush()


PACES = ("settled", "back-to-back")
FILLS = ("traffic", "copy-sqlite")
CACHE_MODES = ("as-found", "in-memory", "cold")


def _page_cache(directory: Path, mode: str) -> None:
    """Put a SQLite store's files in the state ``mode`` names: ``in-memory`` reads each
    file once, so the OS page cache holds it (a server whose memory holds its store);
    ``cold`` writes dirty pages out and asks the OS to drop the files' cached pages, so
    what the erasure reads comes from storage. ``as-found`` leaves them alone (this
    machine's VM hands idle page cache back to its host within about a minute)."""
    if mode == "as-found":
        return
    if mode == "cold":
        os.sync()
    for path in sorted(p for p in directory.iterdir() if p.is_file()):
        fd = os.open(path, os.O_RDONLY)
        try:
            if mode == "cold":
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            else:
                while os.read(fd, 1 << 24):
                    pass
        finally:
            os.close(fd)


def _prewarm(settings: Settings) -> None:
    """PostgreSQL's ``in-memory``: load every table and index of the store into the
    server's shared buffers (pg_prewarm), as a server that has been running holds them."""
    assert settings.database_url is not None
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
        conn.execute(
            "SELECT pg_prewarm(c.oid) FROM pg_class c JOIN pg_namespace n"
            " ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind IN ('r', 'i')"
        )


def measure(
    name: str,
    size: int,
    subjects: int,
    conversations: int,
    *,
    data_dir: Path | None = None,
    reuse: bool = False,
    batch: int = BATCH,
    cache: str = "as-found",
    freeze: bool = True,
    pace: str = "settled",
    fill_from: str = "traffic",
) -> dict[str, float]:
    with prepared(
        name,
        size,
        subjects,
        conversations,
        data_dir=data_dir,
        reuse=reuse,
        batch=batch,
        fill_from=fill_from,
    ) as store:
        tenant, ids, total = store.tenant_id, store.subjects[:subjects], store.events
        spare = store.subjects[subjects] if len(store.subjects) > subjects else None
        print(
            f"  {name}: {total:,} events (filled in {store.fill_seconds:,.0f} s);"
            f" erasing {len(ids)} subjects"
        )
        clock = ManualClock(store.clock_at)
        rt = build(store.settings, clock=clock)
        # what `serve` runs beside the commands: checkpoints of the SQLite logs
        background = TickerRunner([rt.checkpointer] if rt.checkpointer else [], clock)
        try:
            # a kept store opens in a fresh process: the in-memory routing state follows
            # the whole log first, as in `serve`, so erasure events reach it as they would
            t = time.perf_counter()
            rt.catch_up()
            print(f"  caught up in {time.perf_counter() - t:,.1f} s")
            if freeze:
                freeze_startup_heap()  # as `serve` does once started
            background.start()
            on_sqlite = store.settings.database_url is None
            if cache == "in-memory":
                if on_sqlite:
                    _page_cache(store.settings.data_dir, cache)
                else:
                    _prewarm(store.settings)
            _warm_up(rt, tenant, spare)
            # The application's listeners hear of a save after its after-commit actions
            # (the erasure's key destruction) and before the read models take it: the
            # first one notes when the subject's data became unreadable.
            unreadable_at: list[float] = []

            def stamp(recorded: Any) -> None:
                unreadable_at.append(time.perf_counter())

            rt.privacy.app.listeners.insert(0, stamp)
            timings, unreadable = [], []
            for contact_id in ids:
                clock.advance(timedelta(seconds=1))
                if pace == "settled":
                    _settle(rt)
                if on_sqlite and cache == "cold":
                    _page_cache(store.settings.data_dir, cache)
                unreadable_at.clear()
                t = time.perf_counter()
                outcome = rt.privacy.erase_contact(tenant, contact_id, "request:erasure")
                timings.append((time.perf_counter() - t) * 1000)
                unreadable.append((unreadable_at[0] - t) * 1000)
                erased = sum(1 for s in outcome.subjects if s["status"] == "erased")
                assert erased == conversations + 1, outcome.subjects
            print("  each erasure, ms:", " ".join(f"{ms:.0f}" for ms in timings))
            print("    of which until unreadable:", " ".join(f"{ms:.0f}" for ms in unreadable))
            rt.privacy.app.listeners.remove(stamp)  # the sweep's saves need no stamps
            clock.advance(timedelta(days=31 * 7))
            t = time.perf_counter()
            report = rt.privacy.sweep(clock.now())
            sweep_s = time.perf_counter() - t
            scopes = sum(a.count for a in report.actions if a.action == "erase")
        finally:
            background.stop()
            rt.close()
    return {
        "events": total,
        "p50": percentile(timings, 50),
        "p99": percentile(timings, 99),
        "max": max(timings),
        "unreadable_p50": percentile(unreadable, 50),
        "unreadable_p99": percentile(unreadable, 99),
        "sweep_scopes": scopes,
        "sweep_rate": scopes / sweep_s if sweep_s else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument(
        "--sizes", default="10000,1000000", help="events in the log, comma-separated"
    )
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--conversations", type=int, default=50)
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the filled stores here (one per backend and size); each run erases in a copy",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="with --data-dir: use a store filled there before (fill only when there is none)",
    )
    parser.add_argument(
        "--batch", type=int, default=BATCH, help="interactions per write transaction when filling"
    )
    parser.add_argument(
        "--cache",
        choices=CACHE_MODES,
        default="as-found",
        help="what the store's pages are in before the timed erasures: as-found (default;"
        " whatever the fill and this machine left), in-memory (SQLite: the store's files"
        " read once into the OS page cache; PostgreSQL: every table and index loaded into"
        " the server's shared buffers with pg_prewarm), cold (SQLite only: the OS page"
        " cache dropped before each erasure: every page it needs is read from storage)",
    )
    parser.add_argument(
        "--pace",
        choices=PACES,
        default="settled",
        help="settled (default): each erasure starts once the background work the ones"
        " before left (vault scrub, SQLite log checkpoints) is done, as a request arriving"
        " in a server between others; back-to-back: each right after the one before, which"
        " then pays for that work competing with it",
    )
    parser.add_argument(
        "--fill",
        choices=FILLS,
        default="traffic",
        help="PostgreSQL with --data-dir: traffic (default) sends the background traffic"
        " through the write path; copy-sqlite copies the SQLite store of the same size kept"
        " under --data-dir (its log, write index, key vault; sealed as stored) and rebuilds"
        " the read models from it: the same events in about a third of the time",
    )
    parser.add_argument(
        "--no-freeze",
        action="store_true",
        help="leave the start-up heap to the cyclic collector and its default young"
        " threshold (serve freezes it and raises the threshold)",
    )
    args = parser.parse_args()
    if args.reuse and args.data_dir is None:
        parser.error("--reuse needs --data-dir")
    if args.cache == "cold" and args.backend != "sqlite":
        parser.error("--cache cold is for SQLite only")
    if args.fill == "copy-sqlite" and args.data_dir is None:
        parser.error("--fill copy-sqlite needs --data-dir (where the SQLite store is kept)")
    names = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for name in names:
        for size in sizes:
            print(f"{name}, {size:,} events:", flush=True)
            result = measure(
                name,
                size,
                args.subjects,
                args.conversations,
                data_dir=args.data_dir,
                reuse=args.reuse,
                batch=args.batch,
                cache=args.cache,
                freeze=not args.no_freeze,
                pace=args.pace,
                fill_from=args.fill,
            )
            rows.append((name, result))
    print()
    cache = f"; store pages: {args.cache}"
    print(
        f"erasure of one subject with {args.conversations} conversations"
        f" ({args.subjects} subjects, {args.pace}{cache}):"
    )
    print(
        f"{'backend':<10}{'events':>12}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}"
        f"{'sweep scopes':>14}{'scopes/s':>10}"
    )
    for name, r in rows:
        print(
            f"{name:<10}{r['events']:>12,}{r['p50']:>10.1f}{r['p99']:>10.1f}{r['max']:>10.1f}"
            f"{r['sweep_scopes']:>14,}{r['sweep_rate']:>10,.0f}"
        )
    print("target: erasure p99 < 100 ms at every size")
    print()
    print(
        "of which until the subject's data is unreadable (erasure events committed, keys"
        " destroyed), before the read models are blanked:"
    )
    print(f"{'backend':<10}{'events':>12}{'p50 ms':>10}{'p99 ms':>10}")
    for name, r in rows:
        print(
            f"{name:<10}{r['events']:>12,}{r['unreadable_p50']:>10.1f}{r['unreadable_p99']:>10.1f}"
        )


if __name__ == "__main__":
    main()
