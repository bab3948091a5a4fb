"""The routing endpoints over HTTP, with the router running in its own thread."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from contact_centre.clock import ShiftedClock
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


async def test_changing_an_agents_skills_changes_what_it_sees(api: Api, runtime: Runtime) -> None:
    _, vip = await api.post("/v1/queues", {"name": "VIP", "channels": ["sms"]})
    await api.call("PATCH", f"/v1/queues/{vip['queue_id']}", json={"required_skills": ["vip"]})
    _, agent = await api.post("/v1/agents", {"name": "Ann"})
    agent_api = api.as_token(await api.issue_token("agent", agent_id=agent["agent_id"]))
    ids = await api.receive(channel="sms", body="VIP here")
    path = f"/v1/conversations/{ids['conversation_id']}"
    await eventually(lambda: _queued(api, path))
    assert (await agent_api.get(path))[0] == 404
    status, changed = await api.call(
        "PATCH", f"/v1/agents/{agent['agent_id']}", json={"skills": ["vip:2"]}
    )
    assert (status, changed["skills"]) == (200, ["vip:2"])
    assert (await agent_api.get(path))[0] == 200
    _, listing = await api.get("/v1/agents")
    assert listing["items"][0]["skills"] == ["vip:2"]


async def _queued(api: Api, path: str) -> bool:
    _, detail = await api.get(path)
    return detail["queue_id"] is not None


async def test_breaches_and_overflow_show_on_the_dashboard_and_the_supervisor_socket(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clock: ShiftedClock
) -> None:
    _, queue = await api.post("/v1/queues", {"name": "Chat", "channels": ["sms"]})
    limits = {
        "sl_threshold_seconds": 30,
        "max_wait_seconds": 120,
        "overflow": {"target": "callback"},
    }
    await api.call("PATCH", f"/v1/queues/{queue['queue_id']}", json=limits)
    supervisor = await api.issue_token("supervisor")
    headers = {"Authorization": f"Bearer {supervisor}"}
    async with client.ws_connect("/v1/supervisor/ws", headers=headers) as ws:
        assert (await ws.receive_json())["type"] == "hello"
        ids = await api.receive(channel="sms", body="Anyone there?")
        await eventually(lambda: _queued(api, f"/v1/conversations/{ids['conversation_id']}"))
        clock.advance(timedelta(hours=2))  # past the first reply's threshold and the max wait

        async def breach() -> dict[str, Any] | None:
            message = await ws.receive_json()
            return message if message["type"] == "sla_breach" else None

        pushed = await eventually(breach)
        assert pushed["conversation_id"] == ids["conversation_id"]
        assert pushed["kind"] == "first_response"

    async def on_dashboard() -> dict[str, Any] | None:
        _, live = await api.get("/v1/metrics/live")
        return live if live["sla_breaches"]["last_24_hours"] else None

    live = await eventually(on_dashboard)
    recent = live["sla_breaches"]["recent"][0]
    assert (recent["queue_id"], recent["threshold_seconds"]) == (queue["queue_id"], 30)

    async def overflowed() -> bool:
        _, rows = await api.get("/v1/metrics/intervals")  # the last 24 hours
        return any(r["overflowed"] == 1 for r in rows["items"])

    assert await eventually(overflowed)


async def test_rule_recipients_are_normalised_like_ingest(api: Api) -> None:
    _, queue = await api.post("/v1/queues", {"name": "Sales"})
    rules = {
        "rules": [
            {
                "match": {"recipients": ["+44 20 7183 8751", "Sales@Acme.Example", "slack:C0X"]},
                "queue_id": queue["queue_id"],
            }
        ]
    }
    status, saved = await api.call("PUT", "/v1/routing/rules", json=rules)
    assert status == 200, saved
    assert saved["rules"][0]["match"]["recipients"] == [
        "+442071838751",
        "sales@acme.example",
        "slack:c0x",
    ]
