"""The writer: one thread that runs every write command, in batches.

eventsourcing is synchronous and saving several aggregates in one transaction is what
makes ingest fast, so HTTP handlers hand commands to this thread and await the outcome.
Commands arriving while a batch commits form the next batch (group commit).

What a batch recorded is published to the writer's listeners (the in-process
projections) before the batch's callers hear back: an answer means the events are
committed *and* in the read models. (A second thread publishing one batch while the
writer committed the next was measured slower on two cores, on SQLite and PostgreSQL
alike: the two threads competed for the interpreter and batches got smaller.)
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from contact_centre.application import ContactCentre, Outcome, UnitOfWork

log = logging.getLogger(__name__)


class OverloadedError(Exception):
    """The write queue is full: the caller should retry later (HTTP 503)."""


_Item = tuple[Callable[[UnitOfWork], Any], asyncio.Future[Outcome], asyncio.AbstractEventLoop]
Recorded = Sequence[tuple[int, Any]]


class Writer:
    def __init__(
        self,
        app: ContactCentre,
        *,
        max_batch: int = 256,
        max_queue: int = 20_000,
        before_batch: Callable[[], None] | None = None,
        after_commit: Callable[[int], None] | None = None,
        listeners: Sequence[Callable[[Recorded], None]] = (),
    ) -> None:
        self.app = app
        self.max_batch = max_batch
        self._queue: queue.Queue[_Item | None] = queue.Queue(maxsize=max_queue)
        self._before_batch = before_batch
        self._after_commit = after_commit
        # Told of every save of the application, in order, after the previous batches':
        # the in-process feed, and whatever must run once the read models show a save.
        self.listeners = list(listeners)
        self._thread: threading.Thread | None = None
        self._recording: list[Recorded] | None = None  # the writer thread's, during a batch
        self.batches = 0
        self.commands = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="writer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=30)
            self._thread = None

    def recorded(self, recorded: Recorded) -> None:
        """The application's listener: what the writer's batches record goes to the
        writer's :attr:`listeners` after the batch, before its callers hear back; saves made
        outside the writer (a CLI command, a test) go to them at once, in the saving
        thread."""
        collecting = self._recording
        if collecting is not None and threading.current_thread() is self._thread:
            collecting.append(recorded)
            return
        for listener in self.listeners:
            listener(recorded)

    async def submit(self, command: Callable[[UnitOfWork], Any]) -> Outcome:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Outcome] = loop.create_future()
        try:
            self._queue.put_nowait((command, future, loop))
        except queue.Full:
            raise OverloadedError("too many writes queued") from None
        return await future

    async def run(self, command: Callable[[UnitOfWork], Any]) -> tuple[Any, int | None]:
        """Submit and unwrap: returns (result, position) or raises the command's error."""
        outcome = await self.submit(command)
        if outcome.error is not None:
            raise outcome.error
        return outcome.result, outcome.position

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stopping = False
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            self._process(batch)
            if stopping:
                return

    def _process(self, batch: list[_Item]) -> None:
        recorded: list[Recorded] = []
        self._recording = recorded
        try:
            if self._before_batch is not None:
                self._before_batch()
            outcomes = self.app.run_batch([command for command, _, _ in batch])
        except Exception as error:  # infrastructure failure: every command in it failed
            log.exception("write batch of %d failed", len(batch))
            outcomes = [Outcome(error=error) for _ in batch]
        finally:
            self._recording = None
        self.batches += 1
        self.commands += len(batch)
        positions = [o.position for o in outcomes if o.position is not None]
        if positions and self._after_commit is not None:
            self._after_commit(max(positions))
        self._publish(recorded)
        _answer(batch, outcomes)

    def _publish(self, recorded: list[Recorded]) -> None:
        for saved in recorded:
            for listener in self.listeners:
                try:
                    listener(saved)
                except Exception:  # committed: the feed's own threads catch up
                    log.exception("publishing a write batch failed")


def _answer(batch: list[_Item], outcomes: list[Outcome]) -> None:
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Outcome], Outcome]]] = {}
    for (_, future, loop), outcome in zip(batch, outcomes, strict=True):
        by_loop.setdefault(loop, []).append((future, outcome))
    for loop, settled in by_loop.items():
        loop.call_soon_threadsafe(_settle, settled)


def _settle(settled: list[tuple[asyncio.Future[Outcome], Outcome]]) -> None:
    for future, outcome in settled:
        if not future.done():
            future.set_result(outcome)
