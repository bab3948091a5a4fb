"""Data-subject requests through the API: access exports, erasure, restriction,
rectification, deadlines — and the audit trail of every read."""

from __future__ import annotations

import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import gnupg
import jsonschema
import pytest

from contact_centre.clock import ManualClock
from contact_centre.interaction import Identity, IdentityKind
from infra.runtime import Runtime
from tests.helpers import Api, interaction

SCHEMA = json.loads((Path(__file__).parents[2] / "docs" / "export-schema.json").read_text())
PHONE = "+447700900321"


async def _customer_on_every_channel(api: Api, runtime: Runtime) -> dict[str, Any]:
    """One contact reaching the tenant on all six channel kinds."""
    sms = await api.receive(
        body="Where is my order?",
        sender={"kind": "phone", "address": PHONE, "display_name": "Ann Jones"},
    )
    contact = UUID(sms["contact_id"])
    for kind, address in (
        (IdentityKind.EMAIL, "ann@example.com"),
        (IdentityKind.VISITOR, "v-ann"),
        (IdentityKind.HANDLE, "instagram:ann.j"),
    ):
        runtime.app.run(
            lambda uow, k=kind, a=address: runtime.app.link_identity_in(
                uow, api.tenant_id, contact, Identity(k, a)
            )
        )
    await api.receive(
        channel="voice", body="Voicemail: call me back", sender={"kind": "phone", "address": PHONE}
    )
    await api.receive(
        channel="whatsapp",
        body="Photo of the box",
        sender={"kind": "phone", "address": f"whatsapp:{PHONE}"},
        attachments=[{"name": "box.jpg", "content_type": "image/jpeg", "size": 10}],
    )
    await api.receive(
        channel="email",
        provider="smtp",
        subject="Order 4411",
        body="Hello again",
        sender={"kind": "email", "address": "Ann@Example.com"},
        to=None,
    )
    await api.receive(
        channel="webchat",
        provider="webchat",
        body="Are you there?",
        sender={"kind": "visitor", "address": "v-ann"},
        to=None,
    )
    await api.receive(
        channel="social",
        provider="meta",
        body="DM about my order",
        sender={"kind": "handle", "address": "instagram:ann.j"},
        to=None,
    )
    conversation = sms["conversation_id"]
    assert (await api.post(f"/v1/conversations/{conversation}/replies", {"body": "On its way"}))[
        0
    ] == 201
    assert (await api.post(f"/v1/conversations/{conversation}/notes", {"body": "VIP"}))[0] == 201
    runtime.catch_up()
    return {"contact_id": str(contact), "conversation_id": conversation}


