"""What the channels store — provider secrets, numbers, transcripts, recording URLs,
visitor IPs and cookies, delivery routes — is never at rest or logged in clear."""

from __future__ import annotations

import logging
import secrets
from typing import Any

import psycopg
import pytest
from aiohttp.test_utils import TestClient

from infra.config import Settings
from infra.runtime import Runtime
from tests.channels.support import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    configure,
    configure_twilio,
    post_twilio,
    sms_params,
    wait_for_delivery,
)
from tests.channels.test_webchat import ORIGIN, START, connect, receive
from tests.helpers import Api, settle
from tests.scan import needles, scan_files, scan_postgres

CALLER = "+447700900555"
TRANSCRIPT = "Hi it is Zebedee about parcel QUINCE-7731"
RECORDING = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/REzebedee"
VISITOR_IP = "203.0.113.77"
SLACK_SECRET = "slack-signing-secret-ZEBEDEE-1"
BOT_TOKEN = "xoxb-ZEBEDEE-bot-token-2"
SMTP_PASSWORD = "smtp-password-ZEBEDEE-3"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.with_overrides(trusted_proxies=("127.0.0.1/32",))


async def test_channel_data_is_sealed_in_every_store_and_absent_from_logs(
    api: Api,
    client: TestClient[Any, Any],
    runtime: Runtime,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    caplog.set_level(logging.DEBUG)
    await configure_twilio(api, agents_online=False)
    await configure(
        api,
        "slack",
        {"signing_secret": SLACK_SECRET, "bot_token": BOT_TOKEN, "channel_ids": ["C0SHARED1"]},
    )
    await configure(
        api,
        "email",
        {
            "addresses": ["help@acme.example"],
            "smtp_host": "127.0.0.1",
            "smtp_password": SMTP_PASSWORD,
        },
    )
    key = secrets.token_urlsafe(24)
    await configure(api, "webchat", {"widget_key": key, "allowed_origins": [ORIGIN]})

    status, _ = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/sms",
        sms_params(CALLER, "my parcel QUINCE-7731 is late", "SM" + "7" * 32),
    )
    assert status == 200
    call = {"CallSid": "CA" + "7" * 32, "AccountSid": ACCOUNT_SID, "From": CALLER}
    status, _ = await post_twilio(
        client, runtime, api.tenant_id, "twilio/voice", {**call, "To": "+442071838750"}
    )
    assert status == 200
    for path, extra in (
        ("twilio/voice/recording", {"RecordingSid": "RE" + "7" * 32, "RecordingUrl": RECORDING}),
        (
            "twilio/voice/transcription",
            {
                "TranscriptionSid": "TR" + "7" * 32,
                "TranscriptionText": TRANSCRIPT,
                "TranscriptionStatus": "completed",
            },
        ),
    ):
        status, _ = await post_twilio(client, runtime, api.tenant_id, path, {**call, **extra})
        assert status == 204
    ws = await connect(client, key, **{"X-Forwarded-For": VISITOR_IP})
    visitor = (await receive(ws, "welcome"))["visitor_id"]
    await ws.send_json({**START, "email": None})
    started = await receive(ws, "started")
    await ws.close()
    _, sms = await api.get("/v1/conversations?channel=sms")
    conversation = sms["items"][0]["id"]
    _, reply = await api.post(f"/v1/conversations/{conversation}/replies", {"body": "ok QUINCE"})
    await wait_for_delivery(api, conversation, reply["message_id"], "sent")
    await settle(runtime)
    # The API shows them to an authorised caller...
    _, detail = await api.get(f"/v1/conversations/{started['conversation_id']}")
    assert detail["visitor_network"]["ip"] == VISITOR_IP

    patterns = needles(
        CALLER,
        CALLER[3:],
        "QUINCE-7731",
        TRANSCRIPT,
        "REzebedee",
        VISITOR_IP,
        visitor,
        AUTH_TOKEN,
        SLACK_SECRET,
        BOT_TOKEN,
        SMTP_PASSWORD,
    )
    # ...but no store holds them in clear, and no log line mentions them.
    if settings.database_url is None:
        assert {p.name for p in settings.data_dir.iterdir()} >= {"events.sqlite", "vault.sqlite"}
        assert scan_files(settings.data_dir, patterns) == []
    else:
        hits, tables = scan_postgres(settings.database_url, patterns)
        assert {"rm_deliveries", "rm_channel_settings", "rm_call_events"} <= set(tables)
        assert hits == []
        server = request.getfixturevalue("postgres_server")
        if server.data_dir is not None:
            with psycopg.connect(settings.database_url, autocommit=True) as conn:
                conn.execute("CHECKPOINT")
            assert scan_files(server.data_dir, patterns) == []
    logged = caplog.text.encode()
    assert [p for p in patterns if p in logged] == []
