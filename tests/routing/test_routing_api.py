"""The routing endpoints over HTTP, with the router running in its own thread."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from infra.config import Settings
from infra.runtime import Runtime
from tests.helpers import Api, eventually, settle
from tests.scan import needles, scan_files, scan_postgres

KEYWORD = "zebedeekeyword"
TIER = "zebedee-platinum"


async def _offers(api: Api, agent_id: str) -> list[str]:
    _, desk = await api.get("/v1/routing/agents")
    return next(a["offers"] for a in desk["items"] if a["agent_id"] == agent_id)


async def test_rules_are_kept_sealed_and_read_back(
    api: Api, runtime: Runtime, settings: Settings, request: pytest.FixtureRequest
) -> None:
    _, queue = await api.post("/v1/queues", {"name": "Gold"})
    rules = {
        "rules": [
            {
                "name": "Gold customers",
                "match": {"keywords": [KEYWORD], "attributes": {"tier": TIER}},
                "queue_id": queue["queue_id"],
                "priority": 70,
            }
        ],
        "default_queue_id": None,
    }
    status, saved = await api.call("PUT", "/v1/routing/rules", json=rules)
    assert status == 200, saved
    supervisor = api.as_token(await api.issue_token("supervisor"))
    status, shown = await supervisor.get("/v1/routing/rules")
    assert status == 200
    assert shown["rules"][0]["match"] == {"keywords": [KEYWORD], "attributes": {"tier": TIER}}
    status, bad = await api.call(
        "PUT",
        "/v1/routing/rules",
        json={"rules": [{"queue_id": "00000000-0000-0000-0000-0000000000ff"}]},
    )
    assert (status, bad["error"]) == (422, "invalid")
    await settle(runtime)
    patterns = needles(KEYWORD, TIER)
    if settings.database_url is None:
        assert scan_files(settings.data_dir, patterns) == []
    else:
        hits, _ = scan_postgres(settings.database_url, patterns)
        assert hits == []


async def test_accept_transfer_and_wrap_up_over_http(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    _, texts = await api.post("/v1/queues", {"name": "Texts", "channels": ["sms"]})
    _, billing = await api.post("/v1/queues", {"name": "Billing", "channels": ["sms"]})
    await api.call(
        "PATCH", f"/v1/queues/{billing['queue_id']}", json={"required_skills": ["billing"]}
    )
    _, ann = await api.post("/v1/agents", {"name": "Ann"})
    _, bob = await api.post("/v1/agents", {"name": "Bob", "skills": ["billing:2"]})
    status, changed = await api.call(
        "PATCH", f"/v1/agents/{ann['agent_id']}", json={"capacity": {"sms": 1}}
    )
    assert (status, changed["capacity"]["sms"]) == (200, 1)
    status, bad = await api.call(
        "PATCH", f"/v1/agents/{ann['agent_id']}", json={"capacity": {"sms": 99}}
    )
    assert (status, bad["error"]) == (422, "invalid")
    ann_api = api.as_token(await api.issue_token("agent", agent_id=ann["agent_id"]))
    bob_api = api.as_token(await api.issue_token("agent", agent_id=bob["agent_id"]))
    assert (await ann_api.post(f"/v1/agents/{ann['agent_id']}/login"))[0] == 200
    assert (await ann_api.post(f"/v1/agents/{bob['agent_id']}/login"))[0] == 403  # not itself

    ids = await api.receive(channel="sms", body="My bill is wrong")
    conversation = ids["conversation_id"]
    await eventually(lambda: _offers(api, ann["agent_id"]))
    # bob has no offer to decline, and may not wrap up what is not his
    status, _ = await bob_api.post(f"/v1/conversations/{conversation}/decline")
    assert status == 404
    status, _ = await ann_api.post(f"/v1/conversations/{conversation}/accept")
    assert status == 200
    status, _ = await bob_api.post(
        f"/v1/conversations/{conversation}/wrap-up", {"disposition": "billing"}
    )
    assert status == 404
    status, moved = await ann_api.post(
        f"/v1/conversations/{conversation}/transfer",
        {"queue_id": billing["queue_id"], "note": "Bill for March"},
    )
    assert status == 200, moved
    _, detail = await api.get(f"/v1/conversations/{conversation}")
    assert detail["queue_id"] == billing["queue_id"]
    assert detail["assignee_id"] is None
    assert [n["body"] for n in detail["notes"]] == ["Bill for March"]

    assert (await bob_api.post(f"/v1/agents/{bob['agent_id']}/login"))[0] == 200
    await eventually(lambda: _offers(api, bob["agent_id"]))
    assert (await bob_api.post(f"/v1/conversations/{conversation}/accept"))[0] == 200
    status, wrapped = await bob_api.post(
        f"/v1/conversations/{conversation}/wrap-up", {"disposition": "Refund_Issued"}
    )
    assert (status, wrapped["disposition"], wrapped["resolved"]) == (200, "refund_issued", True)
    _, detail = await api.get(f"/v1/conversations/{conversation}")
    assert detail["status"] == "resolved"
    status, bad = await bob_api.post(
        f"/v1/conversations/{conversation}/wrap-up", {"disposition": "free text, with spaces"}
    )
    assert (status, bad["error"]) == (422, "invalid")

    # logging out returns what it holds, at its original wait
    second = await api.receive(channel="sms", body="Another bill")
    await eventually(lambda: _offers(api, ann["agent_id"]))
    status, out = await ann_api.post(f"/v1/agents/{ann['agent_id']}/logout")
    assert (status, out["requeued"]) == (200, 1)
    _, detail = await api.get(f"/v1/conversations/{second['conversation_id']}")
    assert detail["waiting_since"] is not None
    assert detail["queue_id"] == texts["queue_id"]
    _, desk = await api.get("/v1/routing/agents")
    ann_row = next(a for a in desk["items"] if a["agent_id"] == ann["agent_id"])
    assert ann_row["presence"] == "offline"
    assert ann_row["offers"] == []
    assert client is not None
