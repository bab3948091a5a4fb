"""The read models, kept up to date by a process of their own beside ``serve``.

Applying each write to the eleven read models cost ``serve`` more than half of its CPU
time under the ingest benchmark (about 0.5 ms of 0.9 ms an interaction, all of it under
one interpreter lock). With ``CC_PROJECTIONS=process`` (the default of ``serve`` without
Kafka) ``serve`` only records events; ``contact-centre projections follow`` runs beside
it, reads the event log and applies it to the read models, with the same projection
code, tracking positions and transactions as the in-process feed.

The two talk over the child's stdin and stdout:

- ``serve`` writes a byte to the child's stdin after every commit (a wake-up; the child
  also looks at the log twice a second for writes of other processes, such as the CLI);
- the child writes ``NAME POSITION`` lines to its stdout whenever a read model has
  applied the log up to POSITION, and ``!NAME ERROR`` / ``!NAME -`` when a read model
  starts or stops failing. ``serve`` advances its feed's progress from them, which is
  what read-your-writes waits on (``CC_PROJECTION_WAIT_MS``) and ``/ready`` reports.

The child stops when its stdin closes (``serve`` is gone), when its reports cannot be
written, when its parent changes, or on SIGTERM; ``serve`` starts it again if it exits
(:class:`SupervisedChild`). Positions commit with the rows, so a restarted child neither
skips an event nor applies one twice.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import threading
from typing import IO

from infra.config import Settings
from infra.feed import InProcessFeed, Progress
from infra.runtime import Runtime, build, freeze_startup_heap
from infra.supervise import SupervisedChild

log = logging.getLogger(__name__)

READ_BATCH = 2_000  # notifications read and applied in one transaction, at most
# A read model far behind or failing is caught up by its own thread, which the feed wakes
# when it sees one; the thread's own look at the log can be rare.
THREAD_POLL_SECONDS = 60.0


class ReportingProgress(Progress):
    """The child's progress, each advance also written to ``out`` as ``NAME POSITION``.

    ``closed`` turns true when ``out`` can no longer be written (serve is gone)."""

    def __init__(self, out: int) -> None:
        super().__init__()
        self._out = out
        self._sent: dict[str, int] = {}
        self._errors: dict[str, str] = {}  # the failures last reported, by read model
        self._write = threading.Lock()
        self.closed = False

    def advance(self, consumer: str, position: int) -> None:
        super().advance(consumer, position)
        with self._write:
            if self._sent.get(consumer, -1) >= position:
                return
            self._sent[consumer] = position
            self._send(f"{consumer} {position}\n")

    def send_errors(self, errors: dict[str, str]) -> None:
        """Report read models that started or stopped failing since the last call
        (``errors``: a copy of the feed's, which its threads change)."""
        with self._write:
            sent = self._errors
            lines = [f"!{n} {e}\n" for n, e in errors.items() if sent.get(n) != e]
            lines += [f"!{name} -\n" for name in sent if name not in errors]
            if lines:
                self._send("".join(lines))
            self._errors = errors

    def _send(self, text: str) -> None:
        if self.closed:
            return
        try:
            os.write(self._out, text.encode())  # < PIPE_BUF: written whole or not at all
        except BrokenPipeError:
            self.closed = True


def run_projector(settings: Settings, parent: int | None, poll_seconds: float) -> None:
    """Apply the log to the read models until SIGTERM, or, beside serve (``parent``), until
    stdin closes or ``parent`` goes. Alone it reads the log every ``poll_seconds``."""
    out = os.dup(1)  # the reports; anything else printed goes to stderr, not into them
    os.dup2(2, 1)
    runtime = build(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    progress = ReportingProgress(out)
    app = runtime.app
    feed = InProcessFeed(app.recorder, app.mapper, poll_interval=THREAD_POLL_SECONDS)
    feed.progress = progress
    for consumer in runtime.consumers:
        feed.add(consumer)
    freeze_startup_heap()
    try:
        _follow(runtime, feed, progress, stop, parent, poll_seconds)
    finally:
        feed.stop()
        runtime.close()
        os.close(out)


def _follow(
    runtime: Runtime,
    feed: InProcessFeed,
    progress: ReportingProgress,
    stop: threading.Event,
    parent: int | None,
    poll_seconds: float,
) -> None:
    recorder, mapper = runtime.app.recorder, runtime.app.mapper
    positions = {consumer.name: consumer.position() or 0 for consumer in runtime.consumers}
    for name, stored in positions.items():  # where each stands, before anything moves
        progress.advance(name, stored)
    position = min(positions.values(), default=0)
    # this loop reads the log for all of them; a thread takes over one far behind or
    # one that failed, when publish() wakes it
    feed.start(when_woken=True)
    log.info("projector following the log from %d (parent %s)", position, parent)
    while not stop.is_set():
        if progress.closed or (parent is not None and os.getppid() != parent):
            log.warning("serve (pid %s) is gone: the projector stops", parent)
            return
        notifications = recorder.select_notifications(
            start=position, limit=READ_BATCH, inclusive_of_start=False
        )
        if notifications:
            runtime.vault.refresh()  # keys destroyed by serve since the last batch
            feed.publish([(n.id, mapper.to_domain_event(n)) for n in notifications])
            position = notifications[-1].id
        progress.send_errors(dict(feed.errors))
        if notifications:
            continue
        if parent is None:
            stop.wait(poll_seconds)
        elif not _wait_for_wake(poll_seconds):
            log.info("serve closed the projector's stdin: stopping")
            return


def _wait_for_wake(timeout: float) -> bool:
    """Wait until serve writes to stdin (or ``timeout``) and take what it wrote; False when
    stdin is closed."""
    readable, _, _ = select.select([0], [], [], timeout)
    if not readable:
        return True
    return bool(os.read(0, 65_536))


class ProjectorProcess(SupervisedChild):
    """Keeps ``contact-centre projections follow`` running beside ``serve``: wakes it after
    every commit and advances ``serve``'s feed progress from its reports."""

    piped = True

    def __init__(self, runtime: Runtime) -> None:
        super().__init__("projector", ["projections", "follow"], runtime.settings.data_dir)
        self.runtime = runtime
        self._wake_fd: int | None = None
        self._wake_lock = threading.Lock()  # the fd is not closed under a wake-up
        runtime.feed.watchers.append(self.notify)
        runtime.projector = self

    def spawned(self, child: subprocess.Popen[bytes]) -> None:
        assert child.stdin is not None
        assert child.stdout is not None
        fd = child.stdin.fileno()
        os.set_blocking(fd, False)  # a wake-up never holds up a commit
        # a new child starts with no failures: forget those its predecessor reported
        for consumer in self.runtime.consumers:
            self.runtime.feed.errors.pop(consumer.name, None)
        with self._wake_lock:
            self._wake_fd = fd
        reader = threading.Thread(
            target=_read_reports,
            args=(child.stdout, self.runtime.feed.progress, self.runtime.feed.errors),
            name="projector-reports",
            daemon=True,
        )
        reader.start()

    def exited(self, child: subprocess.Popen[bytes]) -> None:
        with self._wake_lock:
            self._wake_fd = None
            if child.stdin is not None:
                with contextlib.suppress(OSError):
                    child.stdin.close()

    def notify(self) -> None:
        with self._wake_lock:
            fd = self._wake_fd
            if fd is None:
                return
            # full pipe: the child has wake-ups waiting already; closed: it is restarting
            with contextlib.suppress(OSError):
                os.write(fd, b"\n")


def _read_reports(stream: IO[bytes], progress: Progress, errors: dict[str, str]) -> None:
    """Serve's side of the reports, until the child's stdout closes: positions advance
    ``progress``, failures go into ``errors`` (the feed's, which /ready shows)."""
    with stream:
        for raw in stream:
            line = raw.decode(errors="replace").strip()
            try:
                if line.startswith("!"):
                    name, error = line[1:].split(" ", 1)
                    if error == "-":
                        errors.pop(name, None)
                    else:
                        errors[name] = error
                else:
                    name, position = line.split(" ", 1)
                    progress.advance(name, int(position))
            except ValueError:
                log.warning("the projector wrote an unreadable report line (%d bytes)", len(line))
            except Exception:  # keep reading: a stalled reader would block the child
                log.exception("applying a projector report failed")
