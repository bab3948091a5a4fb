"""Erasure and tenant purge, proved on the bytes: after them no store, log or key table
holds anything of the subject (or the tenant), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from datetime import timedelta
from typing import Any
from uuid import UUID

import psycopg
import pytest

from contact_centre.clock import ManualClock
from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel, Identity, IdentityKind
from contact_centre.privacy import ERASED
from infra.config import Settings
from infra.runtime import Runtime, build
from tests.helpers import Api, interaction
from tests.privacy.support import World
from tests.scan import needles, scan_files, scan_postgres

PHONE = "+447700900555"
EMAIL = "Octavia.Brightwater@Example.net"
NAME = "Octavia Brightwater"
TEXT = "my locker code is MARIGOLD-7731"
REPLY = "Thanks Octavia, MARIGOLD-7731 noted"
NOTE = "Octavia asked twice about MARIGOLD-7731"
AGENT = ("Percival Thornbury", "percival.thornbury@acme.example")


async def _subject(api: Api, runtime: Runtime) -> dict[str, Any]:
    """One person on SMS and email (linked), with a reply and a note; and an agent."""
    sms = await api.receive(
        body=TEXT, sender={"kind": "phone", "address": PHONE, "display_name": NAME}
    )
    contact = UUID(sms["contact_id"])
    runtime.app.run(
        lambda uow: runtime.app.link_identity_in(
            uow, api.tenant_id, contact, Identity(IdentityKind.EMAIL, EMAIL)
        )
    )
    email = await api.receive(
        channel="email",
        provider="smtp",
        subject=f"Locker {TEXT}",
        body=TEXT,
        sender={"kind": "email", "address": EMAIL, "display_name": NAME},
        to={"kind": "email", "address": "help@acme.example"},
    )
    assert email["contact_id"] == sms["contact_id"]
    conversation = sms["conversation_id"]
    assert (await api.post(f"/v1/conversations/{conversation}/replies", {"body": REPLY}))[0] == 201
    assert (await api.post(f"/v1/conversations/{conversation}/notes", {"body": NOTE}))[0] == 201
    runtime.catch_up()
    return {
        "contact_id": sms["contact_id"],
        "conversations": [conversation, email["conversation_id"]],
    }


def _vault_keys(settings: Settings, runtime: Runtime, tenant_id: UUID) -> dict[str, str]:
    """scope → wrapped key, as stored."""
    with runtime.vault.db.read() as tx:
        tx.execute(
            "SELECT scope, wrapped FROM cc_vault_keys WHERE tenant_id = ?", (str(tenant_id),)
        )
        return {str(scope): str(wrapped) for scope, wrapped in tx.fetchall()}


def _stored(settings: Settings, patterns: list[bytes]) -> list[str]:
    """Where any pattern is stored: every file under the data directory and, on
    PostgreSQL, every row of every table."""
    hits = scan_files(settings.data_dir, patterns) if settings.data_dir.exists() else []
    if settings.database_url:
        table_hits, _ = scan_postgres(settings.database_url, patterns)
        hits += table_hits
    return hits


def _purged(report: Any) -> int:
    return int(report.summary()["actions"].get("purge-tenant:tenant", 0))


def _vacuums(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'cc_vault_keys'"
        ).fetchone()
    return int(row[0]) if row else 0


async def test_after_erasure_nothing_of_the_subject_is_stored_logged_or_recoverable(
    api: Api, runtime: Runtime, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    subject = await _subject(api, runtime)
    personal = needles(PHONE, PHONE[1:], EMAIL, NAME, "MARIGOLD-7731", "Octavia")
    # Positive controls: the API shows the data, and the scopes' wrapped keys are on disk,
    # so the key scan below would see them if they stayed.
    status, shown = await api.get(f"/v1/conversations/{subject['conversations'][0]}")
    assert TEXT in [m["body"] for m in shown["messages"]]
    keys = _vault_keys(settings, runtime, api.tenant_id)
    mine = {
        scope: wrapped
        for scope, wrapped in keys.items()
        if scope.endswith(subject["contact_id"])
        or any(scope.endswith(c) for c in subject["conversations"])
    }
    assert len(mine) == 3  # the contact and its two conversations
    assert all(_stored(settings, [w.encode()]) for w in mine.values())
    vacuums = _vacuums(settings.database_url) if settings.database_url else 0

    _, request = await api.post(
        "/v1/requests", {"kind": "erasure", "subject": {"kind": "email", "address": EMAIL}}
    )
    status, done = await api.post(f"/v1/requests/{request['request_id']}/fulfil", {})
    assert (status, done["outcome"]["result"]) == (200, "erased")

    # The keys are gone from the vault's storage, not only marked (its scrub runs right
    # after the erasure returns: wait for it, within moments).
    assert runtime.vault.wait_scrubbed(timeout=10.0)
    after = _vault_keys(settings, runtime, api.tenant_id)
    assert set(mine).isdisjoint(after)
    assert set(keys) - set(mine) <= set(after)  # other scopes (the tenant's) untouched
    assert _stored(settings, [w.encode() for w in mine.values()]) == []
    if settings.database_url:  # deleted rows are vacuumed away at once
        for _ in range(50):  # statistics arrive a moment after the VACUUM
            if _vacuums(settings.database_url) > vacuums:
                break
            await asyncio.sleep(0.1)
        assert _vacuums(settings.database_url) > vacuums
    # Nothing personal in any store or in the logs...
    assert _stored(settings, personal) == []
    logged = caplog.text.encode()
    assert b"/fulfil" in logged  # the log was captured
    assert [p for p in personal if p in logged] == []
    # ...nor reachable: no lookup finds the subject, the API shows blanks, and the
    # append-only log's ciphertexts open to the erased marker.
    found, _ = runtime.app.run(
        lambda uow: runtime.app.resolve_subject(
            uow, api.tenant_id, Identity(IdentityKind.PHONE, PHONE)
        )
    )
    assert found == []
    assert (await api.get(f"/v1/contacts/{subject['contact_id']}"))[0] == 404
    _, blanked = await api.get(f"/v1/conversations/{subject['conversations'][0]}")
    assert [m["body"] for m in blanked["messages"]] == [None, None]
    events = list(runtime.app.events.get(UUID(subject["conversations"][0])))
    received = next(e for e in events if isinstance(e, Conversation.MessageReceived))
    assert runtime.vault.open(received.content) is ERASED
    # what remains is told without personal data: the deletion records
    _, deletions = await api.get("/v1/retention/deletions")
    assert {d["subject_id"] for d in deletions["items"]} >= {subject["contact_id"]}
    assert [p for p in personal if p in json.dumps(deletions).encode()] == []


async def test_a_terminated_tenant_comes_back_in_its_grace_then_is_purged_to_a_certificate(
    api: Api,
    runtime: Runtime,
    settings: Settings,
    manual: ManualClock,
    client: Any,
) -> None:
    subject = await _subject(api, runtime)
    status, agent = await api.post("/v1/agents", {"name": AGENT[0], "email": AGENT[1]})
    assert status == 201
    neighbour = await Api.for_new_tenant(client, runtime, "Neighbour Ltd")
    theirs = await neighbour.receive(
        body="Neighbour's message", sender={"kind": "phone", "address": "+447700900777"}
    )
    runtime.catch_up()

    # terminated with a grace: service stops at once...
    status, terminated = await api.post("/v1/tenant/termination", {"grace_days": 10})
    assert (status, terminated["status"]) == (200, "terminated")
    assert (await api.get("/v1/contacts"))[0] == 401
    assert (await api.post("/v1/interactions", interaction(body="late")))[0] == 401
    # ...and comes back, data intact, when reactivated inside the grace
    manual.advance(timedelta(days=9))
    runtime.app.run(lambda uow: runtime.app.reactivate_tenant_in(uow, api.tenant_id))
    runtime.catch_up()
    status, contact = await api.get(f"/v1/contacts/{subject['contact_id']}")
    assert (status, contact["display_name"]) == (200, NAME)

    keys = _vault_keys(settings, runtime, api.tenant_id)
    assert len(keys) >= 5  # tenant, contact, two conversations, agent
    assert (await api.post("/v1/tenant/termination", {"grace_days": 3}))[0] == 200
    manual.advance(timedelta(days=2))
    runtime.catch_up()
    report = runtime.privacy.sweep(manual.now())
    assert _purged(report) == 0  # still in its grace
    manual.advance(timedelta(days=2))
    report = runtime.privacy.sweep(manual.now())
    runtime.catch_up()
    assert _purged(report) == 1

    # only the certificate is left: counts and dates
    with runtime.readdb.read() as tx:
        tx.execute(
            "SELECT certificate FROM rm_retention_tenants WHERE tenant_id = ?",
            (str(api.tenant_id),),
        )
        certificate = json.loads(tx.fetchone()[0])
    assert certificate["tenant_id"] == str(api.tenant_id)
    assert certificate["keys_destroyed"] == len(keys)
    assert certificate["scopes_by_category"]["correspondence"] == {"live": 2}
    personal = needles(PHONE, EMAIL, NAME, "MARIGOLD-7731", *AGENT)
    assert [p for p in personal if p in json.dumps(certificate).encode()] == []
    # no key, no index entry, no read-model row of the tenant remains...
    assert _vault_keys(settings, runtime, api.tenant_id) == {}
    assert runtime.vault.wait_scrubbed(timeout=10.0)
    assert _stored(settings, [w.encode() for w in keys.values()]) == []
    assert _stored(settings, personal) == []
    with runtime.readdb.read() as tx:
        for consumer in runtime.consumers:
            for table in consumer.projection.tables:
                tx.execute(
                    f"SELECT COUNT(*) FROM {table} WHERE tenant_id = ?", (str(api.tenant_id),)
                )
                left = tx.fetchone()[0]
                assert left == (1 if table == "rm_retention_tenants" else 0), table
    assert list(runtime.app.index.scan_prefix("identity", f"{api.tenant_id}:")) == []
    # ...its tokens are dead, and the neighbour is untouched
    assert (await api.get("/v1/contacts"))[0] == 401
    status, kept = await neighbour.get(f"/v1/conversations/{theirs['conversation_id']}")
    assert (status, kept["messages"][0]["body"]) == (200, "Neighbour's message")
    assert agent["agent_id"] not in json.dumps(certificate)


async def test_a_hold_anywhere_in_a_terminated_tenant_postpones_its_purge(
    api: Api, runtime: Runtime, settings: Settings, manual: ManualClock
) -> None:
    subject = await _subject(api, runtime)
    status, hold = await api.post(
        "/v1/holds",
        {
            "target_kind": "conversation",
            "target_id": subject["conversations"][1],
            "reason": "litigation",
        },
    )
    assert status == 201
    assert (await api.post("/v1/tenant/termination", {"grace_days": 0}))[0] == 200
    manual.advance(timedelta(days=1))
    report = runtime.privacy.sweep(manual.now())
    assert _purged(report) == 0
    assert _vault_keys(settings, runtime, api.tenant_id)  # nothing destroyed
    # the operator releases it (the tenant's own tokens no longer work)
    runtime.app.run(
        lambda uow: runtime.app.release_hold_in(
            uow, api.tenant_id, UUID(hold["hold_id"]), "operator:legal"
        )
    )
    runtime.catch_up()
    report = runtime.privacy.sweep(manual.now())
    assert _purged(report) == 1
    assert _vault_keys(settings, runtime, api.tenant_id) == {}


def _vacuumed_since(url: str, before: int, seconds: float = 5.0) -> bool:
    """Whether cc_vault_keys was vacuumed since ``before`` (statistics arrive a moment
    after the VACUUM)."""
    deadline = time.monotonic() + seconds
    while _vacuums(url) <= before:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("backend", ["postgres"])  # SQLite: the test below
def test_destroyed_key_rows_are_vacuumed_promptly_after_the_erasure_returns(
    settings: Settings, manual: ManualClock
) -> None:
    """PostgreSQL: the VACUUM that removes destroyed key rows from the vault's pages runs
    in the background right after the erasure (its cost grows with the vault), within
    moments, and a process that erases and exits at once still runs it before closing."""
    url = settings.database_url
    assert url is not None
    rt = build(settings.with_overrides(retention_interval_seconds=0), clock=manual)
    world = World(rt, manual)
    first = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900950", "first")
    second = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900951", "second")
    try:
        before = _vacuums(url)
        began = time.monotonic()
        rt.privacy.erase_contact(world.tenant, first.contact_id, "request:erasure")
        assert rt.vault.wait_scrubbed(timeout=10.0)
        assert time.monotonic() - began < 10.0
        assert _vacuumed_since(url, before)
        # erase, then close at once: closing waits for the scrub
        before = _vacuums(url)
        rt.privacy.erase_contact(world.tenant, second.contact_id, "request:erasure")
    finally:
        rt.close()
    assert _vacuumed_since(url, before)


@pytest.mark.parametrize("backend", ["sqlite"])  # PostgreSQL: the VACUUM test above
def test_destroyed_keys_leave_the_vault_file_promptly_after_the_erasure_returns(
    settings: Settings, manual: ManualClock
) -> None:
    """SQLite: the truncating checkpoint that takes destroyed keys' older page images out
    of the vault's write-ahead log runs in the background right after the erasure, within
    moments; a process that erases and exits at once still runs it before closing."""
    rt = build(settings.with_overrides(retention_interval_seconds=0), clock=manual)
    world = World(rt, manual)
    first = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900952", "first")
    second = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900953", "second")
    try:
        keys = _vault_keys(settings, rt, world.tenant)
        wrapped = [w.encode() for scope, w in keys.items() if str(first.contact_id) in scope]
        assert wrapped
        assert _stored(settings, wrapped)
        rt.privacy.erase_contact(world.tenant, first.contact_id, "request:erasure")
        assert rt.vault.wait_scrubbed(timeout=10.0)
        assert _stored(settings, wrapped) == []
        # erase, then close at once: closing waits for the scrub
        wrapped = [w.encode() for scope, w in keys.items() if str(second.contact_id) in scope]
        assert wrapped
        assert _stored(settings, wrapped)
        rt.privacy.erase_contact(world.tenant, second.contact_id, "request:erasure")
    finally:
        rt.close()
    assert _stored(settings, wrapped) == []
