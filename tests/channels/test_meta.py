"""Meta Messenger and Instagram: Graph webhooks in, the Send API out."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds
from tests.channels.support import configure, wait_for_delivery
from tests.helpers import Api

APP_SECRET = "meta-app-secret-0123456789"
PAGE_TOKEN = "EAAB-page-access-token-0123456789"
VERIFY_TOKEN = "my-verify-token-0123456789"
PAGE = "104000000000001"
PSID = "6000000000000042"


async def configure_meta(api: Api) -> None:
    await configure(
        api,
        "meta",
        {
            "app_secret": APP_SECRET,
            "page_access_token": PAGE_TOKEN,
            "verify_token": VERIFY_TOKEN,
            "page_ids": [PAGE],
        },
    )


def sign(body: bytes, secret: str = APP_SECRET) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def messaging(*items: dict[str, Any], obj: str = "page", page: str = PAGE) -> dict[str, Any]:
    return {
        "object": obj,
        "entry": [{"id": page, "time": int(time.time() * 1000), "messaging": list(items)}],
    }


def message(mid: str, text: str, **extra: Any) -> dict[str, Any]:
    return {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE},
        "timestamp": int(time.time() * 1000),
        "message": {"mid": mid, "text": text, **extra},
    }


async def post_meta(
    client: TestClient[Any, Any],
    tenant: Any,
    doc: Any,
    *,
    signature: str | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    body = raw if raw is not None else json.dumps(doc).encode()
    headers = {"Content-Type": "application/json"}
    sig = sign(body) if signature is None else signature
    if sig:
        headers["X-Hub-Signature-256"] = sig
    async with client.post(
        f"/v1/channels/{tenant}/meta/webhook", data=body, headers=headers
    ) as resp:
        return resp.status, await resp.json()


async def test_the_subscription_challenge_needs_the_verify_token(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await configure_meta(api)
    path = f"/v1/channels/{api.tenant_id}/meta/webhook"
    query = {"hub.mode": "subscribe", "hub.challenge": "1158201444", "hub.verify_token": ""}
    async with client.get(path, params={**query, "hub.verify_token": VERIFY_TOKEN}) as resp:
        assert (resp.status, await resp.text()) == (200, "1158201444")
    async with client.get(path, params={**query, "hub.verify_token": "guess"}) as resp:
        assert resp.status == 403


async def test_messenger_and_instagram_messages_reach_the_inbox_and_replies_the_send_api(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_meta(api)
    image = {"type": "image", "payload": {"url": "https://scontent.example/photo.jpg"}}
    doc = messaging(
        message("m_first", "Is the blue jacket in stock?", attachments=[image]),
        {
            "sender": {"id": PSID},
            "recipient": {"id": PAGE},
            "timestamp": int(time.time() * 1000),
            "postback": {"mid": "m_postback", "title": "Talk to a person", "payload": "HUMAN"},
        },
        message("m_echo", "page's own message", is_echo=True),
    )
    status, body = await post_meta(client, api.tenant_id, doc)
    assert (status, body) == (200, {"ok": True})
    insta = messaging(message("m_insta", "From Instagram"), obj="instagram")
    assert (await post_meta(client, api.tenant_id, insta))[0] == 200

    _, listing = await api.get("/v1/conversations?channel=social")
    assert len(listing["items"]) == 2  # Messenger and Instagram threads
    messenger = next(i for i in listing["items"] if i["message_count"] == 2)
    _, detail = await api.get(f"/v1/conversations/{messenger['id']}")
    assert [m["body"] for m in detail["messages"]] == [
        "Is the blue jacket in stock?",
        "Talk to a person",
    ]
    assert detail["messages"][0]["attachments"][0]["url"] == image["payload"]["url"]
    assert detail["messages"][0]["from"]["address"] == f"messenger:{PSID}"

    status, reply = await api.post(f"/v1/conversations/{messenger['id']}/replies", {"body": "Yes"})
    assert status == 201
    await wait_for_delivery(api, messenger["id"], reply["message_id"], "sent")
    [sent] = clouds.sent("meta")
    assert sent.path == f"/graph/v21.0/{PAGE}/messages"
    assert sent.headers["Authorization"] == f"Bearer {PAGE_TOKEN}"
    assert sent.json == {
        "recipient": {"id": PSID},
        "messaging_type": "RESPONSE",
        "message": {"text": "Yes"},
    }

    # Meta's delivery webhook names the message ids it delivered.
    receipt = {
        "sender": {"id": PSID},
        "recipient": {"id": PAGE},
        "timestamp": int(time.time() * 1000),
        "delivery": {"mids": [sent.answer["message_id"]], "watermark": int(time.time() * 1000)},
    }
    assert (await post_meta(client, api.tenant_id, messaging(receipt)))[0] == 200
    await wait_for_delivery(api, messenger["id"], reply["message_id"], "delivered")


async def test_graph_errors_keep_their_code_and_rate_limits_are_retried(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_meta(api)
    assert (await post_meta(client, api.tenant_id, messaging(message("m_1", "hi"))))[0] == 200
    _, listing = await api.get("/v1/conversations?channel=social")
    conversation = listing["items"][0]["id"]
    error = {"error": {"message": "(#551) This person isn't available", "code": 551}}
    clouds.failures["meta"].append((400, error))
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "Hello?"})
    failed = await wait_for_delivery(api, conversation, reply["message_id"], "failed")
    assert (failed["error_code"], failed["attempts"]) == ("551", 1)
