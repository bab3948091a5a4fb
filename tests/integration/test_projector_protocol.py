"""The projector's two sides of the pipe: `contact-centre projections follow` woken through
its stdin and reporting on its stdout, and serve's reader of those reports."""

from __future__ import annotations

import io
import os
import select
import subprocess
import time
from collections.abc import Callable
from dataclasses import replace

from infra.config import Settings
from infra.feed import Progress
from infra.projector_process import ReportingProgress, _read_reports
from infra.runtime import Runtime, build
from tests.e2e.test_cli import CLI, ROOT, cli_env
from tests.integration.test_feed import receive_many

NEVER = "600"  # the child's own poll: only a wake-up can make it read the log in a test


def _reports(
    child: subprocess.Popen[bytes], enough: Callable[[dict[str, int]], bool], seconds: float
) -> dict[str, int]:
    """The positions the child reports, by read model, read until ``enough(seen)`` or
    ``seconds`` pass."""
    assert child.stdout is not None
    seen: dict[str, int] = {}
    fd = child.stdout.fileno()
    buffered = b""
    deadline = time.monotonic() + seconds
    while not enough(seen) and time.monotonic() < deadline:
        readable, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 65_536) if readable else b""
        if not chunk:
            break
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            name, position = line.decode().split(" ")
            seen[name] = max(seen.get(name, 0), int(position))
    return seen


def _follow(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "projections", "follow", "--parent", str(os.getpid()), "--poll-seconds", NEVER],
        cwd=ROOT,
        env={**os.environ, **cli_env(settings)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )


def test_a_wake_up_on_stdin_makes_the_child_apply_and_report(settings: Settings) -> None:
    # this process writes and leaves the read models to the child
    writer: Runtime = build(replace(settings, projections="process"))
    assert writer.projections_elsewhere
    tenant, _ = writer.app.register_tenant("Acme")
    before = writer.app.recorder.max_notification_id() or 0
    child = _follow(settings)
    try:
        # it applies what the log holds as it starts, then waits
        started = _reports(child, lambda seen: seen.get("inbox", 0) >= before, 30)
        assert started.get("inbox", 0) >= before
        receive_many(writer, tenant, 3)
        head = writer.app.recorder.max_notification_id() or 0

        assert child.stdin is not None
        child.stdin.write(b"\n")
        child.stdin.flush()
        woken = _reports(child, lambda seen: seen.get("inbox", 0) >= head, 10)
        assert woken.get("inbox", 0) >= head  # not its 600 s poll, nor its threads' 60 s
        with writer.readdb.read() as tx:
            tx.execute("SELECT COUNT(*) FROM rm_messages")
            row = tx.fetchone()
        assert row is not None
        assert row[0] == 3

        child.stdin.close()  # serve is gone: the child stops
        assert child.wait(timeout=15) == 0
    finally:
        if child.poll() is None:
            child.kill()
        with child:  # its pipes closed, and waited for
            pass
        writer.close()


def test_serve_reads_positions_and_failures_and_skips_garbage() -> None:
    progress = Progress()
    errors: dict[str, str] = {"timeline": "OldError"}
    stream = io.BytesIO(b"inbox 41\ninbox 40\n!crm KeyError\nnot a report\n!timeline -\ncrm x\n")
    _read_reports(stream, progress, errors)
    assert progress.get("inbox") == 41  # never moves back
    assert errors == {"crm": "KeyError"}
    assert stream.closed


def test_the_child_reports_each_change_of_failures_once() -> None:
    read, write = os.pipe()
    try:
        progress = ReportingProgress(write)
        progress.advance("inbox", 7)
        progress.advance("inbox", 7)  # nothing new
        progress.send_errors({"crm": "KeyError"})
        progress.send_errors({"crm": "KeyError"})  # nothing new
        progress.send_errors({})
        os.close(write)
        write = -1
        with os.fdopen(read, "rb") as out:
            read = -1
            assert out.read().decode().splitlines() == ["inbox 7", "!crm KeyError", "!crm -"]
    finally:
        for fd in (read, write):
            if fd >= 0:
                os.close(fd)


def test_a_child_whose_reader_is_gone_stops_writing() -> None:
    read, write = os.pipe()
    os.close(read)
    progress = ReportingProgress(write)
    try:
        progress.advance("inbox", 1)  # EPIPE: serve is gone
        assert progress.closed
        progress.advance("inbox", 2)  # no error, nothing written
    finally:
        os.close(write)


async def test_serve_can_wait_for_the_read_models_it_needs_and_not_the_others(
    settings: Settings,
) -> None:
    """A webchat reconnect waits for the inbox only, not for the slowest read model."""
    rt = build(replace(settings, projections="process"))
    try:
        tenant, _ = rt.app.register_tenant("Acme")
        receive_many(rt, tenant, 3)
        head = rt.app.recorder.max_notification_id() or 0
        rt.feed.progress.advance("inbox", head)  # as the projector reports it
        assert await rt.projected(0.2, ("inbox",))
        assert not await rt.projected(0.2)
        assert not await rt.projected(0.2, ("inbox", "metrics"))
    finally:
        rt.close()
