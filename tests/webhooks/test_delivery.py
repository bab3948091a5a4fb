"""Signed outbound webhooks end to end: a real receiver on 127.0.0.1, the dispatcher
running in the server's runtime, and the runtime clock moved on for retries."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from contact_centre.clock import ShiftedClock, SystemClock
from contact_centre.crm_service import ContactChanges
from contact_centre.interaction import Identity, IdentityKind
from infra.config import Settings
from infra.runtime import Runtime, build
from infra.webhook_http import AiohttpWebhookTransport, StandardWebhooksSigner
from projections import webhooks as outbox
from tests.helpers import Api, settle, unique_phone
from tests.scan import needles, scan_files, scan_postgres
from tests.webhooks.conftest import Receiver
from workflows.webhooks import WebhookDispatcher


async def subscribe(
    api: Api, receiver: Receiver, event_types: list[str], path: str = "/hook", **extra: Any
) -> dict[str, Any]:
    status, body = await api.post(
        "/v1/webhooks", {"url": receiver.url(path), "event_types": event_types, **extra}
    )
    assert status == 201, body
    receiver.secrets.append(body["secret"])
    return dict(body)


def wake(runtime: Runtime) -> None:
    assert runtime.tickers is not None
    runtime.tickers.wake("webhooks")


async def until(
    runtime: Runtime, done: Callable[[], bool], timeout: float = 20.0, what: str = ""
) -> None:
    """Wait (bounded) for ``done``, waking the dispatcher meanwhile."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not done():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        wake(runtime)
        await asyncio.sleep(0.05)


async def advance_until(
    runtime: Runtime, clock: ShiftedClock, done: Callable[[], bool], step: timedelta, steps: int
) -> None:
    """Move the runtime clock on, a step at a time, until ``done`` (retries fall due)."""
    for _ in range(steps):
        if done():
            return
        clock.advance(step)
        wake(runtime)
        for _ in range(8):
            await asyncio.sleep(0.05)
            if done():
                return
    assert done(), "the clock ran out of steps"


def rows(runtime: Runtime, api: Api, webhook_id: str, state: str | None = None) -> list[Any]:
    with runtime.readdb.read() as tx:
        return outbox.list_deliveries(tx, str(api.tenant_id), webhook_id, state=state, limit=10_000)


def recorded(runtime: Runtime, api: Api, webhook_id: str, delivered: int) -> Callable[[], bool]:
    """True once the read model shows ``delivered`` deliveries and nothing pending: the
    receiver has answered and the dispatcher has recorded its reports."""

    def done() -> bool:
        found = rows(runtime, api, webhook_id)
        return sum(r["state"] == "delivered" for r in found) == delivered and all(
            r["state"] != "pending" for r in found
        )

    return done


async def test_every_delivery_is_signed_per_standard_webhooks_and_carries_ids_only(
    api: Api, runtime: Runtime, receiver: Receiver, settings: Settings
) -> None:
    hook = await subscribe(
        api, receiver, ["conversation.opened", "message.received", "contact.created"]
    )
    assert hook["secret"].startswith("whsec_")
    phone = unique_phone()
    ids = await api.receive(
        body="My card number is 4111 1111",
        sender={"kind": "phone", "address": phone, "display_name": "Ann Secretname"},
    )
    await until(runtime, recorded(runtime, api, hook["webhook_id"], 3), what="three deliveries")
    assert receiver.unverified == 0
    assert [d.payload["type"] for d in receiver.unique()] == [
        "contact.created",
        "conversation.opened",
        "message.received",
    ]
    for delivery in receiver.unique():
        assert delivery.id.startswith("msg_")
        assert delivery.payload["tenant_id"] == str(api.tenant_id)
        assert delivery.headers["content-type"] == "application/json"
        # Needles that random ids and timestamps cannot contain by chance: a bare "4111"
        # once matched a contact id's hex.
        for personal in (phone, phone.lstrip("+"), "4111 1111", "card number", "Secretname"):
            assert personal.encode() not in delivery.body  # P16: ids and metadata only
    message = receiver.of_type("message.received")[0].payload["data"]
    assert message["message_id"] == ids["message_id"]
    assert message["conversation_id"] == ids["conversation_id"]
    assert message["contact_id"] == ids["contact_id"]
    assert "content" not in message
    # The secret is shown once: never in a listing.
    _, listing = await api.get("/v1/webhooks")
    assert hook["secret"] not in str(listing)
    assert listing["items"][0]["deliveries"]["delivered"] == 3


