"""A child process of ``serve`` that ``serve`` keeps running: started with it, started
again (after a pause that grows while it keeps failing) whenever it exits, and stopped
with it. The webhook dispatcher and the projector run this way; each child also stops by
itself when it sees that ``serve`` (its ``--parent``) is gone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0
HEALTHY_SECONDS = 60.0  # a child that ran this long is restarted at once again if it exits


class SupervisedChild:
    """Runs ``contact-centre ARGS --data-dir D --parent PID`` and keeps it running.

    ``piped`` (a subclass's): the child's stdin and stdout are pipes, handed to
    :meth:`spawned` after every start and to :meth:`exited` once it is gone. The child
    runs in a session of its own, so a Ctrl-C in serve's terminal reaches serve only,
    which then stops it."""

    piped = False

    def __init__(self, name: str, args: Sequence[str], data_dir: Path) -> None:
        self.name = name
        self.args = list(args)
        self.data_dir = data_dir
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        child = self._child
        return child is not None and child.poll() is None

    def spawned(self, child: subprocess.Popen[bytes]) -> None:
        """Called after every start (piped children: attach to the pipes)."""

    def exited(self, child: subprocess.Popen[bytes]) -> None:
        """Called once a child has exited, before the next starts."""

    def _spawn(self) -> subprocess.Popen[bytes]:
        command = [
            sys.executable,
            "-m",
            "infra.cli",
            *self.args,
            "--data-dir",
            str(self.data_dir),
            "--parent",
            str(os.getpid()),
        ]
        child = subprocess.Popen(
            command,
            stdin=subprocess.PIPE if self.piped else subprocess.DEVNULL,
            stdout=subprocess.PIPE if self.piped else None,
            start_new_session=True,
        )
        try:
            self.spawned(child)
        except BaseException:
            child.kill()
            child.wait()
            raise
        self._started = time.monotonic()
        return child

    def start(self) -> None:
        self._child = self._spawn()
        self._thread = threading.Thread(target=self._watch, name=self.name, daemon=True)
        self._thread.start()

    def _watch(self) -> None:
        backoff = 1.0
        while not self._stop.wait(0.5):
            child = self._child
            if child is None or child.poll() is None:
                continue
            self.exited(child)
            log.error("the %s exited (%s); restarting", self.name, child.returncode)
            if time.monotonic() - self._started >= HEALTHY_SECONDS:
                backoff = 0.0  # it had been running well: a one-off, not a crash loop
            if self._stop.wait(backoff):
                return
            backoff = min(max(backoff * 2, 1.0), MAX_BACKOFF_SECONDS)
            self.restarts += 1
            try:
                self._child = self._spawn()
            except Exception:
                log.exception("starting the %s failed", self.name)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        child = self._child
        if child is not None and child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)
        if child is not None:
            self.exited(child)
