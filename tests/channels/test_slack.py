"""Slack Events API: a shared customer channel, one conversation per Slack thread."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp.test_utils import TestClient
from slack_sdk.signature import SignatureVerifier

from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds
from tests.channels.support import configure, wait_for_delivery
from tests.helpers import Api

SIGNING_SECRET = "slack-signing-secret-0123456789"
BOT_TOKEN = "xoxb-test-bot-token-0123456789"
CHANNEL = "C0SHARED1"


async def configure_slack(api: Api) -> None:
    await configure(
        api,
        "slack",
        {"signing_secret": SIGNING_SECRET, "bot_token": BOT_TOKEN, "channel_ids": [CHANNEL]},
    )


def message_event(ts: str, text: str, *, thread_ts: str | None = None, **extra: Any) -> dict:
    event: dict[str, Any] = {
        "type": "message",
        "channel": CHANNEL,
        "user": "U024BE7LH",
        "text": text,
        "ts": ts,
        "channel_type": "channel",
        **extra,
    }
    if thread_ts:
        event["thread_ts"] = thread_ts
    return {
        "token": "legacy-verification-token",
        "team_id": "T0TEAM",
        "api_app_id": "A0APP",
        "type": "event_callback",
        "event_id": f"Ev{ts.replace('.', '')}",
        "event_time": int(float(ts)),
        "event": event,
    }


async def post_slack(
    client: TestClient[Any, Any],
    tenant: Any,
    doc: Any,
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
    signature: str | None = None,
    headers: dict[str, str] | None = None,
    raw: bytes | None = None,
) -> tuple[int, Any]:
    body = raw if raw is not None else json.dumps(doc).encode()
    ts = str(timestamp if timestamp is not None else int(time.time()))
    sig = signature or SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)
    all_headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": sig,
        **(headers or {}),
    }
    async with client.post(
        f"/v1/channels/{tenant}/slack/events", data=body, headers=all_headers
    ) as resp:
        return resp.status, await resp.json()


async def test_url_verification_answers_the_challenge(
    api: Api, client: TestClient[Any, Any]
) -> None:
    await configure_slack(api)
    doc = {
        "token": "t",
        "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        "type": "url_verification",
    }
    status, body = await post_slack(client, api.tenant_id, doc)
    assert (status, body) == (200, {"challenge": doc["challenge"]})


async def test_a_slack_thread_becomes_a_conversation_and_replies_go_into_the_thread(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_slack(api)
    root = "1700000000.000100"
    for doc in (
        message_event(root, "Our bulk order must ship by Friday"),
        message_event("1700000050.000200", "It's order 5120", thread_ts=root),
    ):
        status, body = await post_slack(client, api.tenant_id, doc)
        assert (status, body) == (200, {"ok": True})
    status, body = await post_slack(  # another thread: another conversation
        client, api.tenant_id, message_event("1700000090.000300", "Unrelated question")
    )
    assert status == 200
    _, listing = await api.get("/v1/conversations?channel=social")
    assert len(listing["items"]) == 2
    thread = next(i for i in listing["items"] if i["message_count"] == 2)
    _, detail = await api.get(f"/v1/conversations/{thread['id']}")
    assert [m["body"] for m in detail["messages"]] == [
        "Our bulk order must ship by Friday",
        "It's order 5120",
    ]
    assert detail["messages"][0]["from"]["address"] == "slack:U024BE7LH"

    status, reply = await api.post(f"/v1/conversations/{thread['id']}/replies", {"body": "Yes!"})
    assert status == 201
    await wait_for_delivery(api, thread["id"], reply["message_id"], "sent")
    [posted] = clouds.sent("slack")
    assert posted.path == "/slack/api/chat.postMessage"
    assert posted.headers["Authorization"] == f"Bearer {BOT_TOKEN}"
    assert posted.json == {"channel": CHANNEL, "text": "Yes!", "thread_ts": root}

    # Slack sends our bot's message back as an event: that is its delivery receipt.
    echo = message_event(
        posted.answer["ts"], "Yes!", thread_ts=root, bot_id="B0BOT", user="U0BOTUSER"
    )
    status, _ = await post_slack(client, api.tenant_id, echo)
    assert status == 200
    delivered = await wait_for_delivery(api, thread["id"], reply["message_id"], "delivered")
    assert delivered["provider_status"] == "posted"
    _, detail = await api.get(f"/v1/conversations/{thread['id']}")
    assert len(detail["messages"]) == 3  # the echo is not a customer message


async def test_a_slack_retry_records_nothing_new(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_slack(api)
    doc = message_event("1700000000.000100", "hello")
    assert (await post_slack(client, api.tenant_id, doc))[0] == 200
    before = runtime.app.recorder.max_notification_id()
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    assert (await post_slack(client, api.tenant_id, doc, headers=retry))[0] == 200
    assert runtime.app.recorder.max_notification_id() == before