async def test_opted_in_personal_fields_are_sent_and_kept_sealed_at_rest(
    api: Api, runtime: Runtime, receiver: Receiver, settings: Settings
) -> None:
    await subscribe(
        api,
        receiver,
        ["message.received", "contact.updated"],
        personal_fields=["message_content", "contact_details", "contact_attributes"],
    )
    phone = unique_phone()
    ids = await api.receive(
        body="Plaintextbody for the CRM",
        sender={"kind": "phone", "address": phone, "display_name": "Ann Optedin"},
    )
    status, _ = await api.call(
        "PATCH",
        f"/v1/contacts/{ids['contact_id']}",
        json={"attributes": {"plan": "gold"}, "external_id": "crm-881"},
    )
    assert status == 200
    await until(runtime, lambda: len(receiver.unique()) == 3, what="three deliveries")
    content = receiver.of_type("message.received")[0].payload["data"]["content"]
    assert content["body"] == "Plaintextbody for the CRM"
    assert content["from"] == phone
    assert content["from_name"] == "Ann Optedin"
    updated = receiver.of_type("contact.updated")[-1].payload["data"]
    assert updated["contact"]["external_id"] == "crm-881"
    assert {"kind": "phone", "address": phone} in updated["contact"]["identities"]
    assert updated["attributes"] == {"plan": "gold"}
    # What the webhooks keep (outbox, attempt log) holds none of it in clear.
    await settle(runtime)
    patterns = needles("Plaintextbody", "Optedin", "crm-881")
    if settings.database_url:
        hits, tables = scan_postgres(settings.database_url, patterns)
        assert "rm_webhook_deliveries" in tables
    else:
        hits = scan_files(settings.data_dir, patterns)
    assert hits == []


