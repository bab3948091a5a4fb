"""Scaled-mode test support: worker processes, log copies, read-model dumps, settling."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg

from infra.config import Settings
from infra.kafka.messages import event_key, events_topic, partition_for, tenant_of
from infra.runtime import EVENTS_TABLE, Runtime, build, partitioned_projections

ROOT = Path(__file__).resolve().parents[2]


def scaled_env(settings: Settings) -> dict[str, str]:
    assert settings.database_url
    assert settings.kafka_bootstrap
    assert settings.master_key
    return {
        "CC_DATABASE_URL": settings.database_url,
        "CC_MASTER_KEY": base64.b64encode(settings.master_key).decode(),
        "CC_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "CC_KAFKA_TOPIC_PREFIX": settings.kafka_topic_prefix,
        "CC_KAFKA_PARTITIONS": str(settings.kafka_partitions),
        "CC_KAFKA_SESSION_TIMEOUT_MS": str(settings.kafka_session_timeout_ms),
        "CC_DATA_DIR": str(settings.data_dir),
        "CC_LOG_LEVEL": "INFO",
    }


class Process:
    """A ``contact-centre worker ...`` process, its log in a file."""

    def __init__(self, settings: Settings, log_dir: Path, *args: str) -> None:
        self.args = args
        self.log = log_dir / f"{'-'.join(args)}-{time.monotonic_ns()}.log"
        with open(self.log, "wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "infra.cli", "worker", *args],
                env={**os.environ, **scaled_env(settings)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, needle: str, timeout: float = 60) -> None:
        assert wait_until(lambda: needle in self.text() or self.popen.poll() is not None, timeout)
        assert needle in self.text(), f"{self.args} never logged {needle!r}:\n{self.text()}"

    def kill(self) -> None:
        """kill -9: no chance to finish a batch or leave the group."""
        self.popen.send_signal(signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def assigned_partitions(log: str, name: str = "inbox") -> set[int]:
    """The partitions a worker's log says it holds now for projection ``name``."""
    held: set[int] = set()
    marker = f"projection {name}: partitions "
    for line in log.splitlines():
        if marker not in line:
            continue
        listed, _, what = line.split(marker, 1)[1].rpartition(" ")
        if what == "assigned":
            held = {int(p) for p in listed.split(",") if p != "none"}
        elif what == "revoked":
            held = set()
    return held


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# -- read models -----------------------------------------------------------------------
def _normal(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, Decimal | float):
        return round(float(value), 9)
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    return value


