"""Malformed, oversized and invalid requests: a clear 4xx and nothing written."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.helpers import Api, interaction


def without(doc: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != key}


BAD_INTERACTIONS = [
    ("missing channel", without(interaction(), "channel"), 422),
    ("unknown channel", interaction(channel="fax"), 422),
    ("unknown field", {**interaction(), "colour": "red"}, 422),
    ("missing from", without(interaction(), "from"), 422),
    ("bad identity kind", interaction(sender={"kind": "pager", "address": "123"}), 422),
    ("not a phone number", interaction(sender={"kind": "phone", "address": "call me"}), 422),
    ("not an email", interaction(sender={"kind": "email", "address": "bob"}), 422),
    ("naive time", interaction(occurred_at="2026-11-21T10:00:00"), 422),
    ("garbage time", interaction(occurred_at="yesterday"), 422),
    ("body not a string", interaction(body=42), 422),
    ("attachments not a list", interaction(attachments={"name": "x"}), 422),
    ("attachment size negative", interaction(attachments=[{"name": "x", "size": -1}]), 422),
    ("outbound via generic endpoint", interaction(direction="outbound"), 422),
    ("empty provider id", interaction(provider_message_id=""), 422),
    ("json array", [interaction()], 422),
]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [(d, s) for _, d, s in BAD_INTERACTIONS],
    ids=[n for n, _, _ in BAD_INTERACTIONS],
)
async def test_invalid_interactions_are_refused_and_write_nothing(
    api: Api, runtime: Runtime, doc: Any, expected: int
) -> None:
    before = runtime.app.recorder.max_notification_id()
    status, body = await api.post("/v1/interactions", doc)
    assert status == expected, body
    assert set(body) == {"error", "detail"}
    assert body["detail"]
    assert runtime.app.recorder.max_notification_id() == before


async def test_malformed_json_is_400(api: Api, runtime: Runtime) -> None:
    before = runtime.app.recorder.max_notification_id()
    status, body = await api.call(
        "POST",
        "/v1/interactions",
        data=b'{"channel": "sms",',
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["error"]) == (400, "malformed_json")
    assert runtime.app.recorder.max_notification_id() == before


async def test_a_non_json_content_type_is_415(api: Api) -> None:
    status, body = await api.call(
        "POST", "/v1/interactions", data=b"channel=sms", headers={"Content-Type": "text/plain"}
    )
    assert (status, body["error"]) == (415, "unsupported_media_type")


async def test_an_oversized_body_is_413_and_writes_nothing(api: Api, runtime: Runtime) -> None:
    before = runtime.app.recorder.max_notification_id()
    huge = json.dumps(interaction(body="x" * (runtime.settings.max_body_bytes + 10))).encode()
    status, body = await api.call(
        "POST",
        "/v1/interactions",
        data=io.BytesIO(huge),  # type: ignore[arg-type]
        headers={"Content-Type": "application/json"},
    )
    assert (status, body["error"]) == (413, "payload_too_large")
    assert runtime.app.recorder.max_notification_id() == before


async def test_unknown_routes_and_methods_answer_json(client: TestClient[Any, Any]) -> None:
    async with client.get("/v1/nowhere") as response:
        assert response.status == 404
        assert (await response.json())["error"] == "not_found"
    async with client.put("/v1/interactions") as response:
        assert response.status == 405
        assert (await response.json())["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("path", "doc"),
    [
        ("replies", {}),
        ("replies", {"body": "   "}),
        ("replies", {"body": "hi", "extra": 1}),
        ("notes", {"body": 5}),
        ("status", {"status": "archived"}),
        ("assignment", {"agent_id": "not-a-uuid"}),
    ],
)
async def test_invalid_conversation_commands_are_422_and_write_nothing(
    api: Api, runtime: Runtime, path: str, doc: dict[str, Any]
) -> None:
    ids = await api.receive()
    before = runtime.app.recorder.max_notification_id()
    status, body = await api.post(f"/v1/conversations/{ids['conversation_id']}/{path}", doc)
    assert status == 422, body
    assert runtime.app.recorder.max_notification_id() == before


async def test_unknown_conversation_ids_are_404(api: Api) -> None:
    for path in (
        "/v1/conversations/not-a-uuid",
        "/v1/conversations/3fa85f64-5717-4562-b3fc-2c963f66afa6",
    ):
        status, body = await api.get(path)
        assert (status, body["error"]) == (404, "not_found")


@pytest.mark.parametrize(
    "query",
    ["status=archived", "channel=fax", "limit=0", "limit=1000", "cursor=%%%", "assignee=bob"],
)
async def test_bad_inbox_queries_are_422(api: Api, query: str) -> None:
    status, body = await api.get(f"/v1/conversations?{query}")
    assert status == 422, body


async def test_tokens_and_agents_validate_their_bodies(api: Api) -> None:
    assert (await api.post("/v1/tokens", {"role": "root"}))[0] == 422
    assert (await api.post("/v1/tokens", {"role": "agent"}))[0] == 422  # needs agent_id
    assert (await api.post("/v1/agents", {"name": "A", "skills": ["bad skill!"]}))[0] == 422
    assert (await api.post("/v1/agents", {"name": "A", "email": "not-an-email"}))[0] == 422
    assert (await api.post("/v1/queues", {"name": "Q", "channels": ["fax"]}))[0] == 422


@pytest.mark.parametrize(
    "path",
    [
        "/v1/contacts?cursor=%%%",
        "/v1/contacts?limit=0",
        "/v1/contacts/00000000-0000-0000-0000-000000000000/timeline?cursor=bm9wZTpub3Bl",
        "/v1/contacts/00000000-0000-0000-0000-000000000000/timeline?order=sideways",
        "/v1/metrics/intervals?from=yesterday",
        "/v1/metrics/intervals?from=2026-11-21T10:00:00Z&to=2026-11-20T10:00:00Z",
        "/v1/metrics/intervals?channel=fax",
        "/v1/queues/state?queue_id=not-a-uuid",
    ],
)
async def test_bad_read_queries_are_422(api: Api, path: str) -> None:
    status, body = await api.get(path)
    assert status == 422, body
