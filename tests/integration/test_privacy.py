"""Personal data is never at rest in clear, and destroying a scope key erases it."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import pytest

from contact_centre.conversations import Conversation
from contact_centre.privacy import ERASED, Scope, ScopeKind
from infra.config import Settings
from infra.runtime import Runtime
from tests.helpers import Api, settle
from tests.scan import needles, scan_files, scan_postgres

PHONE = "+447700900417"
NATIONAL = "7700900417"
EMAIL = "Zebedee.Quill@Example.org"
NAME = "Zebedee Quill"
TEXT = "my secret parcel code is PLUMTREE-8841"
REPLY = "Thanks Zebedee, code PLUMTREE-8841 noted"
NOTE = "caller sounded upset about PLUMTREE-8841"
AGENT_NAME = "Yolanda Varga-Wheelwright"
AGENT_EMAIL = "yolanda.varga@acme.example"


async def _write_personal_data(api: Api) -> dict[str, Any]:
    sms = await api.receive(
        body=TEXT, sender={"kind": "phone", "address": PHONE, "display_name": NAME}
    )
    email = await api.receive(
        channel="email",
        provider="smtp",
        provider_message_id="<m1@mail.example.org>",
        sender={"kind": "email", "address": EMAIL, "display_name": NAME},
        to={"kind": "email", "address": "support@acme.example"},
        subject=f"About {TEXT}",
        body=TEXT,
        attachments=[{"name": f"{NAME}.pdf", "content_type": "application/pdf", "size": 10}],
    )
    status, _ = await api.post(
        f"/v1/conversations/{sms['conversation_id']}/replies", {"body": REPLY}
    )
    assert status == 201
    status, _ = await api.post(f"/v1/conversations/{sms['conversation_id']}/notes", {"body": NOTE})
    assert status == 201
    status, _ = await api.post("/v1/agents", {"name": AGENT_NAME, "email": AGENT_EMAIL})
    assert status == 201
    return {"sms": sms, "email": email}


async def test_no_personal_data_in_clear_in_any_store_or_log(
    api: Api,
    runtime: Runtime,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    ids = await _write_personal_data(api)
    await settle(runtime)
    # The API does show it to an authorised caller...
    status, body = await api.get(f"/v1/conversations/{ids['sms']['conversation_id']}")
    assert status == 200
    assert body["messages"][0]["body"] == TEXT
    assert body["contact"]["display_name"] == NAME

    patterns = needles(PHONE, NATIONAL, EMAIL, NAME, "PLUMTREE-8841", AGENT_NAME, AGENT_EMAIL)
    # ...but no store holds it in clear.
    file_hits = scan_files(settings.data_dir, patterns) if settings.data_dir.exists() else []
    assert file_hits == []
    if settings.database_url:
        table_hits, tables = scan_postgres(settings.database_url, patterns)
        assert {"cc_events", "cc_index", "cc_vault_keys", "rm_messages"} <= set(tables)
        assert table_hits == []
        server = request.getfixturevalue("postgres_server")
        if server.data_dir is not None:  # our own cluster: scan its files (WAL included)
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            assert scan_files(server.data_dir, patterns) == []
    else:
        names = {p.name for p in settings.data_dir.iterdir()}
        assert {"events.sqlite", "vault.sqlite", "readmodels.sqlite"} <= names
    logged = caplog.text.encode()
    assert logged, "the flow should have logged something (access log at least)"
    assert [p for p in patterns if p in logged] == []


async def test_destroying_scope_keys_shows_the_erased_marker_and_aggregates_still_load(
    api: Api, runtime: Runtime
) -> None:
    ids = await _write_personal_data(api)
    await settle(runtime)
    conversation_id = ids["sms"]["conversation_id"]
    contact_id = ids["sms"]["contact_id"]
    tenant_id = api.tenant_id
    destroyed = runtime.vault.destroy(
        [
            Scope(tenant_id, ScopeKind.CONTACT, _uuid(contact_id)).id,
            Scope(tenant_id, ScopeKind.CONVERSATION, _uuid(conversation_id)).id,
        ]
    )
    assert destroyed == 2

    status, body = await api.get(f"/v1/conversations/{conversation_id}")
    assert status == 200
    assert body["contact"] == {
        "id": contact_id,
        "display_name": None,
        "identities": [{"kind": "phone", "address": None}],
        "erased": True,
    }
    assert all(m["body"] is None and m["erased"] is True for m in body["messages"])
    assert body["last_message"]["preview"] is None
    assert body["notes"][0]["erased"] is True
    # The other conversation (another scope) is untouched.
    status, other = await api.get(f"/v1/conversations/{ids['email']['conversation_id']}")
    assert other["messages"][0]["body"] == TEXT

    # The event log is intact: the aggregate loads and its events open to ERASED.
    conversation = runtime.app.repository.get(_uuid(conversation_id))
    assert isinstance(conversation, Conversation)
    assert conversation.message_count == 2
    events = list(runtime.app.events.get(_uuid(conversation_id)))
    received = next(e for e in events if isinstance(e, Conversation.MessageReceived))
    assert runtime.vault.open(received.content) is ERASED
    assert received.attachments == []  # metadata only; nothing personal outside the seal


async def test_erased_scope_cannot_take_new_personal_data(api: Api, runtime: Runtime) -> None:
    first = await api.receive(body="hello")
    await settle(runtime)
    runtime.vault.destroy(
        [Scope(api.tenant_id, ScopeKind.CONVERSATION, _uuid(first["conversation_id"])).id]
    )
    status, body = await api.post(
        f"/v1/conversations/{first['conversation_id']}/replies", {"body": "are you there?"}
    )
    assert status == 409
    assert body["error"] == "erased"


def _uuid(text: str) -> Any:
    from uuid import UUID

    return UUID(text)
