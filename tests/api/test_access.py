"""Tokens, roles and tenant isolation on every endpoint."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.helpers import Api, interaction, settle

OPEN_ROUTES = {("GET", "/health"), ("GET", "/ready"), ("GET", "/v1/openapi.json")}
# Provider webhooks and the visitor socket take no bearer token: they are authenticated by
# the provider's signature (or the widget key and origin), and tests/channels proves that
# forged, stale and cross-tenant requests are refused and write nothing.
SIGNED_ROUTES = {
    ("POST", "/v1/channels/{tenant_id}/twilio/voice"),
    ("POST", "/v1/channels/{tenant_id}/twilio/voice/status"),
    ("POST", "/v1/channels/{tenant_id}/twilio/voice/connect"),
    ("POST", "/v1/channels/{tenant_id}/twilio/voice/recording"),
    ("POST", "/v1/channels/{tenant_id}/twilio/voice/transcription"),
    ("POST", "/v1/channels/{tenant_id}/twilio/sms"),
    ("POST", "/v1/channels/{tenant_id}/twilio/sms/status"),
    ("POST", "/v1/channels/{tenant_id}/slack/events"),
    ("GET", "/v1/channels/{tenant_id}/meta/webhook"),
    ("POST", "/v1/channels/{tenant_id}/meta/webhook"),
    ("GET", "/v1/webchat/{widget_key}/ws"),
}


async def test_health_and_ready_need_no_token(client: TestClient[Any, Any]) -> None:
    async with client.get("/health") as response:
        assert response.status == 200
        assert await response.json() == {"status": "ok"}
    async with client.get("/ready") as response:
        assert response.status == 200
        body = await response.json()
        assert body["status"] == "ready"
        assert set(body["projections"]) == {
            "inbox",
            "directory",
            "crm",
            "timeline",
            "queues",
            "metrics",
            "retention",
            "channel_settings",
            "deliveries",
            "channel_activity",
            "webhooks",
        }


@pytest.mark.parametrize(
    "header",
    [None, "Bearer", "Bearer cc_forged-token-value", "Basic dXNlcjpwYXNz", "Bearer nonsense"],
)
async def test_missing_or_forged_tokens_get_401_and_write_nothing(
    client: TestClient[Any, Any], runtime: Runtime, header: str | None
) -> None:
    before = runtime.app.recorder.max_notification_id()
    headers = {"Authorization": header} if header else {}
    async with client.post("/v1/interactions", json=interaction(), headers=headers) as response:
        assert response.status == 401
        assert (await response.json())["error"] == "unauthorized"
    assert runtime.app.recorder.max_notification_id() == before


async def test_a_revoked_token_stops_working_at_once(api: Api, runtime: Runtime) -> None:
    token = await api.issue_token("integration", label="crm")
    integration = api.as_token(token)
    assert (await integration.post("/v1/interactions", interaction()))[0] == 201
    _, listing = await api.get("/v1/tokens")
    token_id = next(t["token_id"] for t in listing["items"] if t["label"] == "crm")
    assert (await api.delete(f"/v1/tokens/{token_id}"))[0] == 204
    assert (await integration.post("/v1/interactions", interaction()))[0] == 401
    _, listing = await api.get("/v1/tokens")
    revoked = next(t for t in listing["items"] if t["token_id"] == token_id)
    assert revoked["revoked_at"] is not None
    assert "token" not in revoked  # shown once, never again


async def test_a_terminated_tenant_tokens_stop_working(api: Api, runtime: Runtime) -> None:
    runtime.app.run(lambda uow: runtime.app.terminate_tenant_in(uow, api.tenant_id, 10))
    status, _ = await api.get("/v1/conversations")
    # cached principals live for at most a few seconds; this process forgets at once
    assert status in (401, 403)


ROLE_MATRIX = [
    # (method, path, body, roles allowed)
    ("POST", "/v1/interactions", interaction, {"admin", "integration"}),
    ("GET", "/v1/conversations", None, {"admin", "supervisor", "agent"}),
    ("POST", "/v1/tokens", {"role": "integration"}, {"admin"}),
    ("GET", "/v1/tokens", None, {"admin"}),
    ("POST", "/v1/agents", {"name": "X"}, {"admin"}),
    ("GET", "/v1/agents", None, {"admin", "supervisor"}),
    ("POST", "/v1/queues", {"name": "Billing"}, {"admin"}),
    ("GET", "/v1/queues", None, {"admin", "supervisor"}),
    ("GET", "/v1/tenant", None, {"admin", "supervisor", "agent", "integration"}),
    ("PUT", "/v1/channel-settings/webchat", lambda: webchat_settings(), {"admin"}),
    ("GET", "/v1/channel-settings/webchat", None, {"admin"}),
    ("POST", "/v1/webchat/blocks", {"ip": "203.0.113.9", "reason": "spam"}, {"admin"}),
    ("GET", "/v1/webchat/blocks", None, {"admin"}),
    ("GET", "/v1/routing/agents", None, {"admin", "supervisor"}),
    ("GET", "/v1/routing/rules", None, {"admin", "supervisor"}),
    ("PUT", "/v1/routing/rules", {"rules": []}, {"admin"}),
    ("POST", "/v1/contacts", lambda: crm_contact(), {"admin", "integration"}),
    ("POST", "/v1/contacts/import", lambda: Raw(ndjson(crm_contact())), {"admin", "integration"}),
    ("POST", "/v1/webhooks", lambda: webhook_subscription(), {"admin"}),
    ("GET", "/v1/webhooks", None, {"admin"}),
]
# The live sockets authenticate like every endpoint; tests/routing/test_live.py proves that
# other roles, forged tokens and other tenants are refused before the upgrade.
LIVE_ROUTES = {("GET", "/v1/agent/ws"), ("GET", "/v1/supervisor/ws")}
# Matrix paths that stand for a templated route.
TEMPLATED = {"/v1/channel-settings/webchat": "/v1/channel-settings/{provider}"}


class Raw:
    """A request body that is not JSON (NDJSON here)."""

    def __init__(self, data: bytes, content_type: str = "application/x-ndjson") -> None:
        self.data = data
        self.content_type = content_type


def ndjson(*docs: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(doc).encode() + b"\n" for doc in docs)


def crm_contact() -> dict[str, Any]:
    return {"identities": [{"kind": "email", "address": f"{secrets.token_hex(6)}@crm.example"}]}


def webhook_subscription() -> dict[str, Any]:
    # a closed port on this machine (the tests allow 127.0.0.1); no event of these tests
    # is of this type, so nothing is ever sent
    return {"url": "http://127.0.0.1:9/hook", "event_types": ["request.due"]}


async def call(api: Api, method: str, path: str, body: Any) -> tuple[int, Any]:
    if isinstance(body, Raw):
        return await api.call(
            method, path, data=body.data, headers={"Content-Type": body.content_type}
        )
    return await api.call(method, path, json=body)


def webchat_settings() -> dict[str, Any]:
    return {"widget_key": secrets.token_urlsafe(24), "allowed_origins": ["https://shop.example"]}


async def test_each_role_reaches_exactly_its_endpoints(api: Api) -> None:
    _, agent = await api.post("/v1/agents", {"name": "Agent A"})
    tokens = {
        "admin": api.token,
        "supervisor": await api.issue_token("supervisor"),
        "agent": await api.issue_token("agent", agent_id=agent["agent_id"]),
        "integration": await api.issue_token("integration"),
    }
    for method, path, body, allowed in ROLE_MATRIX:
        for role, token in tokens.items():
            payload = body() if callable(body) else body
            status, answer = await call(api.as_token(token), method, path, payload)
            if role in allowed:
                assert status < 400, (method, path, role, answer)
            else:
                assert (status, answer["error"]) == (403, "forbidden"), (method, path, role)


async def test_an_integration_token_cannot_read_conversations(api: Api) -> None:
    ids = await api.receive()
    integration = api.as_token(await api.issue_token("integration"))
    status, _ = await integration.get(f"/v1/conversations/{ids['conversation_id']}")
    assert status == 403


def cross_tenant_calls(ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    c = ids["conversation_id"]
    w, d = ids["webhook_id"], ids["delivery_id"]
    return [
        ("GET", f"/v1/conversations/{c}", None),
        ("POST", f"/v1/conversations/{c}/replies", {"body": "x"}),
        ("POST", f"/v1/conversations/{c}/notes", {"body": "x"}),
        ("POST", f"/v1/conversations/{c}/status", {"status": "resolved"}),
        ("POST", f"/v1/conversations/{c}/assignment", {"agent_id": ids["agent_id"]}),
        ("POST", f"/v1/conversations/{c}/queue", {"queue_id": ids["queue_id"]}),
        ("POST", f"/v1/conversations/{c}/abandon", {}),
        ("DELETE", f"/v1/tokens/{ids['token_id']}", None),
        ("POST", f"/v1/agents/{ids['agent_id']}/presence", {"presence": "available"}),
        ("PATCH", f"/v1/queues/{ids['queue_id']}", {"priority": 5}),
        ("GET", f"/v1/contacts/{ids['contact_id']}", None),
        ("GET", f"/v1/contacts/{ids['contact_id']}/timeline", None),
        ("POST", "/v1/contacts/lookup", {"kind": "phone", "address": ids["phone"]}),
        (
            "POST",
            "/v1/holds",
            {"target_kind": "contact", "target_id": ids["contact_id"], "reason": "x"},
        ),
        ("POST", f"/v1/holds/{ids['hold_id']}/release", None),
        ("POST", "/v1/requests", {"kind": "access", "contact_id": ids["contact_id"]}),
        ("GET", f"/v1/requests/{ids['request_id']}", None),
        ("POST", f"/v1/requests/{ids['request_id']}/extend", {"days": 5, "reason": "x"}),
        ("POST", f"/v1/requests/{ids['request_id']}/reject", {"reason": "x"}),
        ("POST", f"/v1/requests/{ids['request_id']}/fulfil", {}),
        ("GET", f"/v1/requests/{ids['request_id']}/export", None),
        ("POST", f"/v1/contacts/{ids['contact_id']}/erasure", {}),
        ("POST", f"/v1/contacts/{ids['contact_id']}/restriction", {}),
        ("DELETE", f"/v1/contacts/{ids['contact_id']}/restriction", None),
        ("DELETE", f"/v1/agents/{ids['agent_id']}", None),
        ("POST", f"/v1/conversations/{c}/typing", {"typing": True}),
        ("DELETE", f"/v1/webchat/blocks/{ids['block_id']}", None),
        ("GET", f"/v1/channel-settings/{ids['provider']}", None),
        ("POST", f"/v1/channels/{ids['tenant_id']}/email/raw", None),
        ("POST", f"/v1/conversations/{c}/transfer", {"queue_id": ids["queue_id"]}),
        ("POST", f"/v1/agents/{ids['agent_id']}/login", None),
        ("POST", f"/v1/agents/{ids['agent_id']}/logout", None),
        ("PATCH", f"/v1/agents/{ids['agent_id']}", {"capacity": {"voice": 2}}),
        ("PATCH", f"/v1/contacts/{ids['contact_id']}", {"tags": {"add": ["vip"]}}),
        ("POST", f"/v1/contacts/{ids['contact_id']}/merge", {"contact_id": ids["contact_id"]}),
        ("GET", f"/v1/webhooks/{w}", None),
        ("PATCH", f"/v1/webhooks/{w}", {"description": "x"}),
        ("DELETE", f"/v1/webhooks/{w}", None),
        ("POST", f"/v1/webhooks/{w}/rotate-secret", {}),
        ("GET", f"/v1/webhooks/{w}/deliveries", None),
        ("GET", f"/v1/webhooks/{w}/deliveries/{d}", None),
        ("POST", f"/v1/webhooks/{w}/deliveries/{d}/replay", None),
        ("POST", f"/v1/webhooks/{w}/replay", {"dead_letters": True}),
        ("GET", f"/v1/webhooks/{w}/attempts", None),
    ]


def agent_cross_tenant_calls(ids: dict[str, str]) -> list[tuple[str, str, Any]]:
    """Routes only agent tokens may call, tried with another tenant's agent token."""
    c = ids["conversation_id"]
    return [
        ("POST", f"/v1/conversations/{c}/accept", None),
        ("POST", f"/v1/conversations/{c}/decline", None),
        ("POST", f"/v1/conversations/{c}/wrap-up", {"disposition": "sale"}),
    ]