async def test_a_rotated_secret_keeps_the_old_one_valid_for_the_grace_period(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    old = hook["secret"]
    status, rotated = await api.post(
        f"/v1/webhooks/{hook['webhook_id']}/rotate-secret", {"grace_hours": 2}
    )
    assert status == 200
    new = rotated["secret"]
    assert new != old
    assert new.startswith("whsec_")
    receiver.secrets.append(new)
    await api.receive()
    await until(runtime, lambda: len(receiver.unique()) == 1, what="a delivery")
    both = receiver.unique()[0]
    assert set(both.verified_with) == {old, new}  # two signatures, each verifies
    assert len(both.headers["webhook-signature"].split(" ")) == 2
    _, shown = await api.get(f"/v1/webhooks/{hook['webhook_id']}")
    assert shown["previous_secret_valid_until"] is not None

    clock.advance(timedelta(hours=3))  # the grace period is over
    await api.receive()
    await until(runtime, lambda: len(receiver.unique()) == 2, what="a second delivery")
    assert receiver.unique()[1].verified_with == [new]
    assert receiver.unverified == 0


async def test_a_receiver_that_fails_times_out_then_recovers_gets_every_event_once_in_order(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    receiver.plan = [500, 503, "timeout", 500, "timeout"]  # then it recovers
    phones = [unique_phone(), unique_phone()]
    sent: dict[str, list[str]] = {}
    for i in range(3):
        for phone in phones:
            ids = await api.receive(body=f"message {i}", sender={"kind": "phone", "address": phone})
            sent.setdefault(ids["conversation_id"], []).append(ids["message_id"])

    await advance_until(
        runtime, clock, recorded(runtime, api, hook["webhook_id"], 6), timedelta(minutes=10), 40
    )
    expected = {
        f"msg_{row['id'].replace('-', '')}" for row in rows(runtime, api, hook["webhook_id"])
    }
    assert {d.id for d in receiver.unique()} == expected  # every event, once after dedupe
    # In log order per conversation, and never a later one before an earlier one got a 2xx.
    for conversation, messages in sent.items():
        received = [
            d.payload["data"]["message_id"]
            for d in receiver.unique()
            if d.payload["data"]["conversation_id"] == conversation
        ]
        assert received == messages
        done: set[str] = set()
        for request in receiver.requests:
            data = request.payload["data"]
            if data["conversation_id"] != conversation:
                continue
            index = messages.index(data["message_id"])
            assert set(messages[:index]) <= done, "a later event overtook an earlier one"
            if isinstance(request.answer, int) and 200 <= request.answer < 300:
                done.add(data["message_id"])
    assert receiver.unverified == 0
    # The attempt log has every failure with its status, latency and error.
    _, log = await api.get(f"/v1/webhooks/{hook['webhook_id']}/attempts?limit=200")
    outcomes = [(a["status_code"], a["error"]) for a in log["items"] if a["outcome"] == "retry"]
    assert (500, "http_500") in outcomes
    assert (503, "http_503") in outcomes
    assert (None, "timeout") in outcomes
    assert all(a["latency_ms"] >= 0 for a in log["items"])
    _, shown = await api.get(f"/v1/webhooks/{hook['webhook_id']}")
    assert shown["status"] == "active"
    assert shown["failing_since"] is None  # recovered
    assert shown["deliveries"] == {"pending": 0, "delivered": 6, "dead": 0, "suppressed": 0}


async def test_a_restart_in_the_middle_of_retries_loses_nothing(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver, settings: Settings
) -> None:
    hook = await subscribe(api, receiver, ["message.received", "conversation.opened"])
    receiver.default = 500  # down
    for i in range(4):
        await api.receive(body=f"before the restart {i}")

    def heads_failed() -> bool:
        # each conversation's first event failed; its message waits behind it
        found = rows(runtime, api, hook["webhook_id"])
        return len(found) == 8 and sum(r["attempts"] >= 1 for r in found) >= 4

    await until(runtime, heads_failed, what="a failed attempt of each conversation")
    await asyncio.to_thread(runtime.stop)  # the process goes away mid-retries
    assert receiver.deliveries == []

    receiver.default = 200  # the receiver is back
    clock.advance(timedelta(hours=1))
    restarted = build(settings, clock=clock)
    try:
        restarted.start()
        await until(restarted, recorded(restarted, api, hook["webhook_id"], 8), what="restarted")
        with restarted.readdb.read() as tx:
            found = outbox.list_deliveries(tx, str(api.tenant_id), hook["webhook_id"], limit=1000)
        assert {r["state"] for r in found} == {"delivered"}
        assert {f"msg_{r['id'].replace('-', '')}" for r in found} == {
            d.id for d in receiver.unique()
        }
        # the heads that failed before the restart were tried again after it
        assert sum(r["attempts"] >= 2 for r in found) >= 4
    finally:
        await asyncio.to_thread(restarted.close)


async def test_410_gone_disables_the_endpoint_and_tells_the_other_endpoints(
    api: Api, runtime: Runtime, receiver: Receiver
) -> None:
    watcher = await subscribe(api, receiver, ["webhook.disabled"], path="/other")
    gone = await subscribe(api, receiver, ["message.received"])
    receiver.plan = [410]
    await api.receive()
    await api.receive()

    def disabled() -> bool:
        return any(d.payload["type"] == "webhook.disabled" for d in receiver.unique())

    await until(runtime, disabled, what="webhook.disabled")
    notice = receiver.of_type("webhook.disabled")[0].payload["data"]
    assert notice == {"webhook_id": gone["webhook_id"], "reason": "gone"}
    _, shown = await api.get(f"/v1/webhooks/{gone['webhook_id']}")
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "gone")
    assert shown["deliveries"]["dead"] == 2  # the 410 and the one still waiting
    _, live = await api.get("/v1/metrics/live")
    assert live["webhooks"]["disabled"] == 1
    assert watcher["webhook_id"] != gone["webhook_id"]


async def test_sustained_failure_gives_up_after_a_day_disables_and_tells_the_admins(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    receiver.default = 500
    await api.receive()

    def dead() -> bool:
        return len(rows(runtime, api, hook["webhook_id"], "dead")) == 1

    await advance_until(runtime, clock, dead, timedelta(hours=2), 40)
    _, log = await api.get(f"/v1/webhooks/{hook['webhook_id']}/attempts?limit=200")
    attempts = sorted(a["attempt"] for a in log["items"])
    assert attempts == list(range(1, len(attempts) + 1))
    assert 8 <= len(attempts) <= 14  # exponential backoff over about a day
    first, last = log["items"][-1]["at"], log["items"][0]["at"]
    assert first < last
    _, letters = await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries?state=dead")
    assert [(d["state"], d["reason"]) for d in letters["items"]] == [("dead", "exhausted")]
    _, shown = await api.get(f"/v1/webhooks/{hook['webhook_id']}")
    assert (shown["status"], shown["disabled_reason"]) == ("disabled", "failing")
    _, live = await api.get("/v1/metrics/live")
    assert live["webhooks"] == {"disabled": 1, "failing": 0, "dead_letters": 1}


async def test_dead_letters_are_replayed_one_all_or_by_time_range(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    webhook = hook["webhook_id"]
    status, _ = await api.call("PATCH", f"/v1/webhooks/{webhook}", json={"enabled": False})
    assert status == 200
    for i in range(3):  # while it is off, what it misses becomes dead letters
        await api.receive(body=f"missed {i}")
    await settle(runtime)
    _, letters = await api.get(f"/v1/webhooks/{webhook}/deliveries?state=dead")
    assert [d["reason"] for d in letters["items"]] == ["endpoint_disabled"] * 3
    status, answer = await api.post(f"/v1/webhooks/{webhook}/replay", {"dead_letters": True})
    assert (status, answer["error"]) == (409, "conflict")  # enable it first

    status, _ = await api.call("PATCH", f"/v1/webhooks/{webhook}", json={"enabled": True})
    assert status == 200
    oldest = letters["items"][-1]
    status, answer = await api.post(
        f"/v1/webhooks/{webhook}/deliveries/{oldest['delivery_id']}/replay"
    )
    assert (status, answer["replayed"]) == (202, 1)
    await until(runtime, lambda: len(receiver.unique()) == 1, what="the replayed delivery")
    assert receiver.unique()[0].id == oldest["message_id"]

    status, answer = await api.post(f"/v1/webhooks/{webhook}/replay", {"dead_letters": True})
    assert (status, answer["replayed"]) == (202, 2)
    await until(runtime, recorded(runtime, api, webhook, 3), what="all dead letters")
    assert rows(runtime, api, webhook, "dead") == []

    # A range replay sends again what was delivered, with the same webhook-ids.
    since = (clock.now() - timedelta(hours=1)).isoformat()
    until_ = (clock.now() + timedelta(minutes=1)).isoformat()
    status, answer = await api.post(f"/v1/webhooks/{webhook}/replay", {"from": since, "to": until_})
    assert (status, answer["replayed"]) == (202, 3)
    await until(runtime, lambda: len(receiver.deliveries) == 6, what="the range replay")
    assert sorted(d.id for d in receiver.deliveries[3:]) == sorted(d.id for d in receiver.unique())
    assert receiver.unverified == 0


async def test_redirects_are_not_followed(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    receiver.plan = ["redirect"]
    await api.receive()

    def attempted() -> bool:
        return any(r["attempts"] >= 1 for r in rows(runtime, api, hook["webhook_id"]))

    await until(runtime, attempted, what="an attempt")
    _, log = await api.get(f"/v1/webhooks/{hook['webhook_id']}/attempts")
    assert [(a["status_code"], a["outcome"]) for a in log["items"]] == [(302, "retry")]
    assert receiver.redirected_to == 0
    await advance_until(
        runtime, clock, lambda: len(receiver.unique()) == 1, timedelta(minutes=1), 5
    )
    assert receiver.redirected_to == 0


async def test_a_restricted_contact_is_not_exported_to_integrations(
    api: Api, runtime: Runtime, receiver: Receiver
) -> None:
    await subscribe(api, receiver, ["message.received", "contact.restricted", "contact.updated"])
    phone = unique_phone()
    ids = await api.receive(sender={"kind": "phone", "address": phone})
    await until(runtime, lambda: len(receiver.unique()) == 1, what="the first message")
    status, _ = await api.post(f"/v1/contacts/{ids['contact_id']}/restriction", {})
    assert status == 200
    await api.receive(sender={"kind": "phone", "address": phone}, body="while restricted")
    await until(runtime, lambda: len(receiver.of_type("contact.restricted")) == 1, what="notice")
    await settle(runtime)
    await asyncio.sleep(0.3)
    wake(runtime)
    await asyncio.sleep(0.3)
    # Only the restriction itself was told (ids only): nothing else about the contact.
    assert [d.payload["type"] for d in receiver.unique()] == [
        "message.received",
        "contact.restricted",
    ]
    integration = api.as_token(await api.issue_token("integration"))
    contact = f"/v1/contacts/{ids['contact_id']}"
    assert (await integration.get(contact))[0] == 404
    assert (await integration.get(f"{contact}/timeline"))[0] == 404
    _, listing = await integration.get("/v1/contacts")
    assert ids["contact_id"] not in str(listing)
    status, _ = await integration.post("/v1/contacts/lookup", {"kind": "phone", "address": phone})
    assert status == 404
    status, answer = await integration.call("PATCH", contact, json={"tags": {"add": ["x"]}})
    assert (status, answer["error"]) == (409, "restricted")
    status, shown = await api.get(contact)  # the admin still sees it
    assert (status, shown["restricted"]) == (200, True)


async def test_erasure_is_told_and_pending_content_becomes_unreadable(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    await subscribe(
        api, receiver, ["message.received", "data.erased"], personal_fields=["message_content"]
    )
    receiver.default = 500  # the receiver is down while the erasure happens
    ids = await api.receive(body="soon to be forgotten")

    def attempted() -> bool:
        return bool(receiver.requests)

    await until(runtime, attempted, what="a first attempt")
    status, _ = await api.post(f"/v1/contacts/{ids['contact_id']}/erasure", {})
    assert status == 200
    receiver.default = 200
    clock.advance(timedelta(minutes=5))
    await until(runtime, lambda: len(receiver.unique()) == 3, what="message and erasures")
    message = receiver.of_type("message.received")[0].payload["data"]
    assert message["content"] == {"erased": True}
    assert b"soon to be forgotten" not in b"".join(d.body for d in receiver.requests[1:])
    erased = {d.payload["data"]["subject"] for d in receiver.of_type("data.erased")}
    assert erased == {"contact", "conversation"}


async def test_every_webhook_route_is_for_admins_only(api: Api, receiver: Receiver) -> None:
    hook = await subscribe(api, receiver, ["request.due"])
    w = hook["webhook_id"]
    _, agent = await api.post("/v1/agents", {"name": "Agent A"})
    tokens = [
        await api.issue_token("supervisor"),
        await api.issue_token("agent", agent_id=agent["agent_id"]),
        await api.issue_token("integration"),
    ]
    calls = [
        ("POST", "/v1/webhooks", {"url": receiver.url(), "event_types": ["request.due"]}),
        ("GET", "/v1/webhooks", None),
        ("GET", f"/v1/webhooks/{w}", None),
        ("PATCH", f"/v1/webhooks/{w}", {"description": "x"}),
        ("DELETE", f"/v1/webhooks/{w}", None),
        ("POST", f"/v1/webhooks/{w}/rotate-secret", {}),
        ("GET", f"/v1/webhooks/{w}/deliveries", None),
        ("GET", f"/v1/webhooks/{w}/deliveries/{w}", None),
        ("POST", f"/v1/webhooks/{w}/deliveries/{w}/replay", None),
        ("POST", f"/v1/webhooks/{w}/replay", {"dead_letters": True}),
        ("GET", f"/v1/webhooks/{w}/attempts", None),
    ]
    for token in tokens:
        for method, path, body in calls:
            status, answer = await api.as_token(token).call(method, path, json=body)
            assert (status, answer["error"]) == (403, "forbidden"), (method, path)


async def test_the_delivery_log_is_kept_for_the_configured_period(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    hook = await subscribe(api, receiver, ["message.received"])
    await api.receive()
    await until(runtime, recorded(runtime, api, hook["webhook_id"], 1), what="a delivery")
    _, log = await api.get(f"/v1/webhooks/{hook['webhook_id']}/attempts")
    assert len(log["items"]) == 1
    clock.advance(timedelta(days=runtime.settings.webhook_log_days, hours=2))
    await api.receive()
    await until(runtime, recorded(runtime, api, hook["webhook_id"], 1), what="a later delivery")
    _, log = await api.get(f"/v1/webhooks/{hook['webhook_id']}/attempts")
    _, kept = await api.get(f"/v1/webhooks/{hook['webhook_id']}/deliveries")
    assert len(log["items"]) == 1  # the old attempt is gone
    assert len(kept["items"]) == 1  # and so is the old delivery
    assert kept["items"][0]["message_id"] == receiver.unique()[1].id


async def test_a_data_subject_request_due_within_a_week_is_announced_once(
    api: Api, runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    await subscribe(api, receiver, ["request.due"])
    ids = await api.receive()
    received = (clock.now() - timedelta(days=25)).isoformat()
    status, request = await api.post(
        "/v1/requests",
        {"kind": "access", "contact_id": ids["contact_id"], "received_at": received},
    )
    assert status == 201
    assert runtime.webhooks is not None
    ticker = runtime.webhooks.requests_due
    assert await asyncio.to_thread(ticker.tick, clock.now()) == 1
    assert await asyncio.to_thread(ticker.tick, clock.now()) == 0
    await until(runtime, lambda: len(receiver.unique()) == 1, what="request.due")
    data = receiver.unique()[0].payload["data"]
    assert data == {"request_id": request["request_id"], "due_at": data["due_at"]}
    assert data["due_at"][:10] == request["due_at"][:10]


class FailingOnceSigner:
    """Signs like the real one, except that its first call raises (a bug in the path)."""

    def __init__(self) -> None:
        self.real = StandardWebhooksSigner()
        self.calls = 0

    def signature(self, secrets: Any, msg_id: str, timestamp: Any, body: str) -> str:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("a bug")
        return self.real.signature(secrets, msg_id, timestamp, body)


async def test_an_attempt_that_raises_is_a_failed_attempt_and_does_not_wedge_its_key(
    runtime: Runtime, clock: ShiftedClock, receiver: Receiver
) -> None:
    app = runtime.app
    tenant, _ = await asyncio.to_thread(app.register_tenant, "Acme")
    (hook, secret), _ = await asyncio.to_thread(
        app.run,
        lambda uow: app.create_webhook_in(uow, tenant, receiver.url(), ["contact.created"], [], ""),
    )
    receiver.secrets.append(secret)
    assert runtime.webhooks is not None
    services = runtime.webhooks
    dispatcher = WebhookDispatcher(
        runtime.make_app(),
        runtime.readdb.read,
        runtime.vault,
        AiohttpWebhookTransport(services.policy, connect_timeout=1, read_timeout=1),
        FailingOnceSigner(),
        shows=lambda position: runtime.feed.progress.shows("webhooks", position),
        wall_clock=SystemClock(),
    )
    try:
        await asyncio.to_thread(
            app.run,
            lambda uow: app.upsert_contact_in(
                uow,
                tenant,
                ContactChanges(identities=(Identity(IdentityKind.EMAIL, "a@b.example"),)),
            ),
        )
        await asyncio.to_thread(runtime.catch_up)
        assert await asyncio.to_thread(dispatcher.tick, clock.now()) == 1  # raised: failed
        clock.advance(timedelta(minutes=1))
        assert await asyncio.to_thread(dispatcher.tick, clock.now()) == 1  # sent
    finally:
        await asyncio.to_thread(dispatcher.close)
    assert len(receiver.unique()) == 1
    with runtime.readdb.read() as tx:
        log = outbox.list_attempts(tx, str(tenant), str(hook))
    assert [(a["attempt"], a["outcome"], a["error"]) for a in reversed(log)] == [
        (1, "retry", "internal:RuntimeError"),
        (2, "delivered", None),
    ]
