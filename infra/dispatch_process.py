"""The webhook dispatcher in a process of its own.

Sending thousands of signed HTTP requests a second is CPU work in the HTTP client; in the
``serve`` process it competes for the interpreter with ingest and the read models. By
default (``CC_WEBHOOK_DISPATCHER=process``) ``serve`` therefore starts ``contact-centre
webhooks dispatch`` beside it and restarts it if it dies; the child reads the webhook
outbox from the read-model store, sends what is due and records its reports as events,
which it applies to the outbox itself as it records them (as every process applies what
it writes; the read models' feed would take them from the log otherwise). With PostgreSQL the
advisory lock (:mod:`infra.leader`) still keeps one dispatcher at a time.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from infra.config import Settings
from infra.runtime import build
from infra.scheduler import TickerRunner
from infra.supervise import SupervisedChild

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05  # the child has no in-process wake-ups: it looks for due work this often
CATCH_UP_SECONDS = 10.0  # at most this long waiting for the outbox before dispatching


def run_dispatcher(settings: Settings, parent: int | None) -> None:
    """Run the dispatcher until SIGTERM/SIGINT or until ``parent`` is gone."""
    runtime = build(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        assert runtime.webhooks is not None
        dispatcher = runtime.webhooks.dispatcher
        dispatcher.interval = min(dispatcher.interval, POLL_SECONDS)
        dispatcher.report_wait = 0.0  # it applies its reports as it saves them; the guard: the rest
        # A dispatcher that died may have recorded reports serve's feed has not applied to
        # the outbox yet: start once the outbox shows the log as it is now (bounded), so
        # only an attempt cut off before its report is sent again (same webhook-id).
        head = runtime.app.recorder.max_notification_id() or 0
        deadline = time.monotonic() + CATCH_UP_SECONDS
        while not dispatcher.shows(head) and time.monotonic() < deadline:
            if stop.wait(0.05):
                return
        runner = TickerRunner([dispatcher], runtime.clock)
        runner.start()
        log.info("webhook dispatcher running (parent %s)", parent)
        try:
            while not stop.wait(0.5):
                if parent is not None and os.getppid() != parent:
                    log.warning("serve (pid %s) is gone: the dispatcher stops", parent)
                    break
        finally:
            runner.stop()
    finally:
        runtime.close()


class DispatcherProcess(SupervisedChild):
    """Keeps a ``contact-centre webhooks dispatch`` child running beside ``serve``."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__("webhook dispatcher", ["webhooks", "dispatch"], data_dir)
