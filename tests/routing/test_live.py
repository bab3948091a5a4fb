"""The live sockets, observed by real WebSocket clients over loopback."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.helpers import Api, unique_phone


async def _until(ws: aiohttp.ClientWebSocketResponse, kind: str, **match: Any) -> dict[str, Any]:
    """The next message of ``kind`` (with the given fields), within a bounded wait."""
    async with asyncio.timeout(10):
        while True:
            message = await ws.receive_json()
            if message["type"] == kind and all(message.get(k) == v for k, v in match.items()):
                return dict(message)


def _ws(client: TestClient[Any, Any], path: str, token: str) -> Any:
    return client.ws_connect(path, headers={"Authorization": f"Bearer {token}"})


async def test_agents_and_supervisors_see_offers_and_live_state(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    _, queue = await api.post("/v1/queues", {"name": "Texts", "channels": ["sms"]})
    _, agent = await api.post("/v1/agents", {"name": "Ann Agent"})
    agent_id = agent["agent_id"]
    agent_api = api.as_token(await api.issue_token("agent", agent_id=agent_id))
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
