"""The read side over HTTP: contacts, timeline, queue state, metrics, and who sees what."""

from __future__ import annotations

from typing import Any

from infra.runtime import Runtime
from tests.helpers import Api, settle


async def _setup(api: Api, runtime: Runtime) -> dict[str, Any]:
    _, billing = await api.post("/v1/queues", {"name": "Billing", "channels": ["sms", "email"]})
    assert (
        await api.call(
            "PATCH",
            f"/v1/queues/{billing['queue_id']}",
            json={"required_skills": ["billing:2"], "sl_threshold_seconds": 30},
        )
    )[0] == 200
    _, general = await api.post("/v1/queues", {"name": "General", "channels": ["webchat"]})
    _, alice = await api.post("/v1/agents", {"name": "Alice", "skills": ["billing:3"]})
    _, bob = await api.post("/v1/agents", {"name": "Bob", "skills": []})
    ann = await api.receive(
        body="My invoice is wrong",
        sender={"kind": "phone", "address": "+447700900123", "display_name": "Ann Jones"},
    )
    visitor = await api.receive(
        channel="webchat",
        provider="webchat",
        to=None,
        body="Hi there",
        sender={"kind": "visitor", "address": "v-42", "display_name": "Vic"},
    )
    runtime.catch_up()
    await settle(runtime)
    return {
        "billing": billing["queue_id"],
        "general": general["queue_id"],
        "alice": alice["agent_id"],
        "bob": bob["agent_id"],
        "ann": ann,
        "visitor": visitor,
    }


async def test_contacts_can_be_listed_searched_looked_up_and_read(
    api: Api, runtime: Runtime
) -> None:
    ids = await _setup(api, runtime)
    status, listing = await api.get("/v1/contacts")
    assert status == 200
    assert {c["id"] for c in listing["items"]} == {
        ids["ann"]["contact_id"],
        ids["visitor"]["contact_id"],
    }
    status, found = await api.post("/v1/contacts/search", {"query": "jon"})
    assert status == 200
    assert [c["id"] for c in found["items"]] == [ids["ann"]["contact_id"]]
    [ann] = found["items"]
    assert ann["display_name"] == "Ann Jones"
    assert ann["identities"] == [{"kind": "phone", "address": "+447700900123"}]
    assert ann["open_conversations"] == 1
    assert ann["total_conversations"] == 1
    status, looked_up = await api.post(
        "/v1/contacts/lookup", {"kind": "phone", "address": "+44 7700 900123"}
    )
    assert (status, looked_up["id"]) == (200, ids["ann"]["contact_id"])
    status, _ = await api.post("/v1/contacts/lookup", {"kind": "phone", "address": "+447700900999"})
    assert status == 404
    status, one = await api.get(f"/v1/contacts/{ids['ann']['contact_id']}")
    assert (status, one["display_name"]) == (200, "Ann Jones")


async def test_the_timeline_pages_through_a_contacts_history(api: Api, runtime: Runtime) -> None:
    ids = await _setup(api, runtime)
    conversation = ids["ann"]["conversation_id"]
    await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Sorry, fixing it"})
    await api.post(f"/v1/conversations/{conversation}/status", {"status": "resolved"})
    await settle(runtime)
    path = f"/v1/contacts/{ids['ann']['contact_id']}/timeline?limit=2"
    kinds: list[str] = []
    while path:
        status, page = await api.get(path)
        assert status == 200
        assert len(page["items"]) <= 2
        kinds += [
            f"{e['kind']}:{e.get('direction') or e['detail'].get('status', '')}"
            for e in page["items"]
        ]
        path = (
            f"/v1/contacts/{ids['ann']['contact_id']}/timeline?limit=2&cursor={page['next']}"
            if page["next"]
            else ""
        )
    # the message carries the provider's time, a moment before the server opened the thread
    assert kinds == [
        "message:inbound",
        "status:opened",
        "queued:",
        "message:outbound",
        "status:resolved",
    ]
    status, newest = await api.get(
        f"/v1/contacts/{ids['ann']['contact_id']}/timeline?order=desc&limit=1"
    )
    assert newest["items"][0]["detail"]["status"] == "resolved"
    status, first = await api.get(f"/v1/contacts/{ids['ann']['contact_id']}/timeline?limit=2")
    assert first["items"][0]["body"] == "My invoice is wrong"


