"""SMS and WhatsApp through Twilio, end to end against a local Twilio stand-in."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp.test_utils import TestClient

from contact_centre.clock import ShiftedClock
from contact_centre.contacts import Contact
from contact_centre.deliveries import delivery_id
from contact_centre.privacy import Scope
from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds
from tests.channels.support import (
    ACCOUNT_SID,
    SHOP,
    configure_twilio,
    delivery_of,
    post_twilio,
    sms_params,
    wait_for_delivery,
)
from tests.helpers import Api, unique_phone


def sid() -> str:
    return f"SM{secrets.token_hex(16)}"


async def _inbound(api: Api, client: TestClient[Any, Any], runtime: Runtime, **kw: Any) -> str:
    """Send one inbound message; return its conversation id."""
    params = sms_params(kw.pop("sender", unique_phone()), kw.pop("body", "Hello"), sid(), **kw)
    status, _ = await post_twilio(client, runtime, api.tenant_id, "twilio/sms", params)
    assert status == 200
    status, listing = await api.get("/v1/conversations")
    return str(listing["items"][0]["id"])


async def _status_callback(
    client: TestClient[Any, Any], runtime: Runtime, api: Api, callback: str, **params: str
) -> int:
    query = callback.split("twilio/sms/status", 1)[1]
    status, _ = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/sms/status",
        {"AccountSid": ACCOUNT_SID, **params},
        query=query,
    )
    return status


async def test_an_sms_reaches_the_inbox_and_the_reply_goes_back_with_delivery_state(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api)
    customer = unique_phone()
    status, twiml = await post_twilio(
        client, runtime, api.tenant_id, "twilio/sms", sms_params(customer, "Where is it?", sid())
    )
    assert status == 200
    assert "<Response" in twiml
    assert "<Message" not in twiml

    status, listing = await api.get("/v1/conversations?channel=sms")
    assert status == 200
    [item] = listing["items"]
    assert item["last_message"]["preview"] == "Where is it?"
    conversation = item["id"]

    status, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Today!"})
    assert status == 201
    delivery = await wait_for_delivery(api, conversation, reply["message_id"], "sent")
    assert delivery["provider_status"] == "queued"
    [sent] = clouds.sent("twilio")
    assert sent.path == f"/twilio/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
    assert sent.headers["Authorization"].startswith("Basic ")  # the SDK's own auth
    assert (sent.form["To"], sent.form["From"], sent.form["Body"]) == (customer, SHOP, "Today!")
    callback = sent.form["StatusCallback"]
    assert callback.startswith(f"{runtime.settings.base_url}/v1/channels/{api.tenant_id}/")

    # Twilio reports progress on the status callback URL it was given, out of order too.
    message_sid = sent.answer["sid"]
    for reported in ("delivered", "sent"):
        status = await _status_callback(
            client, runtime, api, callback, MessageSid=message_sid, MessageStatus=reported
        )
        assert status == 204
    delivery = await wait_for_delivery(api, conversation, reply["message_id"], "delivered")
    assert (delivery["provider_status"], delivery["attempts"]) == ("delivered", 1)
    await asyncio.sleep(0.5)
    assert len(clouds.sent("twilio")) == 1  # sent exactly once


async def test_whatsapp_media_and_addresses_thread_to_the_same_contact_as_sms(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api)
    number = unique_phone()
    sms_conversation = await _inbound(api, client, runtime, sender=number, body="sms first")
    params = sms_params(
        f"whatsapp:{number}",
        "a photo",
        sid(),
        To=f"whatsapp:{SHOP}",
        NumMedia="2",
        MediaUrl0="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM1/Media/ME1",
        MediaContentType0="image/jpeg",
        MediaUrl1="https://api.twilio.com/2010-04-01/Accounts/AC/Messages/MM1/Media/ME2",
        MediaContentType1="application/pdf",
        ProfileName="Bilal",
    )
    status, _ = await post_twilio(client, runtime, api.tenant_id, "twilio/sms", params)
    assert status == 200
    _, listing = await api.get("/v1/conversations?channel=whatsapp")
    [item] = listing["items"]
    _, detail = await api.get(f"/v1/conversations/{item['id']}")
    _, sms_detail = await api.get(f"/v1/conversations/{sms_conversation}")
    assert detail["contact"]["id"] == sms_detail["contact"]["id"]
    [message] = detail["messages"]
    assert message["from"]["address"] == number
    assert [(a["content_type"], a["url"].rsplit("/", 1)[1]) for a in message["attachments"]] == [
        ("image/jpeg", "ME1"),
        ("application/pdf", "ME2"),
    ]

    status, reply = await api.post(f"/v1/conversations/{item['id']}/replies", {"body": "Nice"})
    assert status == 201
    await wait_for_delivery(api, item["id"], reply["message_id"], "sent")
    [sent] = clouds.sent("twilio")
    assert (sent.form["To"], sent.form["From"]) == (f"whatsapp:{number}", f"whatsapp:{SHOP}")
    status = await _status_callback(
        client,
        runtime,
        api,
        sent.form["StatusCallback"],
        MessageSid=sent.answer["sid"],
        MessageStatus="read",  # WhatsApp reports when the customer has read it
    )
    assert status == 204
    await wait_for_delivery(api, item["id"], reply["message_id"], "read")


async def test_stop_start_and_help_record_consent_and_stop_replies(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api)
    number = unique_phone()
    conversation = await _inbound(api, client, runtime, sender=number, body="hi")
    status, twiml = await post_twilio(
        client, runtime, api.tenant_id, "twilio/sms", sms_params(number, "help", sid())
    )
    assert status == 200
    assert "<Message>Reply STOP to stop messages from us" in twiml
    status, _ = await post_twilio(
        client, runtime, api.tenant_id, "twilio/sms", sms_params(number, " Stop ", sid())
    )
    assert status == 200
    _, detail = await api.get(f"/v1/conversations/{conversation}")
    contact = runtime.app.repository.get(UUID(detail["contact"]["id"]))
    assert isinstance(contact, Contact)
    assert contact.opted_out == {"sms"}

    # A reply to an opted-out number is never handed to Twilio.
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Sorry"})
    failed = await wait_for_delivery(api, conversation, reply["message_id"], "failed")
    assert failed["error_code"] == "opted_out"
    assert clouds.sent("twilio") == []

    status, _ = await post_twilio(
        client, runtime, api.tenant_id, "twilio/sms", sms_params(number, "START", sid())
    )
    assert status == 200
    events = [type(e).__name__ for e in runtime.app.events.get(contact.id)]
    assert events[-2:] == ["OptedOut", "OptedIn"]
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Welcome"})
    await wait_for_delivery(api, conversation, reply["message_id"], "sent")
    assert [r.form["Body"] for r in clouds.sent("twilio")] == ["Welcome"]


async def test_transient_failures_are_retried_with_backoff_and_errors_keep_their_code(
    api: Api,
    client: TestClient[Any, Any],
    runtime: Runtime,
    clouds: FakeClouds,
    clock: ShiftedClock,
) -> None:
    await configure_twilio(api)
    conversation = await _inbound(api, client, runtime)
    busy = {"code": 20429, "message": "Too Many Requests", "status": 429}
    clouds.failures["twilio"].append((429, busy))
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Again"})

    async def retrying() -> dict[str, Any] | None:
        found = await delivery_of(api, conversation, reply["message_id"])
        return found if found and found["error_code"] == "20429" else None

    waiting = await _eventually(retrying)
    assert waiting["status"] == "pending"  # waiting for its backoff, not sent twice
    assert len(clouds.sent("twilio")) == 1
    clock.advance(timedelta(seconds=3))  # past the first backoff (2 s)
    sent = await wait_for_delivery(api, conversation, reply["message_id"], "sent")
    assert sent["attempts"] == 2
    assert len(clouds.sent("twilio")) == 2

    # A permanent refusal fails at once with Twilio's error code.
    invalid = {"code": 21211, "message": "Invalid 'To' Phone Number", "status": 400}
    clouds.failures["twilio"].append((400, invalid))
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Nope"})
    failed = await wait_for_delivery(api, conversation, reply["message_id"], "failed")
    assert (failed["error_code"], failed["attempts"]) == ("21211", 1)

    # A status callback reports a carrier failure with its ErrorCode.
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Hm"})
    await wait_for_delivery(api, conversation, reply["message_id"], "sent")
    last = clouds.sent("twilio")[-1]
    status = await _status_callback(
        client,
        runtime,
        api,
        last.form["StatusCallback"],
        MessageSid=last.answer["sid"],
        MessageStatus="undelivered",
        ErrorCode="30003",
    )
    assert status == 204
    failed = await wait_for_delivery(api, conversation, reply["message_id"], "failed")
    assert (failed["error_code"], failed["provider_status"]) == ("30003", "undelivered")


async def test_an_attempt_lost_in_a_crash_is_resolved_by_the_status_callback_not_resent(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api)
    conversation = await _inbound(api, client, runtime)
    assert runtime.tickers is not None
    runtime.tickers.stop()  # the delivery worker is "down" while the reply is written
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Hi"})
    did = delivery_id(UUID(reply["message_id"]))
    app = runtime.app

    async def requested() -> bool:
        return await delivery_of(api, conversation, reply["message_id"]) is not None

    assert await _eventually(requested)
    # The worker records its intent and hands the message over, then dies before it can
    # record Twilio's answer.
    job, _ = await asyncio.to_thread(app.run, lambda uow: app.start_delivery_in(uow, did))
    assert job is not None
    sender = runtime.channels.delivery.senders["twilio"]  # type: ignore[union-attr]
    result = await asyncio.to_thread(sender.send, job)
    assert result.ok
    assert (await delivery_of(api, conversation, reply["message_id"]))["status"] == "sending"

    runtime.tickers.start()  # back up: an intent without an outcome is not sent again
    await asyncio.sleep(1.0)
    assert len(clouds.sent("twilio")) == 1
    [sent] = clouds.sent("twilio")
    status = await _status_callback(
        client,
        runtime,
        api,
        sent.form["StatusCallback"],
        MessageSid=sent.answer["sid"],
        MessageStatus="delivered",
    )
    assert status == 204
    await wait_for_delivery(api, conversation, reply["message_id"], "delivered")
    assert len(clouds.sent("twilio")) == 1


async def _eventually(probe: Any) -> Any:
    from tests.channels.support import eventually

    found = await eventually(probe)
    assert found
    return found


async def test_an_opt_out_outlives_the_erasure_of_the_contact(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_twilio(api)
    number = unique_phone()
    conversation = await _inbound(api, client, runtime, sender=number, body="STOP")
    _, detail = await api.get(f"/v1/conversations/{conversation}")
    contact_id = UUID(detail["contact"]["id"])
    runtime.vault.destroy(
        [
            Scope.contact(api.tenant_id, contact_id).id,
            Scope.conversation(api.tenant_id, UUID(conversation)).id,
        ]
    )
    runtime.app.repository.cache.get(contact_id, evict=True)  # type: ignore[union-attr]
    contact = runtime.app.repository.get(contact_id)
    assert isinstance(contact, Contact)
    assert contact.opted_out == {"sms"}
    _, erased = await api.get(f"/v1/conversations/{conversation}")
    assert erased["contact"]["erased"] is True
