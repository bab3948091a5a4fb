"""The live sockets, observed by real WebSocket clients over loopback."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from infra.feed import Progress
from infra.runtime import Runtime
from tests.helpers import Api, unique_phone, until


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    """The next message of ``kind`` (with the given fields), within a bounded wait."""
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
                return dict(message)


def _ws(client: TestClient[Any, Any], path: str, token: str) -> Any:
    return client.ws_connect(path, headers={"Authorization": f"Bearer {token}"})


async def _texts_queue_and_agent(api: Api) -> tuple[dict[str, Any], str, Api]:
    """A queue for SMS, an agent in it, and an API client holding the agent's token."""
    _, queue = await api.post("/v1/queues", {"name": "Texts", "channels": ["sms"]})
    _, agent = await api.post("/v1/agents", {"name": "Ann Agent"})
    agent_id = agent["agent_id"]
    return queue, agent_id, api.as_token(await api.issue_token("agent", agent_id=agent_id))


async def test_agents_and_supervisors_see_offers_and_live_state(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    queue, agent_id, agent_api = await _texts_queue_and_agent(api)
    supervisor = await api.issue_token("supervisor")
    async with (
        _ws(client, "/v1/agent/ws", agent_api.token) as agent_ws,
        _ws(client, "/v1/supervisor/ws", supervisor) as desk_ws,
    ):
        hello = await agent_ws.receive_json()
        assert hello["type"] == "hello"
        assert hello["agent_id"] == agent_id
        assert hello["queues"] == [queue["queue_id"]]
        assert hello["offers"] == []
        first = await desk_ws.receive_json()
        assert first["type"] == "hello"
        assert [q["queue_id"] for q in first["queues"]] == [queue["queue_id"]]

        assert (await agent_api.post(f"/v1/agents/{agent_id}/login"))[0] == 200
        seen = await _until(desk_ws, "agent", agent_id=agent_id, presence="available")
        assert seen["capacity"]["sms"] == 3

        phone = unique_phone()
        customer = {"kind": "phone", "address": phone, "display_name": "Ann"}
        ids = await api.receive(channel="sms", body="Where is my parcel?", sender=customer)
        conversation = ids["conversation_id"]
        offer = await _until(agent_ws, "offer", conversation_id=conversation)
        assert offer["channel"] == "sms"
        assert offer["queue_id"] == queue["queue_id"]
        assert offer["expires_at"].endswith("Z")
        await _until(desk_ws, "queue", queue_id=queue["queue_id"], waiting=1)

        status, _ = await agent_api.post(f"/v1/conversations/{conversation}/accept")
        assert status == 200
        await _until(agent_ws, "inbox", conversation_id=conversation, change="assigned")
        await _until(desk_ws, "queue", queue_id=queue["queue_id"], waiting=0)

        # the customer writes again on the same thread: the agent hears of the new message
        await api.receive(channel="sms", body="Any news?", sender=customer)
        message = await _until(agent_ws, "message", conversation_id=conversation)
        assert message["direction"] == "inbound"
        assert "body" not in message  # pushes carry ids, never content

        wrap = {"disposition": "delivered"}
        status, _ = await agent_api.post(f"/v1/conversations/{conversation}/wrap-up", wrap)
        assert status == 200
        await _until(agent_ws, "inbox", conversation_id=conversation, change="resolved")
        freed = await _until(desk_ws, "agent", agent_id=agent_id, load={})
        assert freed["offers"] == []


async def test_live_sockets_authenticate_like_the_api(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    _, agent = await api.post("/v1/agents", {"name": "Ann Agent"})
    agent_token = await api.issue_token("agent", agent_id=agent["agent_id"])
    supervisor = await api.issue_token("supervisor")
    integration = await api.issue_token("integration")
    refused = [
        ("/v1/agent/ws", None, 401),
        ("/v1/agent/ws", "cc_forged", 401),
        ("/v1/agent/ws", supervisor, 403),
        ("/v1/agent/ws", api.token, 403),
        ("/v1/supervisor/ws", agent_token, 403),
        ("/v1/supervisor/ws", integration, 403),
    ]
    for path, token, status in refused:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with client.get(path, headers=headers) as response:
            assert response.status == status, (path, status)


async def test_a_socket_sees_only_its_own_tenant_and_queues(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    _, texts = await api.post("/v1/queues", {"name": "Texts", "channels": ["sms"]})
    _, vip = await api.post("/v1/queues", {"name": "VIP", "channels": ["email"]})
    await api.call("PATCH", f"/v1/queues/{vip['queue_id']}", json={"required_skills": ["vip"]})
    _, agent = await api.post("/v1/agents", {"name": "Ann Agent"})
    agent_token = await api.issue_token("agent", agent_id=agent["agent_id"])
    other = await Api.for_new_tenant(client, runtime, "Tenant B")
    other_supervisor = await other.issue_token("supervisor")
    async with (
        _ws(client, "/v1/agent/ws", agent_token) as agent_ws,
        _ws(client, "/v1/supervisor/ws", other_supervisor) as other_ws,
    ):
        hello = await agent_ws.receive_json()
        assert hello["queues"] == [texts["queue_id"]]  # not VIP: lacks the skill
        other_hello = await other_ws.receive_json()
        assert other_hello["queues"] == []
        assert other_hello["agents"] == []
        email = await api.receive(
            channel="email",
            body="VIP question",
            sender={"kind": "email", "address": "vip@example.com"},
            to={"kind": "email", "address": "help@acme.example"},
        )
        sms = await api.receive(channel="sms", body="Texting")
        heard = await _collect(agent_ws, 1.0)
        about = {m.get("conversation_id") for m in heard}
        assert sms["conversation_id"] in about
        assert email["conversation_id"] not in about  # a queue it does not work
        assert await _collect(other_ws, 0.3) == []  # tenant B heard nothing of tenant A


async def _collect(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict[str, Any]]:
    """Every message that arrives within ``seconds``."""
    messages: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(seconds):
            while True:
                messages.append(await ws.receive_json())
    except TimeoutError:
        pass
    return messages


class _LaggingInbox(Progress):
    """Progress whose inbox stands still until :meth:`catch_up`: a projector behind."""

    def __init__(self) -> None:
        super().__init__()
        self.held = True

    def advance(self, consumer: str, position: int) -> None:
        if consumer != "inbox" or not self.held:
            super().advance(consumer, position)

    def catch_up(self, position: int) -> None:
        self.held = False
        super().advance("inbox", position)


@contextlib.asynccontextmanager
async def _offered_behind_a_lagging_inbox(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, wait_ms: int
) -> AsyncIterator[tuple[Any, _LaggingInbox, str]]:
    """An agent's socket, open, with an offer for a new conversation made and queued while
    the projector's inbox lags: (socket, the lagging progress, conversation id)."""
    _, agent_id, agent_api = await _texts_queue_and_agent(api)
    assert (await agent_api.post(f"/v1/agents/{agent_id}/login"))[0] == 200
    # from here on the read models are a projector's, and its inbox lags
    runtime.settings = replace(runtime.settings, projection_wait_ms=wait_ms)
    runtime.projections_elsewhere = True
    lagging = _LaggingInbox()
    runtime.feed.progress = lagging
    async with _ws(client, "/v1/agent/ws", agent_api.token) as agent_ws:
        assert (await agent_ws.receive_json())["type"] == "hello"
        customer = {"kind": "phone", "address": unique_phone(), "display_name": "Ann"}
        before = runtime.live.pushed
        ids = await api.receive(channel="sms", body="Where is my parcel?", sender=customer)
        await until(lambda: runtime.live.pushed > before, "the offer to be queued")
        with pytest.raises(TimeoutError):  # held
            async with asyncio.timeout(0.5):
                await agent_ws.receive_json()
        yield agent_ws, lagging, ids["conversation_id"]


async def test_a_push_waits_until_the_projector_shows_the_inbox_that_far(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    async with _offered_behind_a_lagging_inbox(api, client, runtime, 20_000) as held:
        agent_ws, lagging, conversation = held
        routing = runtime.routing
        assert routing is not None
        lagging.catch_up(routing.position() or 0)
        async with asyncio.timeout(5):  # now, not after the 20 s bound
            offer = await _until(agent_ws, "offer", conversation_id=conversation)
        assert offer["channel"] == "sms"


async def test_a_held_push_goes_out_once_its_wait_runs_out(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    async with _offered_behind_a_lagging_inbox(api, client, runtime, 1_500) as held:
        agent_ws, _, conversation = held
        # the projector never catches up: the push is late, not lost
        await _until(agent_ws, "offer", conversation_id=conversation)