async def test_queue_state_and_live_metrics_show_waiting_work(api: Api, runtime: Runtime) -> None:
    ids = await _setup(api, runtime)
    status, state = await api.get("/v1/queues/state")
    assert status == 200
    queues = {q["queue_id"]: q for q in state["items"]}
    assert [w["conversation_id"] for w in queues[ids["billing"]]["waiting"]] == [
        ids["ann"]["conversation_id"]
    ]
    assert queues[ids["billing"]]["counts_by_channel"] == {"sms": 1}
    assert queues[ids["general"]]["counts_by_channel"] == {"webchat": 1}
    await api.post(f"/v1/agents/{ids['alice']}/presence", {"presence": "available"})
    status, live = await api.get("/v1/metrics/live")
    assert status == 200
    assert live["waiting"] == 2
    assert live["agents"] == {"available": 1, "busy": 0, "away": 0, "offline": 1}
    await api.post(
        f"/v1/conversations/{ids['ann']['conversation_id']}/assignment", {"agent_id": ids["alice"]}
    )
    status, live = await api.get("/v1/metrics/live")
    assert (live["waiting"], live["in_progress"]) == (1, 1)
    status, intervals = await api.get("/v1/metrics/intervals")
    assert status == 200
    rows = {(r["queue_id"], r["channel"]): r for r in intervals["items"]}
    billing = rows[(ids["billing"], "sms")]
    assert (billing["offered"], billing["answered"], billing["abandoned"]) == (1, 1, 0)
    assert billing["service_level_percent"] == 100.0


async def test_agents_see_only_their_queues_and_their_conversations(
    api: Api, runtime: Runtime
) -> None:
    ids = await _setup(api, runtime)
    alice = api.as_token(await api.issue_token("agent", agent_id=ids["alice"]))
    bob = api.as_token(await api.issue_token("agent", agent_id=ids["bob"]))
    ann_conv = ids["ann"]["conversation_id"]
    chat_conv = ids["visitor"]["conversation_id"]

    _, alice_inbox = await alice.get("/v1/conversations")
    _, bob_inbox = await bob.get("/v1/conversations")
    # Alice has billing:3 (Billing needs billing:2) and General needs nothing
    assert {c["id"] for c in alice_inbox["items"]} == {ann_conv, chat_conv}
    assert {c["id"] for c in bob_inbox["items"]} == {chat_conv}
    assert (await bob.get(f"/v1/conversations/{ann_conv}"))[0] == 404
    assert (await bob.post(f"/v1/conversations/{ann_conv}/replies", {"body": "x"}))[0] == 404
    _, bob_state = await bob.get("/v1/queues/state")
    assert {q["queue_id"] for q in bob_state["items"]} == {ids["general"]}
    # once assigned to Bob, he sees it
    await api.post(f"/v1/conversations/{ann_conv}/assignment", {"agent_id": ids["bob"]})
    assert (await bob.get(f"/v1/conversations/{ann_conv}"))[0] == 200
    # and an agent sets only its own presence
    assert (await bob.post(f"/v1/agents/{ids['alice']}/presence", {"presence": "busy"}))[0] == 403


async def test_the_inbox_finds_conversations_by_contact_name_without_names_in_urls(
    api: Api, runtime: Runtime
) -> None:
    ids = await _setup(api, runtime)
    status, found = await api.post("/v1/conversations/search", {"contact": "ann"})
    assert status == 200
    assert [c["id"] for c in found["items"]] == [ids["ann"]["conversation_id"]]
    status, found = await api.post("/v1/conversations/search", {"contact": "vic", "channel": "sms"})
    assert found["items"] == []
    status, _ = await api.post("/v1/conversations/search", {"contact": "a"})
    assert status == 422


async def test_queue_settings_and_manual_queueing_are_validated(api: Api, runtime: Runtime) -> None:
    ids = await _setup(api, runtime)
    bad = [
        {"colour": "red"},
        {"priority": 101},
        {"required_skills": ["no spaces"]},
        {"sl_threshold_seconds": "20"},
    ]
    for doc in bad:
        status, _ = await api.call("PATCH", f"/v1/queues/{ids['billing']}", json=doc)
        assert status == 422, doc
    conv = ids["visitor"]["conversation_id"]
    status, _ = await api.post(
        f"/v1/conversations/{conv}/queue", {"queue_id": ids["billing"], "priority": 7}
    )
    assert status == 200
    status, detail = await api.get(f"/v1/conversations/{conv}")
    assert (detail["queue_id"], detail["priority"]) == (ids["billing"], 7)
    assert detail["waiting_since"] is not None
    status, _ = await api.post(f"/v1/conversations/{conv}/abandon", {"reason": "left"})
    assert status == 200
    status, _ = await api.post(f"/v1/conversations/{conv}/abandon", {})
    assert status == 409  # no longer waiting
