"""Webchat: the visitor socket end to end, and what it refuses."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import pytest
from aiohttp import ClientWebSocketResponse, WSMsgType, WSServerHandshakeError
from aiohttp.test_utils import TestClient

from infra.config import Settings
from infra.runtime import Runtime
from tests.channels.support import configure, eventually, wait_for_delivery
from tests.helpers import Api, settle

ORIGIN = "https://shop.example"
PRIVACY = "https://shop.example/privacy"


async def configure_webchat(api: Api, **extra: Any) -> str:
    key = secrets.token_urlsafe(24)
    await configure(
        api,
        "webchat",
        {
            "widget_key": key,
            "allowed_origins": [ORIGIN],
            "pre_chat_fields": [
                {"field": "name", "required": True},
                {"field": "email", "required": False},
                {"field": "question", "required": True},
            ],
            "privacy_policy_url": PRIVACY,
            **extra,
        },
    )
    return key


async def connect(
    client: TestClient[Any, Any], key: str, *, visitor: str | None = None, **headers: str
) -> ClientWebSocketResponse:
    client.session.cookie_jar.clear()  # each call is explicit about the visitor it is
    all_headers = {"Origin": ORIGIN, **headers}
    if visitor:
        all_headers["Cookie"] = f"cc_visitor={visitor}"
    return await client.ws_connect(f"/v1/webchat/{key}/ws", headers=all_headers)


async def receive(ws: ClientWebSocketResponse, kind: str, timeout: float = 10.0) -> Any:
    """The next frame of ``kind`` (frames of other kinds in between are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await ws.receive_json()
            if frame["type"] == kind:
                return frame


START = {
    "type": "start",
    "id": "c1",
    "name": "Emma",
    "email": "emma@example.org",
    "question": "Is click and collect available in Leeds?",
    "consent": True,
}


async def test_a_visitor_chats_gets_replies_pushed_and_reconnects_with_history(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    key = await configure_webchat(api)
    ws = await connect(client, key)
    welcome = await receive(ws, "welcome")
    assert welcome["conversation_id"] is None
    assert welcome["pre_chat"]["privacy_policy_url"] == PRIVACY
    visitor = welcome["visitor_id"]
    cookies = {c.key: c.value for c in client.session.cookie_jar}
    assert cookies["cc_visitor"] == visitor  # the one visitor cookie, set on the handshake
    await ws.send_json(START)
    started = await receive(ws, "started")
    conversation = started["conversation_id"]
    await ws.send_json({"type": "message", "id": "c2", "body": "The Trinity store"})
    ack = await receive(ws, "ack")
    assert (ack["id"], ack["duplicate"]) == ("c2", False)
    await ws.send_json({"type": "message", "id": "c2", "body": "The Trinity store"})
    assert (await receive(ws, "ack"))["duplicate"] is True  # a resend is recorded once

    await ws.send_json({"type": "typing", "typing": True})
    agent_id = await _agent(api, conversation)
    agent = api.as_token(await api.issue_token("agent", agent_id=agent_id))

    async def visitor_typing() -> bool:
        _, detail = await agent.get(f"/v1/conversations/{conversation}")
        return bool(detail["visitor_typing"])

    assert await eventually(visitor_typing)
    status, typing = await agent.post(f"/v1/conversations/{conversation}/typing", {"typing": True})
    assert (status, typing["pushed_to"]) == (200, 1)
    assert (await receive(ws, "typing"))["from"] == "agent"

    status, reply = await agent.post(
        f"/v1/conversations/{conversation}/replies", {"body": "Yes, it is!"}
    )
    assert status == 201
    pushed = await receive(ws, "message")
    assert (pushed["id"], pushed["body"], pushed["author"]) == (
        reply["message_id"],
        "Yes, it is!",
        "agent",
    )
    await wait_for_delivery(api, conversation, reply["message_id"], "delivered")
    await agent.post(f"/v1/conversations/{conversation}/notes", {"body": "internal only"})
    await ws.close()

    # The IP and cookie are kept with the conversation, for admins only.
    _, as_admin = await api.get(f"/v1/conversations/{conversation}")
    assert as_admin["visitor_network"]["ip"] == "127.0.0.1"
    assert as_admin["visitor_network"]["visitor_id"] == visitor
    _, as_agent = await agent.get(f"/v1/conversations/{conversation}")
    assert "visitor_network" not in as_agent
    assert as_admin["contact"]["identities"] == [
        {"kind": "visitor", "address": visitor},
        {"kind": "email", "address": "emma@example.org"},
    ]

    # Back with the same cookie: the same conversation and its history, without notes.
    again = await connect(client, key, visitor=visitor)
    welcome = await receive(again, "welcome")
    assert welcome["conversation_id"] == conversation
    assert [(m["author"], m["body"]) for m in welcome["history"]] == [
        ("visitor", START["question"]),
        ("visitor", "The Trinity store"),
        ("agent", "Yes, it is!"),
    ]
    await again.close()


async def _agent(api: Api, conversation: str) -> str:
    """An agent who has the conversation (agents see only their own or their queues')."""
    _, agent = await api.post("/v1/agents", {"name": "Agent Webchat"})
    status, _ = await api.post(
        f"/v1/conversations/{conversation}/assignment", {"agent_id": agent["agent_id"]}
    )
    assert status == 200
    return str(agent["agent_id"])


async def test_the_pre_chat_form_is_enforced_and_bad_frames_write_nothing(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    key = await configure_webchat(api)
    ws = await connect(client, key)
    await receive(ws, "welcome")
    await settle(runtime)
    before = runtime.app.recorder.max_notification_id()
    for frame, error in (
        ({**START, "consent": False}, "invalid"),
        ({**START, "name": ""}, "invalid"),
        ({**START, "email": "not-an-email"}, "invalid"),
        ({"type": "message", "id": "m1", "body": "before starting"}, "conflict"),
        ({"type": "launch"}, "invalid"),
        ({"no": "type"}, "malformed"),
    ):
        await ws.send_json(frame)
        assert (await receive(ws, "error"))["error"] == error, frame
    await ws.send_str("{not json")
    assert (await receive(ws, "error"))["error"] == "malformed"
    assert runtime.app.recorder.max_notification_id() == before
    await ws.send_str("x" * 20_000)  # over the frame limit: the socket is closed
    message = await ws.receive()
    assert message.type is WSMsgType.CLOSE
    assert message.data == 1009
    assert runtime.app.recorder.max_notification_id() == before


async def test_wrong_widget_wrong_origin_and_blocked_visitors_are_refused(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    key = await configure_webchat(api)
    await settle(runtime)
    before = runtime.app.recorder.max_notification_id()
    with pytest.raises(WSServerHandshakeError) as unknown:
        await client.ws_connect(f"/v1/webchat/{'x' * 24}/ws", headers={"Origin": ORIGIN})
    assert unknown.value.status == 404
    for origin in ("https://evil.example", None):
        headers = {"Origin": origin} if origin else {}
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(f"/v1/webchat/{key}/ws", headers=headers)
        assert refused.value.status == 403
    assert runtime.app.recorder.max_notification_id() == before

    # Block by cookie: that visitor is closed with 4403, others still chat.
    ws = await connect(client, key)
    visitor = (await receive(ws, "welcome"))["visitor_id"]
    await ws.close()
    status, _block = await api.post(
        "/v1/webchat/blocks", {"visitor_id": visitor, "reason": "abuse"}
    )
    assert status == 201
    blocked = await connect(client, key, visitor=visitor)
    message = await blocked.receive()
    assert (message.type, message.data, message.extra) == (WSMsgType.CLOSE, 4403, "blocked")
    other = await connect(client, key)
    assert (await receive(other, "welcome"))["visitor_id"] != visitor
    await other.close()
    _, listing = await api.get("/v1/webchat/blocks")
    assert [(b["kind"], b["value"], b["reason"]) for b in listing["items"]] == [
        ("visitor", visitor, "abuse")
    ]

    # Block by IP: whoever is chatting from that address is closed at once, everyone from
    # it is refused; lifting the block lets them in again.
    chatting = await connect(client, key)
    await receive(chatting, "welcome")
    status, ip_block = await api.post("/v1/webchat/blocks", {"ip": "127.0.0.1"})
    assert status == 201
    closed = await chatting.receive()
    assert (closed.type, closed.data) == (WSMsgType.CLOSE, 4403)
    refused = await connect(client, key)
    assert (await refused.receive()).data == 4403
    assert (await api.delete(f"/v1/webchat/blocks/{ip_block['block_id']}"))[0] == 204
    welcome_again = await connect(client, key)
    assert (await receive(welcome_again, "welcome"))["type"] == "welcome"
    await welcome_again.close()


async def test_forwarded_for_is_believed_only_from_trusted_proxies(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    key = await configure_webchat(api)
    status, _ = await api.post("/v1/webchat/blocks", {"ip": "198.51.100.7"})
    assert status == 201
    # 127.0.0.1 is not a trusted proxy here: its X-Forwarded-For is ignored.
    ws = await connect(client, key, **{"X-Forwarded-For": "198.51.100.7"})
    assert (await receive(ws, "welcome"))["type"] == "welcome"
    await ws.close()


class TestBehindAProxy:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.with_overrides(trusted_proxies=("127.0.0.1/32",))

    async def test_the_forwarded_address_is_the_visitors_ip(
        self, api: Api, client: TestClient[Any, Any], runtime: Runtime
    ) -> None:
        key = await configure_webchat(api)
        status, _ = await api.post("/v1/webchat/blocks", {"ip": "198.51.100.7"})
        assert status == 201
        ws = await connect(client, key, **{"X-Forwarded-For": "198.51.100.7, 127.0.0.1"})
        assert (await ws.receive()).data == 4403
        ws = await connect(client, key, **{"X-Forwarded-For": "203.0.113.5"})
        await receive(ws, "welcome")
        await ws.send_json(START)
        started = await receive(ws, "started")
        await ws.close()
        _, detail = await api.get(f"/v1/conversations/{started['conversation_id']}")
        assert detail["visitor_network"]["ip"] == "203.0.113.5"


class TestRateLimits:
    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.with_overrides(webchat_connects_per_minute=1, webchat_messages_per_minute=1)

    async def test_too_many_connections_or_messages_from_one_ip_are_refused(
        self, api: Api, client: TestClient[Any, Any], runtime: Runtime
    ) -> None:
        key = await configure_webchat(api)
        sockets = []
        refused = None
        for _ in range(20):  # bounded: the burst allows 10
            try:
                sockets.append(await connect(client, key))
            except WSServerHandshakeError as error:
                refused = error.status
                break
        assert (refused, len(sockets)) == (429, 10)
        ws = sockets[0]
        await receive(ws, "welcome")
        await ws.send_json(START)
        await receive(ws, "started")
        codes = []
        for i in range(40):  # bounded: the burst allows 20 messages, 5 refusals close
            if ws.closed:
                break
            await ws.send_json({"type": "message", "id": f"m{i}", "body": "spam"})
            frame = await ws.receive()
            if frame.type is WSMsgType.CLOSE:
                codes.append(frame.data)
                break
        assert codes == [4429]
        for socket in sockets:
            await socket.close()
