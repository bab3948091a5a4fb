"""Helpers shared by the channel tests."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.channels.fakes import twilio_signature
from tests.helpers import Api

ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "twilio-auth-token-0123456789"
SHOP = "+442071838750"


async def configure(api: Api, provider: str, settings: dict[str, Any]) -> dict[str, Any]:
    status, body = await api.call("PUT", f"/v1/channel-settings/{provider}", json=settings)
    assert status == 200, body
    return dict(body)


async def configure_twilio(api: Api, **voice: Any) -> None:
    settings: dict[str, Any] = {
        "account_sid": ACCOUNT_SID,
        "auth_token": AUTH_TOKEN,
        "phone_numbers": [SHOP],
    }
    if voice:
        settings["voice"] = voice
    await configure(api, "twilio", settings)


def base(runtime: Runtime) -> str:
    return runtime.settings.base_url


async def post_twilio(
    client: TestClient[Any, Any],
    runtime: Runtime,
    tenant: Any,
    path: str,
    params: dict[str, str],
    *,
    token: str = AUTH_TOKEN,
    signature: str | None = None,
    query: str = "",
) -> tuple[int, str]:
    """POST a form the way Twilio does, signed over the public URL."""
    url_path = f"/v1/channels/{tenant}/{path}{query}"
    sig = (
        signature
        if signature is not None
        else twilio_signature(token, base(runtime) + url_path, params)
    )
    async with client.post(url_path, data=params, headers={"X-Twilio-Signature": sig}) as resp:
        return resp.status, await resp.text()


def sms_params(sender: str, body: str, sid: str, **extra: str) -> dict[str, str]:
    return {
        "MessageSid": sid,
        "SmsSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "To": SHOP,
        "Body": body,
        "NumMedia": "0",
        **extra,
    }


async def eventually(probe: Any, timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll the async ``probe`` until it returns something truthy (bounded)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await probe()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(interval)


async def delivery_of(api: Api, conversation_id: str, message_id: str) -> dict[str, Any] | None:
    status, body = await api.get(f"/v1/conversations/{conversation_id}")
    assert status == 200, body
    for message in body["messages"]:
        if message["id"] == message_id:
            return message.get("delivery")  # type: ignore[no-any-return]
    return None


async def wait_for_delivery(
    api: Api, conversation_id: str, message_id: str, status: str, timeout: float = 10.0
) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        found = await delivery_of(api, conversation_id, message_id)
        return found if found and found["status"] == status else None

    found = await eventually(probe, timeout)
    assert found, await delivery_of(api, conversation_id, message_id)
    return dict(found)
