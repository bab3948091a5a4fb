"""Embedded `serve` applies events to the read models in a child process
(`contact-centre projections follow`): writes still read back at once through the API,
the child is started again after `kill -9` without losing or repeating an event, and it
stops with serve. Run as users run it, on SQLite and on PostgreSQL without Kafka."""

from __future__ import annotations

import json
import os
import signal
import time
from typing import Any

import aiohttp

from infra.config import Settings
from infra.runtime import build
from tests.e2e.processes import alive, children_running, serving, stop_serve
from tests.e2e.test_cli import cli_env, run_cli
from tests.helpers import eventually, interaction, until
from tests.kafka.support import differences, read_models

WAIT_MS = 20_000  # read-your-writes waits this long at most: a lost report shows as a stall


def _projectors(pid: int) -> list[int]:
    return children_running(pid, b"projections", b"follow")


def _env(settings: Settings) -> dict[str, str]:
    env = {**os.environ, **cli_env(settings), "CC_WEBHOOK_DISPATCHER": "off"}
    env.pop("CC_PROJECTIONS", None)  # the default: read models in a child
    env["CC_PROJECTION_WAIT_MS"] = str(WAIT_MS)
    return env


async def _inbox(http: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    async with http.get(f"{base}/v1/conversations?limit=100") as answer:
        assert answer.status == 200
        return list((await answer.json())["items"])


async def test_serve_keeps_read_models_in_a_child_it_restarts_and_stops(
    settings: Settings,
) -> None:
    env = _env(settings)
    created = run_cli("tenant", "create", "Projected Ltd", env=env)
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["admin_token"]
    headers = {"Authorization": f"Bearer {token}"}
    async with serving(env) as (serve, base):
        async with aiohttp.ClientSession(headers=headers) as http:
            first = await until(lambda: _projectors(serve.pid), "the projector child")
            assert len(first) == 1

            async with http.post(f"{base}/v1/interactions", json=interaction(body="hi")) as a:
                assert a.status == 201
                conversation = (await a.json())["conversation_id"]
            # Read-your-writes: each reply returns once the child reports the inbox shows
            # it (well inside WAIT_MS), and the next read sees it.
            for n in range(5):
                started = time.monotonic()
                reply = {"body": f"reply {n}"}
                url = f"{base}/v1/conversations/{conversation}/replies"
                async with http.post(url, json=reply) as answer:
                    assert answer.status == 201, await answer.text()
                assert time.monotonic() - started < WAIT_MS / 2000
                [item] = await _inbox(http, base)
                assert item["id"] == conversation
                assert item["last_message"]["preview"] == f"reply {n}"

            # kill -9 the child while writes go on: serve starts another, which takes the
            # log up from the positions the first one committed.
            os.kill(first[0], signal.SIGKILL)
            for n in range(3):
                sender = {"kind": "email", "address": f"down{n}@example.com"}
                body = interaction(channel="email", body=f"while down {n}", sender=sender)
                async with http.post(f"{base}/v1/interactions", json=body) as answer:
                    assert answer.status == 201, await answer.text()
            second = await until(
                lambda: [p for p in _projectors(serve.pid) if p != first[0]], "a new child"
            )

            async def shows_all() -> bool:
                return len(await _inbox(http, base)) == 4

            await eventually(shows_all, 30)

            # every read model catches up with the log (workflows still write a little
            # after the inbox shows the conversations: placement queues them)
            ready: dict[str, Any] = {}

            async def all_caught_up() -> bool:
                async with http.get(f"{base}/ready") as answer:
                    ready.update(await answer.json())
                return {p["lag"] for p in ready["projections"].values()} == {0}

            await eventually(all_caught_up, 30)
            assert not any(p["error"] for p in ready["projections"].values())

        await stop_serve(serve, second[0])

    # What the two children built equals a rebuild of every read model from the log:
    # nothing lost and nothing applied twice across the kill.
    runtime = build(settings)
    try:
        followed = read_models(runtime)
        runtime.feed.rebuild_together(runtime.consumers)
        rebuilt = read_models(runtime)
    finally:
        runtime.close()
    assert sum(len(rows) for rows in rebuilt.values()) > 0
    assert followed == rebuilt, differences(followed, rebuilt)


async def test_the_projector_stops_when_serve_is_killed(settings: Settings) -> None:
    async with serving(_env(settings)) as (serve, _):
        [child] = await until(lambda: _projectors(serve.pid), "the projector child")
        serve.kill()  # no SIGTERM handler runs: the child sees its stdin close
        serve.wait()
        await until(lambda: not alive(child), "the orphaned projector to stop", 15)
