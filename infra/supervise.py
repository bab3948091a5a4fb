"""A child process of ``serve`` that ``serve`` keeps running: started with it, started
again (with a growing pause) whenever it exits, and stopped with it. The webhook
dispatcher and the projector run this way; each child also stops by itself when it sees
that ``serve`` (its ``--parent``) is gone."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)

MAX_BACKOFF_SECONDS = 30.0


class SupervisedChild:
    """Runs ``contact-centre ARGS --data-dir D --parent PID`` and keeps it running.

    ``piped``: the child's stdin and stdout are pipes (``stdin``/``stdout`` of the current
    child), and ``on_spawn(child)`` runs after every start, before the child counts as
    running (the projector's reader thread attaches there)."""

    def __init__(
        self,
        name: str,
        args: Sequence[str],
        data_dir: Path,
        *,
        piped: bool = False,
        on_spawn: Callable[[subprocess.Popen[bytes]], None] | None = None,
    ) -> None:
        self.name = name
        self.args = list(args)
        self.data_dir = data_dir
        self.piped = piped
        self.on_spawn = on_spawn
        self.restarts = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def child(self) -> subprocess.Popen[bytes] | None:
        return self._child

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
        pipe = subprocess.PIPE if self.piped else subprocess.DEVNULL
        child = subprocess.Popen(
            command, stdin=pipe, stdout=subprocess.PIPE if self.piped else None
        )
        if self.on_spawn is not None:
            self.on_spawn(child)
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
            log.error("the %s exited (%s); restarting", self.name, child.returncode)
            if self._stop.wait(backoff):
                return
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            self.restarts += 1
            self._child = self._spawn()

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
