"""The composition root: builds every part of one process from :class:`Settings`.

Tests and commands call :func:`build` (optionally overriding the clock); nothing here
runs at import time.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.postgres import PostgresDatastore
from psycopg.conninfo import conninfo_to_dict

from contact_centre.application import ContactCentre
from contact_centre.clock import Clock, SystemClock
from contact_centre.privacy import Sealer
from infra.audit import AuditLog
from infra.channels import ChannelServices, install_channels
from infra.checkpoint import READ_MODEL_AUTOCHECKPOINT_PAGES, WalCheckpointer
from infra.config import READ_MODEL_CACHE_KIB, ConfigError, Settings
from infra.db import PLAN_PER_RUN, Database, PostgresDatabase, SQLiteDatabase
from infra.feed import Consumer, InProcessFeed, PolicyConsumer, ProjectionConsumer
from infra.identities import PhoneEmailNormaliser
from infra.live import LiveHub
from infra.memory import reserve_heap
from infra.scheduler import TickerRunner
from infra.store import (
    EventStoreDatastore,
    PostgresEventStoreRecorder,
    PostgresWriteIndex,
    SQLiteEventStoreRecorder,
    SQLiteWriteIndex,
)
from infra.vault import KeyVault
from infra.webhooks import WebhookServices, install_webhooks
from infra.writer import Writer
from projections.base import Projection
from projections.channel_activity import ChannelActivityProjection
from projections.channel_settings import ChannelSettingsProjection
from projections.crm import CrmProjection
from projections.deliveries import DeliveriesProjection
from projections.directory import DirectoryProjection
from projections.inbox import InboxProjection
from projections.metrics import MetricsProjection
from projections.queues import QueueStateProjection
from projections.retention import RetentionLedgerProjection
from projections.timeline import TimelineProjection
from projections.webhooks import WebhooksProjection
from workflows.base import Policy, Ticker
from workflows.placement import DefaultPlacement, QueueFinder
from workflows.privacy import PrivacyService, RetentionTicker
from workflows.routing import Router, RoutingFeed

if TYPE_CHECKING:
    from infra.projector_process import ProjectorProcess

log = logging.getLogger(__name__)

EVENTS_TABLE = "cc_events"
# PostgreSQL can fail one of two concurrent CREATE TABLE IF NOT EXISTS of the same table
# (scaled processes start together): schema set-up holds this advisory lock.
SCHEMA_LOCK_KEY = 0x63632D736368656D


@contextlib.contextmanager
def schema_lock(url: str) -> Iterator[None]:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (SCHEMA_LOCK_KEY,))
        yield


def partitioned_projections(sealer: Sealer) -> list[Projection]:
    """The projections that need only each aggregate's events in order: in scaled mode
    `contact-centre worker projections` runs them, partition by partition."""
    return [
        InboxProjection(),
        DirectoryProjection(),
        CrmProjection(sealer),
        TimelineProjection(),
        QueueStateProjection(),
        MetricsProjection(),
        RetentionLedgerProjection(),
        ChannelSettingsProjection(),
        DeliveriesProjection(),
        ChannelActivityProjection(),
    ]


def log_order_projections(webhook_log_days: int = 30) -> list[Projection]:
    """The projections that need the whole log in its order (the webhook outbox: which
    subscriptions an event finds, and per-conversation delivery order, depend on what came
    before it in any aggregate). Every process's in-process feed runs them, in scaled mode
    too, reading the event store's notification log; the tracking table lets one process
    apply each batch."""
    return [WebhooksProjection(log_retention=timedelta(days=webhook_log_days))]


def all_projections(sealer: Sealer, webhook_log_days: int = 30) -> list[Projection]:
    return [*partitioned_projections(sealer), *log_order_projections(webhook_log_days)]


def all_policies(runtime: Runtime) -> list[Policy]:
    """The workflow policies `contact-centre worker workflows` runs in scaled mode: the ones
    ``build`` registers (placement, delivery, ...), which serve runs in-process otherwise."""
    return [consumer.policy for consumer in runtime.policies]


def load_or_create_master_key(data_dir: Path) -> bytes:
    """Embedded default: a master key generated once into the data directory (mode 0600)."""
    path = data_dir / "master.key"
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        key = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(key)
        return key
    if len(key) != 32:
        raise ConfigError(f"{path} does not hold a 32-byte key")
    return key


class _Datastore(PostgresDatastore):
    """eventsourcing's datastore, whose connections plan each statement for its
    parameters, as the read models' do (:data:`infra.db.PLAN_PER_RUN`). The write index's
    lookup (``unnest`` of the keys joined to the index) otherwise kept the generic plan
    it got while the table was new and small, a scan of the whole table: 2.8 ms a
    lookup after 20 s of the ingest bench, growing with the table."""

    def after_connect_func(self) -> Callable[[Any], None]:
        inherited = super().after_connect_func()

        def after_connect(conn: Any) -> None:
            inherited(conn)
            conn.execute(PLAN_PER_RUN)

        return after_connect


def postgres_datastore(url: str, *, pool_size: int = 4, max_overflow: int = 4) -> PostgresDatastore:
    params = conninfo_to_dict(url)
    return _Datastore(
        dbname=str(params.get("dbname", "postgres")),
        host=str(params.get("host", "127.0.0.1")),
        port=str(params.get("port", "5432")),
        user=str(params.get("user", "postgres")),
        password=str(params.get("password", "")),
        pool_size=pool_size,
        max_overflow=max_overflow,
        lock_timeout=10,
        idle_in_transaction_session_timeout=30,
        pre_ping=False,
    )


@dataclass
class Runtime:
    settings: Settings
    app: ContactCentre
    vault: KeyVault
    readdb: Database
    feed: InProcessFeed
    writer: Writer
    consumers: list[ProjectionConsumer]
    clock: Clock
    make_app: Callable[[], ContactCentre]
    audit: AuditLog
    privacy: PrivacyService
    policies: list[PolicyConsumer] = field(default_factory=list)
    tickers: TickerRunner | None = None
    channels: ChannelServices | None = None
    routing: RoutingFeed | None = None  # the routing state, in memory, following the log
    router: Router | None = None
    live: LiveHub = field(default_factory=LiveHub)  # agents' and supervisors' sockets
    webhooks: WebhookServices | None = None
    checkpointer: WalCheckpointer | None = None  # embedded: WAL checkpoints off the write path
    # the read models are applied by the projector process beside serve, not by this feed
    projections_elsewhere: bool = False
    projector: ProjectorProcess | None = None  # that process's supervisor, once started
    _closers: list[Any] = field(default_factory=list)
    started: bool = False

    def add_policy(self, policy: Policy) -> PolicyConsumer:
        """Run ``policy`` on the feed, with an application instance of its own."""
        consumer = PolicyConsumer(policy, self.make_app())
        self.policies.append(consumer)
        if not self.settings.uses_kafka:  # scaled: `contact-centre worker workflows` runs it
            self.feed.add(consumer)
        return consumer

    def add_ticker(self, ticker: Ticker) -> None:
        if self.tickers is None:
            self.tickers = TickerRunner([], self.clock)
        self.tickers.tickers.append(ticker)

    def consumer(self, name: str) -> ProjectionConsumer:
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        raise KeyError(name)

    def start(self) -> None:
        if not self.started:
            self.audit.start()
            self.feed.start()
            self.writer.start()
            if self.tickers is not None:
                self.tickers.start()
            self.started = True

    def stop(self) -> None:
        if self.started:
            if self.tickers is not None:
                self.tickers.stop()
            if self.webhooks is not None and self.webhooks.leader is not None:
                self.webhooks.leader.close()
            self.writer.stop()
            self.feed.stop()
            self.audit.stop()
            self.started = False

    def close(self) -> None:
        self.stop()
        for closer in reversed(self._closers):
            try:
                closer()
            except Exception:  # closing is best effort; report and carry on
                log.exception("error while closing")
        self._closers.clear()

    async def projected(self, timeout: float, names: Sequence[str] | None = None) -> bool:
        """Wait (bounded) until the read models (those ``names``, or all) show every write
        so far: embedded, the log's head; scaled, every save this process made. False on
        timeout."""
        wanted = [c.name for c in self.consumers if names is None or c.name in names]
        if self.settings.uses_kafka:
            from infra.kafka.progress import PartitionProgress

            progress = self.feed.progress
            assert isinstance(progress, PartitionProgress)
            waits = [progress.wait_for_all(name, timeout) for name in wanted]
        else:
            latest = await asyncio.to_thread(self.app.recorder.max_notification_id) or 0
            waits = [self.feed.progress.wait(name, latest, timeout) for name in wanted]
        return all(await asyncio.gather(*waits))

    def settle(self, timeout: float = 60.0) -> None:
        """Make the read models show everything this process wrote: embedded, by catching
        up; scaled, by waiting for the Kafka projection workers (the CLI's commands)."""
        if not self.settings.uses_kafka:
            self.catch_up(workflows=False)
            return
        if not asyncio.run(self.projected(timeout)):
            raise TimeoutError(
                f"the read models have not caught up in {timeout:g}s: "
                "are `contact-centre worker projections` running?"
            )

    def catch_up(self, *, workflows: bool = True) -> None:
        """Bring every projection (and, unless told not to, every workflow) up to date
        synchronously (tests; the CLI catches up projections only, since a running
        ``serve`` owns the workflows: two processes must not both react to an event)."""
        if self.settings.uses_kafka:
            raise RuntimeError("in scaled mode projections and workflows run in Kafka workers")
        for _ in range(100):  # workflows' events feed projections and other workflows
            consumers: list[Consumer] = [*self.consumers]
            if workflows:
                consumers += self.policies
            if self.routing is not None and workflows:
                consumers.append(self.routing)
            read = sum(self.feed.catch_up(c) for c in consumers)
            if read == 0:
                return


def freeze_startup_heap() -> None:
    """Keep what start-up made (modules, classes, functions, the runtime's parts) out of
    the cyclic collector's full passes: it lives as long as the process, and rescanning
    it (some 100,000 objects) made a full pass cost 75-140 ms on this project's test box,
    a pause that lands on whichever request is running (one erasure in twenty).

    Objects made later are collected after ``YOUNG_GC_THRESHOLD`` net allocations instead
    of Python's 700: requests and batches allocate mostly acyclic objects (events, rows,
    parsed JSON) that reference counting frees, and with the default the collector ran
    about 70 times a second under the ingest benchmark, with 11 full passes over the
    aggregate cache in 20 s of up to 80 ms each (1 s of the 22 in all); with this, 5
    young passes and 1 full one (0.16 s)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GC_THRESHOLD, middle, old)


YOUNG_GC_THRESHOLD = 50_000


def build(settings: Settings, *, clock: Clock | None = None) -> Runtime:
    clock = clock or SystemClock()
    if settings.database_url is None and settings.reserve_cache_mib > 0:
        # before any of the runtime's threads allocates: the heap the SQLite page caches
        # of every thread grow into, faulted in now (infra/memory.py)
        reserve_heap(settings.reserve_cache_mib * 1024)
    closers: list[Any] = []
    recorder: ApplicationRecorder
    schema_setup = contextlib.ExitStack()
    closers.append(schema_setup.close)
    wal_files: list[SQLiteDatabase] = []  # embedded: checkpointed in the background
    if settings.database_url:
        schema_setup.enter_context(schema_lock(settings.database_url))
        if settings.master_key is None:
            raise ConfigError(
                "CC_MASTER_KEY is required with CC_DATABASE_URL (all processes share it)"
            )
        master_key = settings.master_key
        datastore = postgres_datastore(settings.database_url)
        closers.append(datastore.close)
        pg_recorder = PostgresEventStoreRecorder(datastore, events_table_name=EVENTS_TABLE)
        pg_recorder.create_table()
        recorder = pg_recorder
        index: Any = PostgresWriteIndex(datastore)
        readdb: Database = PostgresDatabase(settings.database_url)
        closers.append(readdb.close)
        vault_db: Database = readdb
        audit_db: Database = readdb
    else:
        data_dir = settings.data_dir
        data_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(data_dir, 0o700)
        master_key = settings.master_key or load_or_create_master_key(data_dir)
        sqlite_store = EventStoreDatastore(str(data_dir / "events.sqlite"), lock_timeout=30)
        closers.append(sqlite_store.close)
        sqlite_recorder = SQLiteEventStoreRecorder(sqlite_store)
        sqlite_recorder.create_table()
        recorder = sqlite_recorder
        index = SQLiteWriteIndex(sqlite_store)
        vault_db = SQLiteDatabase(str(data_dir / "vault.sqlite"), secure_delete=True)
        closers.append(vault_db.close)
        # Read models can be rebuilt from the log, so they trade the last few commits
        # on power loss (never consistency: rows and tracking commit together) for speed.
        readdb = SQLiteDatabase(
            str(data_dir / "readmodels.sqlite"),
            synchronous="NORMAL",
            autocheckpoint_pages=READ_MODEL_AUTOCHECKPOINT_PAGES,
            cache_kib=READ_MODEL_CACHE_KIB,
        )
        closers.append(readdb.close)
        audit_db = SQLiteDatabase(str(data_dir / "audit.sqlite"))
        closers.append(audit_db.close)
        # its own connection to the event store's file, only to checkpoint it
        events_db = SQLiteDatabase(str(data_dir / "events.sqlite"))
        closers.append(events_db.close)
        wal_files += [events_db, readdb, audit_db]

    # Storage hygiene after each destruction (SQLite: a truncating checkpoint of the
    # vault's log; PostgreSQL: VACUUM) runs in the background, right after the destruction
    # commits, not inside the erasure's latency; closing waits for it.
    vault = KeyVault(vault_db, master_key, clock=clock, scrub_in_background=True)
    closers.append(vault.close)  # before the database it scrubs is closed
    vault.create_tables()
    normaliser = PhoneEmailNormaliser()
    app = ContactCentre(
        recorder=recorder, index=index, sealer=vault, normaliser=normaliser, clock=clock
    )
    feed = InProcessFeed(recorder, app.mapper)

    # What every application instance tells of its saves: the in-process feed (embedded),
    # or the partition progress that read-your-writes waits on (scaled).
    saved: list[Callable[[Any], None]] = [feed.publish]

    def make_app() -> ContactCentre:
        """Another application instance on the same stores, for a workflow's own thread.

        Its cache fast-forwards on every read (the writer changes aggregates under it),
        and what it records is fed to projections and evicted from the writer's cache.
        """
        other = ContactCentre(
            recorder=recorder,
            index=index,
            sealer=vault,
            normaliser=normaliser,
            clock=clock,
            env={"AGGREGATE_CACHE_FASTFORWARD": "y", "AGGREGATE_CACHE_MAXSIZE": "5000"},
        )
        other.listeners.append(lambda recorded: _evict(app, recorded))
        other.listeners.append(lambda recorded: saved[0](recorded))
        return other

    consumers = [
        ProjectionConsumer(p, readdb)
        for p in all_projections(vault, webhook_log_days=settings.webhook_log_days)
    ]
    log_order = {p.name for p in log_order_projections()}
    # serve without Kafka, CC_PROJECTIONS=process: the projector process applies them
    # (infra/projector_process.py) and this feed's progress follows its reports
    elsewhere = settings.projections == "process" and not settings.uses_kafka
    for consumer in consumers:
        consumer.setup()
        if elsewhere:
            continue
        if not settings.uses_kafka or consumer.name in log_order:
            feed.add(consumer)
    schema_setup.close()
    if settings.uses_kafka:
        # Scaled mode: `contact-centre worker projections` runs the projections; this
        # process only waits for them to show its own writes (read-your-writes).
        from infra.kafka.progress import PartitionProgress

        progress = PartitionProgress(readdb, settings, log_order=frozenset(log_order))
        closers.append(progress.close)
        feed.progress = progress

        def record(recorded: Any) -> None:
            progress.record(recorded)
            feed.publish(recorded)  # the log-order projections, run here

        saved[0] = record
    writer = Writer(
        app,
        max_batch=settings.writer_batch,
        max_queue=settings.writer_queue,
        before_batch=vault.refresh if settings.is_scaled else None,
        listeners=[lambda recorded: saved[0](recorded)],
    )
    app.listeners.append(writer.recorded)
    audit = AuditLog(audit_db)
    audit.create_tables()
    privacy = PrivacyService(make_app(), vault, readdb.read, usage=[audit])
    runtime = Runtime(
        settings=settings,
        app=app,
        vault=vault,
        readdb=readdb,
        feed=feed,
        writer=writer,
        consumers=consumers,
        clock=clock,
        make_app=make_app,
        audit=audit,
        privacy=privacy,
        projections_elsewhere=elsewhere,
        _closers=closers,
    )
    if wal_files:
        runtime.checkpointer = WalCheckpointer(wal_files)
        runtime.add_ticker(runtime.checkpointer)
    runtime.add_policy(DefaultPlacement(QueueFinder(readdb.fetch)))
    if settings.retention_interval_seconds > 0:
        runtime.add_ticker(RetentionTicker(privacy, settings.retention_interval_seconds))
    install_routing(runtime)
    runtime.channels = install_channels(runtime)
    runtime.webhooks = install_webhooks(runtime)
    return runtime


def install_routing(runtime: Runtime) -> None:
    """The routing state (rebuilt from the whole log in every process) and the router."""
    routing = RoutingFeed()
    routing.listeners.append(runtime.live.on_events)
    runtime.live.position = lambda: routing.position() or 0
    runtime.feed.add(routing)
    runtime.routing = routing
    runtime.router = Router(runtime.make_app(), routing)
    runtime.add_ticker(runtime.router)

    def wake() -> None:
        if runtime.tickers is not None:
            runtime.tickers.wake(Router.name)

    routing.on_work = wake


def _evict(app: ContactCentre, recorded: Sequence[tuple[int, Any]]) -> None:
    """Drop from ``app``'s cache what another instance just changed (saves it a conflict)."""
    cache = app.repository.cache
    if cache is None:
        return
    for _, event in recorded:
        with contextlib.suppress(KeyError):
            cache.get(event.originator_id, evict=True)
