"""The inbox and the agent's actions on a conversation."""

from __future__ import annotations

from infra.runtime import Runtime
from tests.helpers import Api, settle


async def test_reply_note_and_status_are_visible_immediately_after_the_call(
    api: Api, runtime: Runtime
) -> None:
    ids = await api.receive(body="Hello?")
    conversation = f"/v1/conversations/{ids['conversation_id']}"
    status, reply = await api.post(f"{conversation}/replies", {"body": "Hi, how can I help?"})
    assert status == 201
    status, note = await api.post(f"{conversation}/notes", {"body": "VIP customer"})
    assert status == 201
    status, changed = await api.post(f"{conversation}/status", {"status": "pending"})
    assert (status, changed["status"], changed["changed"]) == (200, "pending", True)
    # no settle(): writes by the API are read back by the API
    status, body = await api.get(conversation)
    assert status == 200
    assert body["status"] == "pending"
    assert [(m["direction"], m["body"]) for m in body["messages"]] == [
        ("inbound", "Hello?"),
        ("outbound", "Hi, how can I help?"),
    ]
    assert body["messages"][1]["id"] == reply["message_id"]
    assert body["messages"][1]["author"].startswith("token:")
    assert [(n["id"], n["body"]) for n in body["notes"]] == [(note["note_id"], "VIP customer")]
    assert body["unread"] == 0
    assert body["last_message"]["direction"] == "outbound"


async def test_a_reply_with_an_idempotency_key_is_recorded_once(api: Api, runtime: Runtime) -> None:
    ids = await api.receive()
    path = f"/v1/conversations/{ids['conversation_id']}/replies"
    headers = {"Idempotency-Key": "reply-1"}
    status, first = await api.post(path, {"body": "On it"}, headers=headers)
    assert status == 201
    status, again = await api.post(path, {"body": "On it"}, headers=headers)
    assert (status, again["message_id"], again["duplicate"]) == (200, first["message_id"], True)
    status, body = await api.get(f"/v1/conversations/{ids['conversation_id']}")
    assert [m["direction"] for m in body["messages"]] == ["inbound", "outbound"]


async def test_a_closed_conversation_refuses_replies_with_409(api: Api) -> None:
    ids = await api.receive()
    path = f"/v1/conversations/{ids['conversation_id']}"
    assert (await api.post(f"{path}/status", {"status": "closed"}))[0] == 200
    status, body = await api.post(f"{path}/replies", {"body": "hello?"})
    assert status == 409
    assert body["error"] == "conflict"


async def test_inbox_filters_by_status_channel_and_assignee(api: Api, runtime: Runtime) -> None:
    sms = await api.receive(channel="sms")
    email = await api.receive(
        channel="email",
        provider="smtp",
        sender={"kind": "email", "address": "bo@example.com"},
        to=None,
    )
    status, agent = await api.post("/v1/agents", {"name": "Agent Smith", "skills": ["billing:3"]})
    assert status == 201
    await api.post(f"/v1/conversations/{sms['conversation_id']}/status", {"status": "resolved"})
    status, _ = await api.post(
        f"/v1/conversations/{email['conversation_id']}/assignment", {"agent_id": agent["agent_id"]}
    )
    assert status == 200
    await settle(runtime)

    async def ids(query: str) -> list[str]:
        status, body = await api.get(f"/v1/conversations?{query}")
        assert status == 200, body
        return [item["id"] for item in body["items"]]

    assert await ids("status=resolved") == [sms["conversation_id"]]
    assert await ids("status=open") == [email["conversation_id"]]
    assert await ids("channel=email") == [email["conversation_id"]]
    assert await ids(f"assignee={agent['agent_id']}") == [email["conversation_id"]]
    assert await ids("assignee=none") == [sms["conversation_id"]]
    assert sorted(await ids("")) == sorted([sms["conversation_id"], email["conversation_id"]])


async def test_the_inbox_is_newest_first_and_pages_with_a_cursor(
    api: Api, runtime: Runtime
) -> None:
    created = [
        (await api.receive(occurred_at=f"2026-11-21T10:{i:02d}:00Z"))["conversation_id"]
        for i in range(7)
    ]
    await settle(runtime)
    seen: list[str] = []
    path = "/v1/conversations?limit=3"
    while True:
        status, body = await api.get(path)
        assert status == 200
        assert len(body["items"]) <= 3
        seen.extend(item["id"] for item in body["items"])
        if body["next"] is None:
            break
        path = f"/v1/conversations?limit=3&cursor={body['next']}"
    assert seen == list(reversed(created))


async def test_an_agent_token_can_only_assign_to_itself(api: Api, runtime: Runtime) -> None:
    await api.post("/v1/queues", {"name": "Everything"})  # so agents see the conversation
    _, agent = await api.post("/v1/agents", {"name": "Agent A"})
    _, other = await api.post("/v1/agents", {"name": "Agent B"})
    token = await api.issue_token("agent", agent_id=agent["agent_id"])
    ids = await api.receive()
    runtime.catch_up()  # placement queues it
    as_agent = api.as_token(token)
    path = f"/v1/conversations/{ids['conversation_id']}/assignment"
    assert (await as_agent.post(path, {"agent_id": other["agent_id"]}))[0] == 403
    assert (await as_agent.post(path, {"agent_id": agent["agent_id"]}))[0] == 200
    status, body = await as_agent.get("/v1/conversations?assignee=me")
    assert [item["id"] for item in body["items"]] == [ids["conversation_id"]]
    status, detail = await as_agent.post(
        f"/v1/conversations/{ids['conversation_id']}/replies", {"body": "Hello from A"}
    )
    assert status == 201
    assert detail["author"] == f"agent:{agent['agent_id']}"
