"""`serve` sends webhooks from a child process (`contact-centre webhooks dispatch`), keeps
it running, and takes it down when it stops: run as users run it, on both backends."""

from __future__ import annotations

import json
import os
import signal

import aiohttp

from infra.config import Settings
from tests.e2e.processes import children_running, serving, stop_serve
from tests.e2e.test_cli import cli_env, run_cli
from tests.helpers import interaction, until
from tests.webhooks.conftest import running_receiver


def _dispatchers(pid: int) -> list[int]:
    return children_running(pid, b"webhooks", b"dispatch")


async def test_serve_dispatches_from_a_child_it_restarts_and_stops(settings: Settings) -> None:
    env = {**os.environ, **cli_env(settings), "CC_WEBHOOK_ALLOWED_NETWORKS": "127.0.0.1/32"}
    env.pop("CC_WEBHOOK_DISPATCHER", None)  # the default: a process of its own
    created = run_cli("tenant", "create", "Hooked Ltd", env=env)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["admin_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with serving(env) as (serve, base):
        async with running_receiver() as receiver, aiohttp.ClientSession(headers=headers) as http:
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

        await stop_serve(serve, second[0])
