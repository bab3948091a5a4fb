"""Read-your-writes for HTTP processes in scaled mode.

A projection runs in Kafka workers, partition by partition, and records per partition the
highest notification id it has applied (``cc_tracking``, partition = Kafka partition).
When this process saves events, :meth:`PartitionProgress.record` notes, for that save,
which partitions its events go to (the relay's partitioner over the same key) and the
highest notification id in each. Waiting for a projection to show a write is then
waiting until each of those partitions has reached its notification id: one poller
thread reads the tracking rows while anyone waits.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from infra.config import Settings
from infra.db import Database
from infra.feed import Progress
from infra.kafka.messages import event_key, events_topic, partition_for, tenant_of
from infra.kafka.relay import read_partitions

log = logging.getLogger(__name__)


class PartitionProgress(Progress):
    """Progress of the Kafka workers, seen from the read-model database."""

    REMEMBER = 50_000  # saves whose partitions are kept (a wait is for a recent write)
    REFRESH_PARTITIONS = 10.0  # seconds between re-reading the topic's partition count

    def __init__(
        self,
        db: Database,
        settings: Settings,
        *,
        poll_interval: float = 0.005,
        log_order: frozenset[str] = frozenset(),
    ):
        super().__init__()
        # projections this process's feed runs in log order (the webhook outbox): their
        # progress is a plain log position, advanced by the feed
        self.log_order = log_order
        self.db = db
        self.topic = events_topic(settings.kafka_topic_prefix)
        self.poll_interval = poll_interval
        self._default_partitions = settings.kafka_partitions
        self._partitions = read_partitions(db, self.topic) or settings.kafka_partitions
        self._saves: OrderedDict[int, dict[int, int]] = OrderedDict()
        self._saves_lock = threading.Lock()
        self._waiting = 0
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._thread_lock = threading.Lock()

    @staticmethod
    def key(consumer: str, partition: int) -> str:
        return f"{consumer}#{partition}"

    # -- the writer's side -----------------------------------------------------------
    def record(self, recorded: Sequence[tuple[int, Any]]) -> None:
        """Application listener: where the events of one save go."""
        if not recorded:
            return
        partitions = self._partitions
        needs: dict[int, int] = {}
        for notification_id, event in recorded:
            key = event_key(tenant_of(event), UUID(str(event.originator_id)))
            partition = partition_for(key, partitions)
            needs[partition] = max(notification_id, needs.get(partition, 0))
        last = max(notification_id for notification_id, _ in recorded)
        with self._saves_lock:
            self._saves[last] = needs
            while len(self._saves) > self.REMEMBER:
                self._saves.popitem(last=False)

    # -- the reader's side -----------------------------------------------------------
    async def wait(self, consumer: str, position: int, timeout: float) -> bool:
        """Wait until ``consumer`` shows the save whose last notification id is
        ``position``; False on timeout, or when this process did not make that save."""
        if consumer in self.log_order:
            return await super().wait(consumer, position, timeout)
        with self._saves_lock:
            needs = self._saves.get(position)
        if needs is None:
            return False
        return await self._wait_needs(consumer, needs, timeout)

    async def wait_for_all(self, consumer: str, timeout: float) -> bool:
        """Wait until ``consumer`` shows every save this process remembers (the CLI's
        commands, before they read a read model back)."""
        if consumer in self.log_order:
            with self._saves_lock:
                last = max(self._saves, default=0)
            return await super().wait(consumer, last, timeout)
        needs: dict[int, int] = {}
        with self._saves_lock:
            for save in self._saves.values():
                for partition, notification_id in save.items():
                    needs[partition] = max(notification_id, needs.get(partition, 0))
        return await self._wait_needs(consumer, needs, timeout)

    async def _wait_needs(self, consumer: str, needs: dict[int, int], timeout: float) -> bool:
        if not needs:
            return True
        self._ensure_thread()
        deadline = time.monotonic() + timeout
        with self._thread_lock:
            self._waiting += 1
        self._wake.set()
        try:
            for partition, notification_id in sorted(needs.items()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                key = self.key(consumer, partition)
                if not await super().wait(key, notification_id, remaining):
                    return False
            return True
        finally:
            with self._thread_lock:
                self._waiting -= 1

    def _ensure_thread(self) -> None:
        with self._thread_lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="kafka-progress", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        refreshed = time.monotonic()
        while not self._stop.is_set():
            if self._waiting == 0:
                self._wake.wait(1.0)
                self._wake.clear()
            try:
                self._poll()
                if time.monotonic() - refreshed > self.REFRESH_PARTITIONS:
                    refreshed = time.monotonic()
                    self._partitions = (
                        read_partitions(self.db, self.topic) or self._default_partitions
                    )
            except Exception as error:  # keep polling; waits time out meanwhile
                log.warning("reading projection progress failed (%s)", type(error).__name__)
                self._stop.wait(0.5)
            self._stop.wait(self.poll_interval)

    def _poll(self) -> None:
        with self.db.read() as tx:
            tx.execute("SELECT consumer, partition, position FROM cc_tracking WHERE partition >= 0")
            rows = tx.fetchall()
        for consumer, partition, position in rows:
            self.advance(self.key(str(consumer), int(partition)), int(position))

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