async def test_an_access_export_holds_every_channel_and_validates_against_its_schema(
    api: Api, runtime: Runtime
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    status, request = await api.post(
        "/v1/requests",
        {"kind": "access", "subject": {"kind": "email", "address": "ANN@example.com"}},
    )
    assert status == 201
    assert request["contact_ids"] == [subject["contact_id"]]
    assert request["due_at"] > request["received_at"]
    async with api.client.get(
        f"/v1/requests/{request['request_id']}/export",
        headers={"Authorization": f"Bearer {api.token}"},
    ) as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        export = json.loads(await response.read())
    jsonschema.validate(export, SCHEMA, format_checker=jsonschema.FormatChecker())
    [person] = export["subjects"]
    assert person["display_name"] == "Ann Jones"
    assert {c["channel"] for c in person["conversations"]} == {
        "voice",
        "sms",
        "whatsapp",
        "email",
        "webchat",
        "social",
    }
    assert {i["address"] for i in person["identities"]} == {
        PHONE,
        "ann@example.com",
        "v-ann",
        "instagram:ann.j",
    }
    bodies = {m["body"] for c in person["conversations"] for m in c["messages"]}
    assert {"Where is my order?", "On its way", "DM about my order"} <= bodies
    assert person["requests"][0]["kind"] == "access"


async def test_an_export_is_encrypted_to_the_tenants_openpgp_key(
    api: Api, runtime: Runtime
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    with tempfile.TemporaryDirectory() as home:
        gpg = gnupg.GPG(gnupghome=home)
        key = gpg.gen_key(
            gpg.gen_key_input(
                key_type="EDDSA",
                key_curve="ed25519",
                subkey_type="ECDH",
                subkey_curve="cv25519",
                name_email="dpo@acme.example",
                no_protection=True,
            )
        )
        public = gpg.export_keys(key.fingerprint)
        status, configured = await api.call(
            "PUT", "/v1/privacy/export-key", json={"public_key": public}
        )
        assert (status, configured["fingerprint"]) == (200, key.fingerprint)
        _, request = await api.post(
            "/v1/requests", {"kind": "portability", "contact_id": subject["contact_id"]}
        )
        async with api.client.get(
            f"/v1/requests/{request['request_id']}/export",
            headers={"Authorization": f"Bearer {api.token}"},
        ) as response:
            assert response.status == 200
            assert response.content_type == "application/pgp-encrypted"
            armored = await response.text()
        assert "BEGIN PGP MESSAGE" in armored
        assert "Ann Jones" not in armored
        decrypted = gpg.decrypt(armored)
        assert decrypted.ok
        export = json.loads(decrypted.data)
    jsonschema.validate(export, SCHEMA, format_checker=jsonschema.FormatChecker())
    assert export["subjects"][0]["display_name"] == "Ann Jones"
    status, _ = await api.call(
        "PUT",
        "/v1/privacy/export-key",
        json={"public_key": "-----BEGIN PGP PRIVATE KEY BLOCK-----"},
    )
    assert status == 422


async def test_an_erasure_request_erases_every_scope_except_held_ones_and_says_so(
    api: Api, runtime: Runtime
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    status, hold = await api.post(
        "/v1/holds",
        {
            "target_kind": "conversation",
            "target_id": subject["conversation_id"],
            "reason": "payment dispute",
        },
    )
    assert status == 201
    _, request = await api.post(
        "/v1/requests", {"kind": "erasure", "subject": {"kind": "phone", "address": PHONE}}
    )
    status, done = await api.post(f"/v1/requests/{request['request_id']}/fulfil", {})
    assert status == 200
    assert done["status"] == "fulfilled"
    outcome = done["outcome"]
    assert outcome["result"] == "partly_held"
    statuses = {(s["kind"], s["id"]): s["status"] for s in outcome["subjects"]}
    assert statuses[("conversation", subject["conversation_id"])] == "held"
    assert sum(1 for s in outcome["subjects"] if s["status"] == "erased") == 5
    # the held conversation is intact, so the contact itself was kept too
    status, contact = await api.get(f"/v1/contacts/{subject['contact_id']}")
    assert status == 200
    assert statuses[("contact", subject["contact_id"])] == "held"
    assert contact["identities"]
    status, kept = await api.get(f"/v1/conversations/{subject['conversation_id']}")
    assert "Where is my order?" in [m["body"] for m in kept["messages"]]
    # released, a second erasure request finishes the job
    await api.post(f"/v1/holds/{hold['hold_id']}/release", {})
    _, again = await api.post(
        "/v1/requests", {"kind": "erasure", "contact_id": subject["contact_id"]}
    )
    status, done = await api.post(f"/v1/requests/{again['request_id']}/fulfil", {})
    assert done["outcome"]["result"] == "erased"
    assert (await api.get(f"/v1/contacts/{subject['contact_id']}"))[0] == 404
    _, erased = await api.get(f"/v1/conversations/{subject['conversation_id']}")
    assert erased["status"] == "closed"
    assert all(m["body"] is None for m in erased["messages"])
    # a new message from the same number starts afresh: a new contact
    fresh = await api.receive(sender={"kind": "phone", "address": PHONE})
    assert fresh["contact_id"] != subject["contact_id"]
    # downstream consumers are told, with no personal data
    erased_events = [
        e
        for e in runtime.app.events.get(UUID(subject["contact_id"]))
        if type(e).__name__ == "Erased"
    ]
    assert [(e.reason, e.request_id) for e in erased_events] == [
        ("request:erasure", UUID(again["request_id"]))
    ]


async def test_restriction_and_rectification_are_recorded_and_shown(
    api: Api, runtime: Runtime
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    _, restriction = await api.post(
        "/v1/requests", {"kind": "restriction", "contact_id": subject["contact_id"]}
    )
    await api.post(f"/v1/requests/{restriction['request_id']}/fulfil", {})
    _, request = await api.post(
        "/v1/requests", {"kind": "rectification", "contact_id": subject["contact_id"]}
    )
    status, _ = await api.post(f"/v1/requests/{request['request_id']}/fulfil", {})
    assert status == 422  # the corrected details are needed
    status, _ = await api.post(
        f"/v1/requests/{request['request_id']}/fulfil", {"display_name": "Ann Smith"}
    )
    assert status == 200
    runtime.catch_up()
    _, contact = await api.get(f"/v1/contacts/{subject['contact_id']}")
    assert contact["display_name"] == "Ann Smith"
    _, conversation = await api.get(f"/v1/conversations/{subject['conversation_id']}")
    assert conversation["contact"]["display_name"] == "Ann Smith"
    with runtime.readdb.read() as tx:
        tx.execute("SELECT restricted FROM rm_crm_contacts WHERE id = ?", (subject["contact_id"],))
        assert tx.fetchone() == (1,)
    status, lifted = await api.call("DELETE", f"/v1/contacts/{subject['contact_id']}/restriction")
    assert (status, lifted["restricted"]) == (200, False)


async def test_requests_near_or_past_their_due_date_are_flagged(
    api: Api, runtime: Runtime, manual: ManualClock
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    _, late = await api.post(
        "/v1/requests", {"kind": "access", "contact_id": subject["contact_id"]}
    )
    manual.advance(timedelta(days=10))
    _, fresh = await api.post(
        "/v1/requests", {"kind": "objection", "contact_id": subject["contact_id"]}
    )
    manual.advance(timedelta(days=24))  # the first is 34 days old, the second due in 6
    status, listing = await api.get("/v1/requests?attention=true")
    flags = {r["request_id"]: (r["overdue"], r["near_due"]) for r in listing["items"]}
    assert flags == {late["request_id"]: (True, False), fresh["request_id"]: (False, True)}
    _, live = await api.get("/v1/metrics/live")
    assert live["privacy_requests"] == {"open": 2, "due_within_7_days": 1, "overdue": 1}
    status, extended = await api.post(
        f"/v1/requests/{late['request_id']}/extend", {"days": 30, "reason": "complex request"}
    )
    assert (status, extended["overdue"]) == (200, False)
    status, _ = await api.post(
        f"/v1/requests/{late['request_id']}/extend", {"days": 45, "reason": "more"}
    )
    assert status == 422  # at most 60 days in all


async def test_every_read_of_personal_data_is_audited_and_the_chain_verifies(
    api: Api, runtime: Runtime
) -> None:
    subject = await _customer_on_every_channel(api, runtime)
    agent_token = await api.issue_token("supervisor", label="sup")
    supervisor = api.as_token(agent_token)
    await supervisor.get(f"/v1/conversations/{subject['conversation_id']}")
    await supervisor.get(f"/v1/contacts/{subject['contact_id']}")
    await supervisor.get(f"/v1/contacts/{subject['contact_id']}/timeline")
    await supervisor.post("/v1/contacts/search", {"query": "ann"})
    status, audit = await api.get(f"/v1/audit?subject={subject['contact_id']}")
    assert status == 200
    endpoints = [e["endpoint"] for e in audit["items"] if e["role"] == "supervisor"]
    assert endpoints == [
        "GET /v1/conversations/{conversation_id}",
        "GET /v1/contacts/{contact_id}",
        "GET /v1/contacts/{contact_id}/timeline",
        "POST /v1/contacts/search",
    ]
    assert all("Ann" not in json.dumps(e) for e in audit["items"])
    [result] = runtime.audit.verify(api.tenant_id)
    assert result.ok
    # tampering with any entry breaks the chain from there on
    with runtime.audit.db.transaction() as tx:
        tx.execute(
            "UPDATE cc_audit SET actor = 'token:someone-else' WHERE tenant_id = ? AND seq = 2",
            (str(api.tenant_id),),
        )
    [result] = runtime.audit.verify(api.tenant_id)
    assert (result.ok, result.broken_at) == (False, 2)


async def test_deleting_an_agent_erases_its_name_keeps_its_work_and_revokes_its_tokens(
    api: Api, runtime: Runtime
) -> None:
    _, agent = await api.post("/v1/agents", {"name": "Olga Operator", "email": "olga@acme.example"})
    token = await api.issue_token("agent", agent_id=agent["agent_id"])
    ids = await api.receive()
    await api.post(
        f"/v1/conversations/{ids['conversation_id']}/assignment", {"agent_id": agent["agent_id"]}
    )
    olga = api.as_token(token)
    assert (
        await olga.post(
            f"/v1/conversations/{ids['conversation_id']}/replies", {"body": "Hello from Olga"}
        )
    )[0] == 201
    assert (await api.delete(f"/v1/agents/{agent['agent_id']}"))[0] == 204
    assert (await olga.get("/v1/conversations"))[0] == 401
    _, agents = await api.get("/v1/agents")
    [gone] = [a for a in agents["items"] if a["agent_id"] == agent["agent_id"]]
    assert (gone["name"], gone["email"]) == (None, None)
    _, conversation = await api.get(f"/v1/conversations/{ids['conversation_id']}")
    [reply] = [m for m in conversation["messages"] if m["direction"] == "outbound"]
    assert (reply["author"], reply["body"]) == (f"agent:{agent['agent_id']}", "Hello from Olga")


@pytest.mark.parametrize(
    "body",
    [
        {"kind": "forget-me", "contact_id": "00000000-0000-0000-0000-000000000000"},
        {"kind": "access"},
        {"kind": "access", "subject": {"kind": "pager", "address": "1"}},
        {"kind": "access", "subject": {"kind": "phone", "address": "not a number"}},
    ],
)
async def test_malformed_requests_are_refused_and_write_nothing(
    api: Api, runtime: Runtime, body: dict[str, Any]
) -> None:
    before = runtime.app.recorder.max_notification_id()
    status, answer = await api.post("/v1/requests", body)
    assert status == 422, answer
    assert runtime.app.recorder.max_notification_id() == before


def test_interaction_helper_still_builds_generic_payloads() -> None:
    assert interaction()["channel"] == "sms"
