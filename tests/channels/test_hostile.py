"""Hostile input to every adapter: forged, missing and stale signatures, the wrong tenant,
malformed and oversized payloads, duplicates. Each gets a 4xx (or an SMTP refusal) and
nothing is written."""

from __future__ import annotations

import asyncio
import io
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from aiohttp.test_utils import TestClient
from slack_sdk.signature import SignatureVerifier

from infra.config import Settings
from infra.runtime import Runtime
from projections import deliveries
from tests.channels.fakes import FakeClouds, twilio_signature
from tests.channels.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    SHOP,
    configure_twilio,
    eventually,
    post_twilio,
    sms_params,
)
from tests.channels.test_meta import APP_SECRET, configure_meta, message, messaging, post_meta
from tests.channels.test_slack import SIGNING_SECRET, configure_slack, message_event, post_slack
from tests.helpers import Api, settle, unique_phone


class Writes:
    """Asserts that a request wrote nothing to the event store."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    async def none(self, call: Callable[[], Awaitable[tuple[int, Any]]], status: int) -> Any:
        await settle(self.runtime)
        before = self.runtime.app.recorder.max_notification_id()
        got, body = await call()
        assert got == status, body
        assert self.runtime.app.recorder.max_notification_id() == before
        return body


async def test_twilio_refuses_forged_missing_and_cross_tenant_signatures_and_bad_forms(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_twilio(api)
    other = await Api.for_new_tenant(client, runtime, "Other")
    await configure_twilio(other)
    writes = Writes(runtime)
    good = sms_params(unique_phone(), "hi", "SM" + "f" * 32)

    def sms(params: dict[str, str], **kw: Any) -> Callable[[], Awaitable[tuple[int, Any]]]:
        return lambda: post_twilio(
            client, runtime, kw.pop("tenant", api.tenant_id), "twilio/sms", params, **kw
        )

    await writes.none(sms(good, token="not-the-auth-token"), 403)
    await writes.none(sms(good, signature=""), 403)
    await writes.none(sms({**good, "Body": "tampered"}, signature=_sig_of(runtime, api, good)), 403)
    # Signed by tenant A's Twilio for A's URL, replayed against tenant B's URL.
    await writes.none(sms(good, tenant=other.tenant_id, signature=_sig_of(runtime, api, good)), 403)
    # Another Twilio account's request, even if it could sign for us.
    await writes.none(sms({**good, "AccountSid": "AC" + "9" * 32}), 403)
    await writes.none(sms(good, tenant=uuid.uuid4()), 404)  # no such tenant / not configured
    await writes.none(sms({k: v for k, v in good.items() if k != "MessageSid"}), 400)
    await writes.none(sms({**good, "NumMedia": "lots"}), 400)
    await writes.none(sms({**good, "NumMedia": "1"}), 400)  # MediaUrl0 missing
    await writes.none(sms({**good, "To": "+15005550006"}), 422)  # not this tenant's number
    await writes.none(sms({**good, "From": "call me"}), 422)
    for path in ("twilio/voice", "twilio/voice/status", "twilio/sms/status"):
        await writes.none(
            lambda path=path: post_twilio(client, runtime, api.tenant_id, path, good, token="x"),
            403,
        )
    await writes.none(
        lambda: post_twilio(
            client,
            runtime,
            api.tenant_id,
            "twilio/voice/status",
            {"CallSid": "CA" + "0" * 32, "CallStatus": "completed", "AccountSid": ACCOUNT_SID},
        ),
        404,  # a status for a call we never saw
    )
    await writes.none(
        lambda: post_twilio(
            client,
            runtime,
            api.tenant_id,
            "twilio/voice/status",
            {"CallSid": "CA1", "CallStatus": "exploded", "AccountSid": ACCOUNT_SID},
        ),
        400,
    )

    async def as_json() -> tuple[int, Any]:
        async with client.post(f"/v1/channels/{api.tenant_id}/twilio/sms", json=good) as resp:
            return resp.status, await resp.json()

    await writes.none(as_json, 415)

    async def oversized() -> tuple[int, Any]:
        big = {**good, "Body": "x" * (runtime.settings.max_body_bytes + 10)}
        data = io.BytesIO(urlencode(big).encode())  # a stream: a large body must not block
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        url = f"/v1/channels/{api.tenant_id}/twilio/sms"
        async with client.post(url, data=data, headers=headers) as resp:
            return resp.status, await resp.json()

    await writes.none(oversized, 413)
    # The real thing, twice: the retry records nothing new.
    assert (await sms(good)())[0] == 200
    await writes.none(sms(good), 200)
    call = {
        "CallSid": "CA" + "f" * 32,
        "AccountSid": ACCOUNT_SID,
        "From": unique_phone(),
        "To": SHOP,
        "CallStatus": "ringing",
    }

    def voice() -> Awaitable[tuple[int, Any]]:
        return post_twilio(client, runtime, api.tenant_id, "twilio/voice", call)

    assert (await voice())[0] == 200
    await writes.none(voice, 200)  # Twilio retried the incoming-call webhook


def _sig_of(runtime: Runtime, api: Api, params: dict[str, str]) -> str:
    url = f"{runtime.settings.base_url}/v1/channels/{api.tenant_id}/twilio/sms"
    return twilio_signature(AUTH_TOKEN, url, params)


async def test_slack_refuses_forged_stale_and_cross_tenant_requests_and_bad_payloads(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_slack(api)
    other = await Api.for_new_tenant(client, runtime, "Other")
    writes = Writes(runtime)
    doc = message_event(f"{int(time.time())}.000100", "hello")
    tenant = api.tenant_id

    await writes.none(lambda: post_slack(client, tenant, doc, secret="wrong-secret"), 403)
    await writes.none(lambda: post_slack(client, tenant, doc, signature="v0=" + "0" * 64), 403)
    stale = int(time.time()) - 6 * 60  # outside Slack's 5-minute replay window
    await writes.none(lambda: post_slack(client, tenant, doc, timestamp=stale), 403)
    await writes.none(lambda: post_slack(client, tenant, doc, timestamp=0), 403)

    async def unsigned() -> tuple[int, Any]:
        async with client.post(f"/v1/channels/{tenant}/slack/events", json=doc) as resp:
            return resp.status, await resp.json()

    await writes.none(unsigned, 403)
    await writes.none(lambda: post_slack(client, other.tenant_id, doc), 404)  # B has no Slack
    await configure_slack(other)
    other_secret = "another-tenants-secret-0123"
    await other.call(
        "PUT",
        "/v1/channel-settings/slack",
        json={"signing_secret": other_secret, "channel_ids": ["C0SHARED1"]},
    )
    await writes.none(lambda: post_slack(client, other.tenant_id, doc), 403)  # A's secret
    await writes.none(lambda: post_slack(client, tenant, None, raw=b"{not json"), 400)
    await writes.none(lambda: post_slack(client, tenant, None, raw=b"[1, 2]"), 400)
    no_ts = {**doc, "event": {k: v for k, v in doc["event"].items() if k != "ts"}}
    await writes.none(lambda: post_slack(client, tenant, no_ts), 400)
    foreign = message_event(f"{int(time.time())}.000200", "elsewhere", channel="C0OTHER")
    await writes.none(lambda: post_slack(client, tenant, foreign), 200)  # not a shared channel

    async def oversized() -> tuple[int, Any]:
        body = json.dumps({**doc, "pad": "x" * runtime.settings.max_body_bytes}).encode()
        ts = str(int(time.time()))
        sig = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
        headers = {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": sig}
        async with client.post(
            f"/v1/channels/{tenant}/slack/events", data=io.BytesIO(body), headers=headers
        ) as resp:
            return resp.status, await resp.json()

    await writes.none(oversized, 413)


async def test_meta_refuses_forged_and_cross_tenant_signatures_and_bad_payloads(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_meta(api)
    other = await Api.for_new_tenant(client, runtime, "Other")
    await other.call(
        "PUT",
        "/v1/channel-settings/meta",
        json={
            "app_secret": "other-app-secret-0123456789",
            "page_access_token": "EAAB-other",
            "verify_token": "other-verify",
            "page_ids": ["104000000000001"],
        },
    )
    writes = Writes(runtime)
    doc = messaging(message("m_hostile", "hello"))
    body = json.dumps(doc).encode()
    tenant = api.tenant_id
    await writes.none(lambda: post_meta(client, tenant, doc, signature=""), 403)
    await writes.none(lambda: post_meta(client, tenant, doc, signature="sha256=" + "0" * 64), 403)
    await writes.none(lambda: post_meta(client, tenant, doc, signature="sha1=abc"), 403)
    tampered = json.dumps(messaging(message("m_hostile", "tampered"))).encode()
    await writes.none(
        lambda: post_meta(client, tenant, None, raw=tampered, signature=_meta_sig(body)), 403
    )
    await writes.none(lambda: post_meta(client, other.tenant_id, doc), 403)  # signed for A
    await writes.none(lambda: post_meta(client, uuid.uuid4(), doc), 404)
    for raw in (b"{", b'{"object": "page"}', b'{"object": "telegram", "entry": []}'):
        await writes.none(
            lambda raw=raw: post_meta(client, tenant, None, raw=raw, signature=_meta_sig(raw)), 400
        )
    no_mid = messaging({**message("x", "no id"), "message": {"text": "no id"}})
    await writes.none(lambda: post_meta(client, tenant, no_mid), 400)
    assert (await post_meta(client, tenant, doc))[0] == 200
    await writes.none(lambda: post_meta(client, tenant, doc), 200)  # Meta's retry


def _meta_sig(body: bytes) -> str:
    from tests.channels.test_meta import sign

    return sign(body, APP_SECRET)


async def test_raw_email_needs_a_token_of_that_tenant_and_a_real_message(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    status, _ = await api.call(
        "PUT", "/v1/channel-settings/email", json={"addresses": ["help@acme.example"]}
    )
    assert status == 200
    other = await Api.for_new_tenant(client, runtime, "Other")
    writes = Writes(runtime)
    raw = (
        b"From: Ann <ann@example.org>\r\nTo: help@acme.example\r\nSubject: Hi\r\n"
        b"Message-ID: <hostile-1@example.org>\r\n\r\nHello\r\n"
    )
    path = f"/v1/channels/{api.tenant_id}/email/raw"
    headers = {"Content-Type": "message/rfc822"}

    async def post(as_api: Api, data: bytes, **extra: str) -> tuple[int, Any]:
        stream = io.BytesIO(data)
        return await as_api.call("POST", path, data=stream, headers={**headers, **extra})

    await writes.none(lambda: post(other, raw), 404)  # another tenant's token
    await writes.none(lambda: post(api, raw, Authorization="Bearer cc_forged"), 401)
    agent = api.as_token(await api.issue_token("supervisor"))
    await writes.none(lambda: post(agent, raw), 403)
    await writes.none(lambda: post(api, b""), 400)
    await writes.none(lambda: post(api, b"no headers, no sender\r\n"), 400)
    huge = raw + b"x" * (runtime.settings.max_body_bytes + 10)
    await writes.none(lambda: post(api, huge), 413)
    assert (await post(api, raw))[0] == 201
    await writes.none(lambda: post(api, raw), 200)  # a resend of the same Message-ID


async def test_channel_settings_validate_and_never_show_secrets(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    writes = Writes(runtime)
    put = "/v1/channel-settings/twilio"

    def call(doc: Any, provider: str = "twilio") -> Callable[[], Awaitable[tuple[int, Any]]]:
        return lambda: api.call("PUT", f"/v1/channel-settings/{provider}", json=doc)

    base = {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN, "phone_numbers": [SHOP]}
    await writes.none(call({**base, "auth_token": None}), 422)  # a required secret
    await writes.none(call({**base, "account_sid": "nope"}), 422)
    await writes.none(call({**base, "phone_numbers": ["call me"]}), 422)
    await writes.none(call({**base, "colour": "red"}), 422)
    await writes.none(call(base, provider="fax"), 404)
    await writes.none(call({"widget_key": "short", "allowed_origins": []}, "webchat"), 422)
    origins = {"widget_key": "k" * 24, "allowed_origins": ["https://a.example/path"]}
    await writes.none(call(origins, "webchat"), 422)
    status, body = await api.call("PUT", put, json=base)
    assert status == 200
    assert body["settings"]["auth_token"] == "****" + AUTH_TOKEN[-4:]
    # An update without the secret keeps it; GET never shows it.
    status, body = await api.call(
        "PUT", put, json={k: v for k, v in base.items() if k != "auth_token"}
    )
    assert status == 200
    status, shown = await api.get(put)
    assert shown["settings"]["auth_token"] == "****" + AUTH_TOKEN[-4:]
    assert AUTH_TOKEN not in json.dumps(shown)
    # A widget key belongs to one tenant only.
    key = {"widget_key": "w" * 24, "allowed_origins": ["https://a.example"]}
    assert (await api.call("PUT", "/v1/channel-settings/webchat", json=key))[0] == 200
    other = await Api.for_new_tenant(client, runtime, "Other")
    conflict = lambda: other.call("PUT", "/v1/channel-settings/webchat", json=key)  # noqa: E731
    await writes.none(conflict, 409)


class TestBehindAProxy:
    """Production runs behind a proxy: Twilio signs the public URL, not ours."""

    @pytest.fixture
    def settings(self, settings: Settings) -> Settings:
        return settings.with_overrides(public_base_url="https://cc.example.com/")

    async def test_signatures_are_checked_against_the_public_base_url(
        self, api: Api, client: TestClient[Any, Any], runtime: Runtime
    ) -> None:
        await configure_twilio(api)
        params = sms_params(unique_phone(), "hello", "SM" + "e" * 32)
        path = f"/v1/channels/{api.tenant_id}/twilio/sms"
        local = twilio_signature(
            AUTH_TOKEN, f"http://127.0.0.1:{runtime.settings.port}{path}", params
        )
        public = twilio_signature(AUTH_TOKEN, f"https://cc.example.com{path}", params)
        writes = Writes(runtime)
        await writes.none(
            lambda: post_twilio(
                client, runtime, api.tenant_id, "twilio/sms", params, signature=local
            ),
            403,
        )
        status, _ = await post_twilio(
            client, runtime, api.tenant_id, "twilio/sms", params, signature=public
        )
        assert status == 200


async def test_replies_of_a_terminated_tenant_are_settled_not_sent(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api)
    assert runtime.tickers is not None
    runtime.tickers.stop()
    params = sms_params(unique_phone(), "hello", "SM" + "d" * 32)
    assert (await post_twilio(client, runtime, api.tenant_id, "twilio/sms", params))[0] == 200
    _, listing = await api.get("/v1/conversations")
    conversation = listing["items"][0]["id"]
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "bye"})

    def row() -> dict[str, Any] | None:
        with runtime.readdb.read() as tx:
            rows = deliveries.for_messages(tx, str(api.tenant_id), [reply["message_id"]])
        return rows.get(reply["message_id"])

    assert await eventually(lambda: asyncio.to_thread(row))  # requested, not yet attempted
    await asyncio.to_thread(
        runtime.app.run, lambda uow: runtime.app.terminate_tenant_in(uow, api.tenant_id, 10)
    )
    runtime.tickers.start()

    def failed() -> bool:
        found = row()
        return bool(
            found and (found["status"], found["error_code"]) == ("failed", "tenant_inactive")
        )

    assert await eventually(lambda: asyncio.to_thread(failed))
    assert clouds.sent("twilio") == []