def read_models(runtime: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of every projection in ``partitioned_projections()``, sorted."""
    dump: dict[str, list[tuple[Any, ...]]] = {}
    with runtime.readdb.read() as tx:
        for projection in partitioned_projections(runtime.vault):
            for table in projection.tables:
                tx.execute(f"SELECT * FROM {table}")
                rows = [tuple(_normal(v) for v in row) for row in tx.fetchall()]
                dump[table] = sorted(rows, key=lambda r: tuple((v is None, str(v)) for v in r))
    return dump


def differences(
    actual: dict[str, list[tuple[Any, ...]]], expected: dict[str, list[tuple[Any, ...]]]
) -> str:
    """The rows each table has on one side only (the first few), for a readable failure."""
    lines = []
    for table in sorted(set(actual) | set(expected)):
        mine, theirs = set(actual.get(table, [])), set(expected.get(table, []))
        if mine != theirs:
            lines.append(f"{table}: only scaled {sorted(mine - theirs, key=str)[:3]}")
            lines.append(f"{table}: only embedded {sorted(theirs - mine, key=str)[:3]}")
    return "\n".join(lines)


# -- the event log ---------------------------------------------------------------------
def postgres_log(url: str) -> list[tuple[int, UUID, int, str, bytes]]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            f"SELECT notification_id, originator_id, originator_version, topic, state"
            f" FROM {EVENTS_TABLE} ORDER BY notification_id"
        ).fetchall()
    return [(int(n), UUID(str(o)), int(v), str(t), bytes(s)) for n, o, v, t, s in rows]


def copy_postgres_log_to_sqlite(url: str, sqlite_path: Path) -> int:
    """The stored events, byte for byte and with their notification ids."""
    rows = postgres_log(url)
    conn = sqlite3.connect(sqlite_path)
    try:
        conn.executemany(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state)"
            " VALUES (?, ?, ?, ?, ?)",
            [(n, o.hex, v, t, s) for n, o, v, t, s in rows],
        )
        conn.commit()
    finally:
        conn.close()
    return len(rows)


def copy_sqlite_log_to_postgres(sqlite_path: Path, url: str) -> int:
    conn = sqlite3.connect(sqlite_path)
    try:
        rows = conn.execute(
            "SELECT rowid, originator_id, originator_version, topic, state"
            " FROM stored_events ORDER BY rowid"
        ).fetchall()
    finally:
        conn.close()
    with psycopg.connect(url) as pg:
        with pg.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {EVENTS_TABLE}"
                " (notification_id, originator_id, originator_version, topic, state)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(n, UUID(o), v, t, s) for n, o, v, t, s in rows],
            )
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{EVENTS_TABLE}', 'notification_id'),"
                f" (SELECT max(notification_id) FROM {EVENTS_TABLE}))"
            )
        pg.commit()
    return len(rows)


def copy_vault(source: Runtime, target: Runtime) -> int:
    """The scope keys (wrapped under the master key both sides share) and the destroyed
    marks: projections that open sealed values (CRM search) need the same keys."""
    with source.vault.db.read() as tx:
        tx.execute("SELECT scope, tenant_id, wrapped, created_at FROM cc_vault_keys")
        keys = tx.fetchall()
        tx.execute("SELECT scope, tenant_id, destroyed_at FROM cc_vault_destroyed")
        destroyed = tx.fetchall()
    with target.vault.db.transaction() as tx:
        tx.executemany(
            "INSERT INTO cc_vault_keys (scope, tenant_id, wrapped, created_at)"
            " VALUES (?, ?, ?, ?) ON CONFLICT (scope) DO NOTHING",
            [tuple(row) for row in keys],
        )
        tx.executemany(
            "INSERT INTO cc_vault_destroyed (scope, tenant_id, destroyed_at)"
            " VALUES (?, ?, ?) ON CONFLICT (scope) DO NOTHING",
            [tuple(row) for row in destroyed],
        )
    return len(keys)


def embedded_reference(scaled: Runtime, data_dir: Path) -> dict[str, list[tuple[Any, ...]]]:
    """The read models the embedded mode builds from the same stored events and keys."""
    database_url = scaled.settings.database_url
    assert database_url is not None
    runtime = build(Settings(data_dir=data_dir, master_key=scaled.settings.master_key))
    try:
        copy_vault(scaled, runtime)
        copy_postgres_log_to_sqlite(database_url, data_dir / "events.sqlite")
        runtime.catch_up()
        return read_models(runtime)
    finally:
        runtime.close()


class LogPartitions:
    """Per partition, the highest notification id the log sends there (read as it grows)."""

    def __init__(self, runtime: Runtime, partitions: int) -> None:
        self.runtime = runtime
        self.partitions = partitions
        self.position = 0
        self.highest: dict[int, int] = {}

    def read(self) -> dict[int, int]:
        app = self.runtime.app
        while True:
            batch = app.recorder.select_notifications(
                start=self.position, limit=1000, inclusive_of_start=False
            )
            if not batch:
                return dict(self.highest)
            for n in batch:
                event = app.mapper.to_domain_event(n)
                key = event_key(tenant_of(event), UUID(str(n.originator_id)))
                self.highest[partition_for(key, self.partitions)] = n.id
            self.position = batch[-1].id


def tracking(runtime: Runtime) -> dict[tuple[str, int], int]:
    with runtime.readdb.read() as tx:
        tx.execute("SELECT consumer, partition, position FROM cc_tracking WHERE partition >= 0")
        return {(str(c), int(p)): int(n) for c, p, n in tx.fetchall()}


def caught_up(runtime: Runtime, partitions: int) -> Callable[[], bool]:
    """True once every projection has applied, in every partition, all the log holds."""
    names = [p.name for p in partitioned_projections(runtime.vault)]
    log = LogPartitions(runtime, partitions)

    def check() -> bool:
        target = log.read()
        seen = tracking(runtime)
        return all(seen.get((n, p), 0) >= nid for n in names for p, nid in target.items())

    return check


def behind(runtime: Runtime, partitions: int) -> str:
    """Why :func:`caught_up` is false: each projection partition short of the log, and
    what the worker processes logged (their own lines and every warning), for a failing
    assertion to show."""
    names = [p.name for p in partitioned_projections(runtime.vault)]
    target = LogPartitions(runtime, partitions).read()
    seen = tracking(runtime)
    short = [
        f"{n}#{p}: {seen.get((n, p), 0)} of {nid}"
        for n in names
        for p, nid in sorted(target.items())
        if seen.get((n, p), 0) < nid
    ]
    return "behind: " + (", ".join(short) or "nothing")


def worker_story(log_dir: Path, tail: int = 60) -> str:
    """The last lines each process in ``log_dir`` logged itself, and its warnings."""
    parts = []
    for path in sorted(log_dir.glob("*.log")):
        lines = [
            line
            for line in path.read_text(errors="replace").splitlines()
            if " infra." in line or " WARNING " in line or " ERROR " in line
        ]
        parts.append(f"--- {path.name}\n" + "\n".join(lines[-tail:]))
    return "\n".join(parts)


class Stream:
    """Writes scenario steps from a thread until stopped: a steady stream of events."""

    def __init__(self, runtime: Runtime) -> None:
        from tests.kafka.scenario import Scenario

        self.runtime = runtime
        self.scenario = Scenario(runtime.app)
        self.scenario.setup()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream", daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.scenario.step(20, batch=10)
                time.sleep(0.01)
        except BaseException as error:  # reported by stop()
            self.error = error

    def __enter__(self) -> Stream:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def latest(self) -> int:
        return self.runtime.app.recorder.max_notification_id() or 0

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        if self.error is not None:
            raise self.error


def relay_position(runtime: Runtime) -> int:
    from infra.kafka.relay import read_position

    return read_position(runtime.readdb, events_topic(runtime.settings.kafka_topic_prefix))


def worker_offsets(runtime: Runtime, consumer: str = "inbox") -> dict[int, int]:
    with runtime.readdb.read() as tx:
        tx.execute(
            "SELECT partition, last_offset FROM cc_kafka_offsets WHERE consumer = ? AND topic = ?",
            (consumer, events_topic(runtime.settings.kafka_topic_prefix)),
        )
        return {int(p): int(o) for p, o in tx.fetchall()}


def end_offsets(settings: Settings) -> dict[int, int]:
    """Per partition, the offset after the last record on the events topic."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def read() -> dict[int, int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            name = events_topic(settings.kafka_topic_prefix)
            tps = [TopicPartition(name, p) for p in range(settings.kafka_partitions)]
            consumer.assign(tps)
            found = await consumer.end_offsets(tps)
            return {tp.partition: int(offset) for tp, offset in found.items()}
        finally:
            # aiokafka's group-less consumer may re-raise the cancellation of its own
            # background task when stopped soon after starting
            with contextlib.suppress(asyncio.CancelledError):
                await consumer.stop()

    return asyncio.run(read())
