"""The CRM contact sync API: upsert by external id, email or phone (idempotent), typed
attributes and tags, merging two contacts, the 360 view and timeline, and bulk import."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any
from uuid import UUID

from infra.runtime import Runtime
from projections import webhooks as outbox
from tests.helpers import Api, settle, unique_phone


def email() -> str:
    return f"{secrets.token_hex(5)}@crm.example"


async def upsert(api: Api, doc: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {"Idempotency-Key": key} if key else None
    return await api.post("/v1/contacts", doc, headers=headers)


async def test_upsert_finds_by_external_id_email_or_phone_and_creates_otherwise(
    api: Api, runtime: Runtime
) -> None:
    address = email()
    status, created = await upsert(
        api,
        {
            "external_id": "crm-1",
            "display_name": "Ann Jones",
            "identities": [{"kind": "email", "address": address.upper()}],
            "tags": {"add": ["VIP"]},
            "attributes": {"plan": "gold", "seats": 3, "active": True},
        },
    )
    assert status == 201
    assert created["created"] is True
    contact = created["contact_id"]
    # the same person by email (normalised), by external id, by a new phone
    status, again = await upsert(api, {"identities": [{"kind": "email", "address": address}]})
    assert (status, again["contact_id"], again["changed"]) == (200, contact, [])
    phone = unique_phone()
    status, by_id = await upsert(
        api,
        {
            "external_id": "crm-1",
            "identities": [{"kind": "phone", "address": f"{phone[:3]} {phone[3:7]} {phone[7:]}"}],
        },
    )
    assert (status, by_id["contact_id"], by_id["changed"]) == (200, contact, ["identities"])
    status, shown = await api.get(f"/v1/contacts/{contact}")
    assert status == 200
    assert shown["external_id"] == "crm-1"
    assert shown["display_name"] == "Ann Jones"
    assert {(i["kind"], i["address"]) for i in shown["identities"]} == {
        ("email", address),
        ("phone", phone),
    }
    assert shown["tags"] == ["vip"]
    assert shown["attributes"] == {"plan": "gold", "seats": 3, "active": True}
    status, found = await api.post(
        "/v1/contacts/lookup", {"kind": "external_id", "address": "crm-1"}
    )
    assert (status, found["id"]) == (200, contact)
    # attributes: typed, null removes, floats refused; tags added and removed
    status, _ = await api.call(
        "PATCH",
        f"/v1/contacts/{contact}",
        json={
            "attributes": {"plan": None, "seats": 4},
            "tags": {"add": ["b2b"], "remove": ["vip"]},
        },
    )
    assert status == 200
    _, shown = await api.get(f"/v1/contacts/{contact}")
    assert (shown["attributes"], shown["tags"]) == ({"seats": 4, "active": True}, ["b2b"])
    status, answer = await api.call(
        "PATCH", f"/v1/contacts/{contact}", json={"attributes": {"ratio": 0.5}}
    )
    assert (status, answer["error"]) == (422, "invalid")
    # a new contact needs an email or phone
    status, answer = await upsert(api, {"external_id": "crm-unknown"})
    assert (status, answer["error"]) == (422, "invalid")


async def test_an_idempotency_key_answers_a_repeat_like_the_first_time_and_writes_nothing(
    api: Api, runtime: Runtime
) -> None:
    doc = {"identities": [{"kind": "email", "address": email()}], "display_name": "Bo"}
    status, first = await upsert(api, doc, key="sync-42")
    assert (status, first["created"], first["duplicate"]) == (201, True, False)
    before = runtime.app.recorder.max_notification_id()
    status, repeat = await upsert(api, doc, key="sync-42")
    assert (status, repeat["contact_id"], repeat["duplicate"]) == (201, first["contact_id"], True)
    assert runtime.app.recorder.max_notification_id() == before
    other = {**doc, "display_name": "Someone else"}
    status, answer = await upsert(api, other, key="sync-42")
    assert (status, answer["error"]) == (409, "conflict")


async def test_identities_of_two_contacts_in_one_upsert_are_a_conflict(api: Api) -> None:
    a, b = email(), email()
    await upsert(api, {"identities": [{"kind": "email", "address": a}]})
    await upsert(api, {"identities": [{"kind": "email", "address": b}]})
    status, answer = await upsert(
        api, {"identities": [{"kind": "email", "address": a}, {"kind": "email", "address": b}]}
    )
    assert (status, answer["error"]) == (409, "conflict")
    assert "merge" in answer["detail"]


async def test_merging_combines_history_and_identities_and_destroys_the_merged_key(
    api: Api, runtime: Runtime
) -> None:
    status, hook = await api.post(
        "/v1/webhooks", {"url": "http://127.0.0.1:9/crm", "event_types": ["contact.merged"]}
    )
    assert status == 201
    ann_phone, ann_email = unique_phone(), email()
    ann = await api.receive(
        sender={"kind": "phone", "address": ann_phone, "display_name": "Ann"}, body="by sms"
    )
    other = await api.receive(
        channel="email",
        provider="smtp",
        sender={"kind": "email", "address": ann_email},
        to={"kind": "email", "address": "support@shop.example"},
        body="by email",
    )
    survivor, merged = ann["contact_id"], other["contact_id"]
    await api.call(
        "PATCH", f"/v1/contacts/{merged}", json={"external_id": "crm-77", "tags": {"add": ["b2b"]}}
    )
    status, body = await api.post(f"/v1/contacts/{survivor}/merge", {"contact_id": merged})
    assert status == 200
    assert body["conversation_ids"] == [other["conversation_id"]]

    _, shown = await api.get(f"/v1/contacts/{survivor}")
    assert {(i["kind"], i["address"]) for i in shown["identities"]} == {
        ("phone", ann_phone),
        ("email", ann_email),
    }
    assert (shown["external_id"], shown["tags"]) == ("crm-77", ["b2b"])
    assert shown["total_conversations"] == 2
    assert {c["id"] for c in shown["conversations"]} == {
        ann["conversation_id"],
        other["conversation_id"],
    }
    _, history = await api.get(f"/v1/contacts/{survivor}/timeline")
    bodies = [e.get("body") for e in history["items"] if e["kind"] == "message"]
    assert bodies == ["by sms", "by email"]
    _, conversation = await api.get(f"/v1/conversations/{other['conversation_id']}")
    assert conversation["contact"]["id"] == survivor
    # the merged-away id points at the survivor; its identities find the survivor
    status, gone = await api.get(f"/v1/contacts/{merged}")
    assert (status, gone["merged_into"]) == (404, survivor)
    _, found = await api.post("/v1/contacts/lookup", {"kind": "email", "address": ann_email})
    assert found["id"] == survivor
    _, found = await api.post("/v1/contacts/lookup", {"kind": "external_id", "address": "crm-77"})
    assert found["id"] == survivor
    again = await api.receive(
        channel="email",
        provider="smtp",
        sender={"kind": "email", "address": ann_email},
        to={"kind": "email", "address": "support@shop.example"},
    )
    assert again["contact_id"] == survivor
    assert again["conversation_id"] == other["conversation_id"]
    # the merged contact's key is gone; the ledger says so, with no personal data
    assert runtime.vault.is_destroyed(f"contact:{merged}")
    await settle(runtime)
    _, deletions = await api.get("/v1/retention/deletions")
    assert {(d["scope"], d["rule"]) for d in deletions["items"]} == {
        (f"contact:{merged}", "contact_merged")
    }
    _, ledger = await api.get(f"/v1/retention/ledger?contact_id={survivor}")
    assert f"conversation:{other['conversation_id']}" in {s["scope"] for s in ledger["items"]}
    # integrations are told (ids only)
    with runtime.readdb.read() as tx:
        rows = outbox.list_deliveries(tx, str(api.tenant_id), hook["webhook_id"])
    assert [r["payload"] for r in rows] == [rows[0]["payload"]]
    data = json.loads(rows[0]["payload"])["data"]
    assert data == {
        "contact_id": survivor,
        "merged_contact_id": merged,
        "conversation_ids": [other["conversation_id"]],
    }
    # erasing the survivor now erases the moved conversation too
    status, erased = await api.post(f"/v1/contacts/{survivor}/erasure", {})
    assert status == 200
    assert {s["id"] for s in erased["subjects"] if s["kind"] == "conversation"} == {
        ann["conversation_id"],
        other["conversation_id"],
    }


async def test_merges_that_would_lose_or_misuse_data_are_refused(api: Api) -> None:
    a = (await api.receive())["contact_id"]
    b = (await api.receive())["contact_id"]
    c = (await api.receive())["contact_id"]
    status, answer = await api.post(f"/v1/contacts/{a}/merge", {"contact_id": a})
    assert (status, answer["error"]) == (422, "invalid")
    await api.post(f"/v1/contacts/{b}/restriction", {})
    status, answer = await api.post(f"/v1/contacts/{a}/merge", {"contact_id": b})
    assert (status, answer["error"]) == (409, "restricted")
    await api.post("/v1/holds", {"target_kind": "contact", "target_id": c, "reason": "claim"})
    status, answer = await api.post(f"/v1/contacts/{a}/merge", {"contact_id": c})
    assert (status, answer["error"]) == (409, "conflict")
    d = (await api.receive())["contact_id"]
    assert (await api.post(f"/v1/contacts/{a}/merge", {"contact_id": d}))[0] == 200
    status, answer = await api.post(f"/v1/contacts/{a}/merge", {"contact_id": d})
    assert (status, answer["error"]) == (409, "conflict")  # already merged


async def test_integrations_read_the_timeline_without_message_content(api: Api) -> None:
    ids = await api.receive(body="private words")
    integration = api.as_token(await api.issue_token("integration"))
    status, history = await integration.get(f"/v1/contacts/{ids['contact_id']}/timeline")
    assert status == 200
    kinds = [e["kind"] for e in history["items"]]
    assert "message" in kinds
    assert "private words" not in str(history)
    assert all("body" not in e for e in history["items"])
    _, staff = await api.get(f"/v1/contacts/{ids['contact_id']}/timeline")
    assert "private words" in str(staff)


async def import_ndjson(api: Api, data: bytes, key: str | None = None) -> tuple[int, list[Any]]:
    headers = {"Content-Type": "application/x-ndjson"}
    if key:
        headers["Idempotency-Key"] = key
    async with api.client.post(
        "/v1/contacts/import",
        data=data,
        headers={"Authorization": f"Bearer {api.token}", **headers},
    ) as response:
        text = await response.text()
        return response.status, [json.loads(line) for line in text.splitlines()]


IMPORT_LINES = 2_000
BAD_LINES = {
    7: b"{not json",
    99: json.dumps({"identities": [{"kind": "fax", "address": "1"}]}).encode(),
    500: json.dumps(
        {"identities": [{"kind": "email", "address": "x@crm.example"}], "attributes": {"r": 1.5}}
    ).encode(),
    1999: json.dumps({"external_id": "nobody"}).encode(),
}


def import_line(n: int) -> bytes:
    good = {
        "external_id": f"imp-{n}",
        "identities": [{"kind": "email", "address": f"imp-{n}@crm.example"}],
        "tags": {"add": ["imported"]},
    }
    return BAD_LINES.get(n, json.dumps(good).encode()) + b"\n"


async def test_a_bulk_import_streams_thousands_of_lines_and_bad_lines_do_not_stop_it(
    api: Api, runtime: Runtime
) -> None:
    async def body() -> Any:  # streamed: the client sends it in chunks as it goes
        for n in range(1, IMPORT_LINES + 1):
            yield import_line(n)
            if n % 500 == 0:
                await asyncio.sleep(0)

    status, results = await import_ndjson(api, body(), key="import-1")  # type: ignore[arg-type]
    assert status == 200
    *lines, summary = results
    assert [r["line"] for r in lines] == list(range(1, IMPORT_LINES + 1))
    errors = {r["line"]: r["error"]["error"] for r in lines if r["status"] == "error"}
    assert errors == {7: "malformed_json", 99: "invalid", 500: "invalid", 1999: "invalid"}
    assert summary["summary"] == {
        "lines": IMPORT_LINES,
        "created": IMPORT_LINES - 4,
        "updated": 0,
        "unchanged": 0,
        "error": 4,
    }
    _, found = await api.post("/v1/contacts/lookup", {"kind": "external_id", "address": "imp-1234"})
    assert found["identities"] == [{"kind": "email", "address": "imp-1234@crm.example"}]
    # the same import again with the same key: the same answers, nothing written
    before = runtime.app.recorder.max_notification_id()
    everything = b"".join(import_line(n) for n in range(1, IMPORT_LINES + 1))
    status, again = await import_ndjson(api, everything, key="import-1")
    assert status == 200
    assert [r.get("contact_id") for r in again[:-1]] == [r.get("contact_id") for r in lines]
    assert all(r["duplicate"] for r in again[:-1] if r["status"] != "error")
    assert runtime.app.recorder.max_notification_id() == before
    # without a key, lines that match contacts and change nothing are "unchanged"
    status, third = await import_ndjson(api, import_line(7) + import_line(5))
    assert [r["status"] for r in third[:-1]] == ["error", "unchanged"]
    assert UUID(third[1]["contact_id"])


async def test_an_import_needs_ndjson_and_refuses_over_long_lines(api: Api) -> None:
    status, answer = await api.post("/v1/contacts/import", {"external_id": "x"})
    assert (status, answer["error"]) == (415, "unsupported_media_type")
    long_line = json.dumps({"display_name": "x" * 70_000}).encode()
    ok = json.dumps({"identities": [{"kind": "email", "address": email()}]}).encode()
    status, results = await import_ndjson(api, long_line + b"\n" + ok + b"\n")
    assert status == 200
    assert [(r["line"], r["status"]) for r in results[:-1]] == [(1, "error"), (2, "created")]
    assert results[0]["error"]["error"] == "line_too_long"
