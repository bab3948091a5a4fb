"""Runs workflow tickers periodically, each in a thread of its own."""

from __future__ import annotations

import logging
import threading

from contact_centre.clock import Clock
from workflows.base import Ticker

log = logging.getLogger(__name__)


class TickerRunner:
    def __init__(self, tickers: list[Ticker], clock: Clock) -> None:
        self.tickers = tickers
        self.clock = clock
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._wake: dict[str, threading.Event] = {t.name: threading.Event() for t in tickers}
        self.errors: dict[str, str] = {}

    def start(self) -> None:
        self._stop.clear()
        for ticker in self.tickers:
            self._wake.setdefault(ticker.name, threading.Event())  # added after construction
            thread = threading.Thread(
                target=self._run, args=(ticker,), name=f"ticker-{ticker.name}", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def wake(self, name: str) -> None:
        """Tick now (e.g. new work was just recorded) instead of at the next interval."""
        event = self._wake.get(name)
        if event is not None:
            event.set()

    def stop(self) -> None:
        self._stop.set()
        for event in self._wake.values():
            event.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()

    def _run(self, ticker: Ticker) -> None:
        wake = self._wake.setdefault(ticker.name, threading.Event())
        backoff = ticker.interval
        while not self._stop.is_set():
            try:
                done = ticker.tick(self.clock.now())
                self.errors.pop(ticker.name, None)
                backoff = ticker.interval
            except Exception as error:  # keep ticking: log by type, retry with backoff
                log.exception("ticker %s failed", ticker.name)
                self.errors[ticker.name] = type(error).__name__
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 60.0)
                continue
            if done == 0:
                wake.wait(ticker.interval)
                wake.clear()