LISTINGS = [
    "/v1/conversations",
    "/v1/tokens",
    "/v1/agents",
    "/v1/queues",
    "/v1/tenant",
    "/v1/contacts",
    "/v1/queues/state",
    "/v1/metrics/live",
    "/v1/metrics/intervals",
    "/v1/retention/policy",
    "/v1/retention/ledger",
    "/v1/retention/deletions",
    "/v1/holds",
    "/v1/requests",
    "/v1/audit",
    "/v1/routing/agents",
    "/v1/routing/rules",
    "/v1/webhooks",
]
# These act on the caller's own tenant and take no id that could name another's.
OWN_TENANT_ONLY = {
    ("PUT", "/v1/retention/policy"),
    ("POST", "/v1/retention/run"),
    ("PUT", "/v1/privacy/export-key"),
    ("POST", "/v1/tenant/termination"),
}
SEARCHES = [
    ("/v1/contacts/search", {"query": "Ann"}),
    ("/v1/conversations/search", {"contact": "Ann"}),
]


async def test_no_request_reaches_another_tenants_data(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    # Tenant A with a webhook, a conversation, an agent, a queue and a token.
    status, hook = await api.post(
        "/v1/webhooks", {"url": "http://127.0.0.1:9/a", "event_types": ["contact.created"]}
    )
    assert status == 201, hook
    _, queue = await api.post("/v1/queues", {"name": "A's queue"})
    ids = await api.receive(
        body="A's secret",
        sender={"kind": "phone", "address": "+447700900777", "display_name": "Ann"},
    )
    ids["phone"] = "+447700900777"
    ids["queue_id"] = queue["queue_id"]
    _, agent = await api.post("/v1/agents", {"name": "A's agent"})
    await api.issue_token("integration", label="A's integration")
    _, tokens = await api.get("/v1/tokens")
    ids["agent_id"] = agent["agent_id"]
    ids["token_id"] = tokens["items"][-1]["token_id"]
    _, hold = await api.post(
        "/v1/holds",
        {
            "target_kind": "conversation",
            "target_id": ids["conversation_id"],
            "reason": "A's litigation",
        },
    )
    ids["hold_id"] = hold["hold_id"]
    _, req = await api.post("/v1/requests", {"kind": "access", "contact_id": ids["contact_id"]})
    ids["request_id"] = req["request_id"]
    await api.get(f"/v1/conversations/{ids['conversation_id']}")  # an audit entry for A
    _, block = await api.post("/v1/webchat/blocks", {"visitor_id": "v_AAAAAAAAAAAAAAAAAAAA"})
    ids["block_id"] = block["block_id"]
    status, _ = await api.call(
        "PUT", "/v1/channel-settings/email", json={"addresses": ["a@a.example"]}
    )
    assert status == 200
    ids["provider"] = "email"
    ids["tenant_id"] = str(api.tenant_id)
    await settle(runtime)
    ids["webhook_id"] = hook["webhook_id"]
    _, deliveries = await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")
    ids["delivery_id"] = deliveries["items"][0]["delivery_id"]

    other = await Api.for_new_tenant(client, runtime, "Tenant B")
    before = runtime.app.recorder.max_notification_id()
    for method, path, body in cross_tenant_calls(ids):
        status, answer = await other.call(method, path, json=body)
        assert (status, answer["error"]) == (404, "not_found"), (method, path, answer)
    assert runtime.app.recorder.max_notification_id() == before
    _, other_agent = await other.post("/v1/agents", {"name": "B's agent"})
    other_agent_api = other.as_token(
        await other.issue_token("agent", agent_id=other_agent["agent_id"])
    )
    before = runtime.app.recorder.max_notification_id()
    for method, path, body in agent_cross_tenant_calls(ids):
        status, answer = await other_agent_api.call(method, path, json=body)
        assert (status, answer["error"]) == (404, "not_found"), (method, path, answer)
    assert runtime.app.recorder.max_notification_id() == before
    answers = [await other.get(path) for path in LISTINGS]
    answers += [await other.post(path, body) for path, body in SEARCHES]
    for status, answer in answers:
        assert status == 200
        text = str(answer)
        secrets = (
            ids["conversation_id"],
            ids["agent_id"],
            ids["token_id"],
            ids["hold_id"],
            ids["request_id"],
            ids["queue_id"],
            ids["contact_id"],
            "A's",
            "Ann",
        )
        for secret in (*secrets, ids["webhook_id"]):
            assert secret not in text, (answer, secret)
    # B's own interaction from A's customer's number lands in B's data only.
    status, body = await other.post("/v1/interactions", interaction())
    assert status == 201
    assert body["conversation_id"] != ids["conversation_id"]
    # B's CRM upserting A's customer's number creates B's own contact.
    status, body = await other.post(
        "/v1/contacts", {"identities": [{"kind": "phone", "address": ids["phone"]}]}
    )
    assert (status, body["created"]) == (201, True)
    assert body["contact_id"] != ids["contact_id"]


async def test_the_isolation_test_covers_every_route(client: TestClient[Any, Any]) -> None:
    covered = {("GET", "/v1/conversations/{conversation_id}")}
    fake = {
        "conversation_id": "{conversation_id}",
        "agent_id": "{agent_id}",
        "token_id": "{token_id}",
        "queue_id": "{queue_id}",
        "contact_id": "{contact_id}",
        "hold_id": "{hold_id}",
        "request_id": "{request_id}",
        "phone": "",
        "block_id": "{block_id}",
        "provider": "{provider}",
        "tenant_id": "{tenant_id}",
        "webhook_id": "{webhook_id}",
        "delivery_id": "{delivery_id}",
    }
    covered |= {(m, p) for m, p, _ in cross_tenant_calls(fake)}
    covered |= {(m, p) for m, p, _ in agent_cross_tenant_calls(fake)}
    covered |= LIVE_ROUTES
    covered |= {("GET", p) for p in LISTINGS}
    covered |= {("POST", p) for p, _ in SEARCHES}
    covered |= {(m, TEMPLATED.get(p, p)) for m, p, _, _ in ROLE_MATRIX}
    routes = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    assert routes - covered - OPEN_ROUTES - OWN_TENANT_ONLY - SIGNED_ROUTES == set()
