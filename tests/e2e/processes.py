"""The processes `serve` runs beside it, found and started as an operator would."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from infra.localpg import free_port
from tests.e2e.test_cli import CLI, ROOT
from tests.helpers import until


def children(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def children_running(pid: int, *words: bytes) -> list[int]:
    """The children of ``pid`` whose command line has every one of ``words``."""
    out = []
    for child in children(pid):
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if all(word in command for word in words):
            out.append(child)
    return out


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


@contextlib.asynccontextmanager
async def serving(env: dict[str, str]) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """`contact-centre serve` on a free port, up (its /health answers); killed at the end
    if the test has not stopped it."""
    port = free_port()
    serve = start_serve(env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while not await _up(http, base):
                assert time.monotonic() < deadline, "serve did not come up"
                await asyncio.sleep(0.2)
        yield serve, base
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()


async def _up(http: aiohttp.ClientSession, base: str) -> bool:
    try:
        async with http.get(f"{base}/health") as answer:
            return answer.status == 200
    except aiohttp.ClientError:
        return False


async def stop_serve(serve: subprocess.Popen[bytes], child: int) -> None:
    """SIGTERM serve: it exits cleanly, and ``child`` stops with it."""
    serve.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(serve.wait, 30) == 0
    await until(lambda: not alive(child), "the child to stop with serve", 15)
