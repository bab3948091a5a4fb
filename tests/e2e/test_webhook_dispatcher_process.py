"""`serve` sends webhooks from a child process (`contact-centre webhooks dispatch`), keeps
it running, and takes it down when it stops: run as users run it, on both backends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import aiohttp

from infra.config import Settings
from infra.localpg import free_port
from tests.e2e.test_cli import CLI, ROOT, cli_env, run_cli
from tests.helpers import interaction, until
from tests.webhooks.conftest import running_receiver


def _children(pid: int) -> list[int]:
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


def _dispatchers(pid: int) -> list[int]:
    out = []
    for child in _children(pid):
        try:
            command = (Path("/proc") / str(child) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"webhooks" in command and b"dispatch" in command:
            out.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _start_serve(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*CLI, "serve", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_serve_dispatches_from_a_child_it_restarts_and_stops(settings: Settings) -> None:
    env = {**os.environ, **cli_env(settings), "CC_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
    env.pop("CC_WEBHOOK_DISPATCHER", None)  # the default: a process of its own
    created = run_cli("tenant", "create", "Hooked Ltd", env=env)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["admin_token"]
    port = free_port()
    serve = _start_serve(env, port)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {token}"}
    try:
        async with running_receiver() as receiver, aiohttp.ClientSession(headers=headers) as http:

            async def up() -> bool:
                try:
                    async with http.get(f"{base}/health") as answer:
                        return answer.status == 200
                except aiohttp.ClientError:
                    return False

            deadline = time.monotonic() + 30
            while not await up():
                assert time.monotonic() < deadline, "serve did not come up"
                await asyncio.sleep(0.2)
            body = {"url": receiver.url(), "event_types": ["message.received"]}
            async with http.post(f"{base}/v1/webhooks", json=body) as answer:
                assert answer.status == 201
                receiver.secrets.append((await answer.json())["secret"])

            async def receive(text: str) -> None:
                async with http.post(f"{base}/v1/interactions", json=interaction(body=text)) as a:
                    assert a.status == 201

            first = await until(lambda: _dispatchers(serve.pid), "the dispatcher child")
            assert len(first) == 1
            await receive("one")
            await until(lambda: len(receiver.unique()) == 1, "the first delivery")

            # The child dies: serve starts another, and nothing is lost.
            os.kill(first[0], signal.SIGKILL)
            await receive("two")
            second = await until(
                lambda: [p for p in _dispatchers(serve.pid) if p != first[0]], "a new child"
            )
            await until(lambda: len(receiver.unique()) == 2, "the second delivery")
            assert receiver.unverified == 0
            # at least once: only an attempt cut off by the kill, before its report was
            # recorded, may come again (with the same webhook-id, for the receiver)
            assert len(receiver.deliveries) - len(receiver.unique()) <= 1

        serve.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(serve.wait, 30) == 0
        await until(lambda: not _alive(second[0]), "the child to stop with serve", 15)
    finally:
        if serve.poll() is None:
            serve.kill()
            serve.wait()
