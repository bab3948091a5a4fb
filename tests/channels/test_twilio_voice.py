"""Programmable Voice: TwiML answers, call progress, voicemail recordings and transcripts."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds
from tests.channels.support import (
    ACCOUNT_SID,
    SHOP,
    configure_twilio,
    post_twilio,
    sms_params,
    wait_for_delivery,
)
from tests.helpers import Api, settle, unique_phone


def call_params(caller: str, call_sid: str, **extra: str) -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": SHOP,
        "CallStatus": "ringing",
        "Direction": "inbound",
        **extra,
    }


async def _call(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, caller: str, call_sid: str
) -> str:
    status, twiml = await post_twilio(
        client, runtime, api.tenant_id, "twilio/voice", call_params(caller, call_sid)
    )
    assert status == 200, twiml
    return twiml


async def _voice_conversation(api: Api) -> dict[str, Any]:
    _, listing = await api.get("/v1/conversations?channel=voice")
    [item] = listing["items"]
    _, detail = await api.get(f"/v1/conversations/{item['id']}")
    return dict(detail)


async def test_a_call_queues_for_agents_and_its_progress_and_reply_are_recorded(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(
        api, greeting="Welcome to Acme", queue_name="support", agents_online=True
    )
    caller = unique_phone()
    status, _ = await post_twilio(
        client, runtime, api.tenant_id, "twilio/sms", sms_params(caller, "hi", "SM" + "1" * 32)
    )
    assert status == 200
    call_sid = f"CA{secrets.token_hex(16)}"
    twiml = await _call(api, client, runtime, caller, call_sid)
    assert "<Say>Welcome to Acme</Say>" in twiml
    assert "<Enqueue>support</Enqueue>" in twiml
    assert "<Record" not in twiml

    for params in (
        {"CallStatus": "in-progress"},
        {"CallStatus": "completed", "CallDuration": "42"},
        {"CallStatus": "completed", "CallDuration": "42"},  # Twilio retried: recorded once
    ):
        status, _ = await post_twilio(
            client,
            runtime,
            api.tenant_id,
            "twilio/voice/status",
            {"CallSid": call_sid, "AccountSid": ACCOUNT_SID, **params},
        )
        assert status == 204
    detail = await _voice_conversation(api)
    _, sms = await api.get("/v1/conversations?channel=sms")
    assert detail["contact"]["id"] == sms["items"][0]["contact"]["id"]  # same person
    [call] = detail["calls"]
    assert (call["status"], call["duration_seconds"]) == ("completed", 42)
    assert [e["status"] for e in call["events"]] == ["answered", "completed"]

    # An agent's reply to a caller goes by SMS from the number they called.
    _, reply = await api.post(f"/v1/conversations/{detail['id']}/replies", {"body": "Call back?"})
    await wait_for_delivery(api, detail["id"], reply["message_id"], "sent")
    [sent] = clouds.sent("twilio")
    assert (sent.form["To"], sent.form["From"]) == (caller, SHOP)
    callback = sent.form["StatusCallback"]
    status, _ = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/sms/status",
        {"MessageSid": sent.answer["sid"], "MessageStatus": "delivered", "AccountSid": ACCOUNT_SID},
        query=callback.split("twilio/sms/status", 1)[1],
    )
    assert status == 204
    await wait_for_delivery(api, detail["id"], reply["message_id"], "delivered")


async def test_without_agents_a_call_goes_to_voicemail_with_recording_and_transcript(
    api: Api, client: TestClient[Any, Any], runtime: Runtime
) -> None:
    await configure_twilio(api, agents_online=False, voicemail_prompt="Leave a message")
    call_sid = f"CA{secrets.token_hex(16)}"
    twiml = await _call(api, client, runtime, unique_phone(), call_sid)
    assert "<Say>Leave a message</Say>" in twiml
    base = f"{runtime.settings.base_url}/v1/channels/{api.tenant_id}"
    assert 'transcribe="true"' in twiml
    assert f'transcribeCallback="{base}/twilio/voice/transcription"' in twiml
    assert f'recordingStatusCallback="{base}/twilio/voice/recording"' in twiml
    assert "<Enqueue" not in twiml

    recording = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "RecordingSid": "RE" + "a" * 32,
        "RecordingUrl": f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Recordings/RE1",
        "RecordingStatus": "completed",
        "RecordingDuration": "17",
    }
    transcription = {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "TranscriptionSid": "TR" + "b" * 32,
        "TranscriptionText": "Hi, this is Carla, please call me back about my refund.",
        "TranscriptionStatus": "completed",
        "RecordingSid": "RE" + "a" * 32,
    }
    for path, params in (
        ("twilio/voice/recording", recording),
        ("twilio/voice/transcription", transcription),
    ):
        status, _ = await post_twilio(client, runtime, api.tenant_id, path, params)
        assert status == 204
    await settle(runtime)
    before = runtime.app.recorder.max_notification_id()
    for path, params in (
        ("twilio/voice/recording", recording),
        ("twilio/voice/transcription", transcription),
    ):  # retries change nothing
        status, _ = await post_twilio(client, runtime, api.tenant_id, path, params)
        assert status == 204
    assert runtime.app.recorder.max_notification_id() == before

    detail = await _voice_conversation(api)
    [call] = detail["calls"]
    assert call["recording"] == {
        "sid": "RE" + "a" * 32,
        "url": recording["RecordingUrl"],
        "duration_seconds": 17,
    }
    assert call["transcript"] == transcription["TranscriptionText"]
