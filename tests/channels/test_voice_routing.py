"""Voice routing: an offered call reaches the agent's device through TwiML; a caller who
hangs up while waiting is recorded as abandoned."""

from __future__ import annotations

import secrets
from typing import Any

from aiohttp.test_utils import TestClient

from infra.runtime import Runtime
from tests.channels.fakes import FakeClouds
from tests.channels.support import ACCOUNT_SID, SHOP, configure_twilio, post_twilio
from tests.helpers import Api, eventually, unique_phone


def call_params(caller: str, call_sid: str, status: str = "ringing") -> dict[str, str]:
    return {
        "CallSid": call_sid,
        "AccountSid": ACCOUNT_SID,
        "From": caller,
        "To": SHOP,
        "CallStatus": status,
        "Direction": "inbound",
    }


async def _voice_conversation(api: Api) -> dict[str, Any]:
    async def find() -> dict[str, Any] | None:
        _, listing = await api.get("/v1/conversations?channel=voice")
        placed = [c for c in listing["items"] if c["queue_id"] is not None]
        return placed[0] if placed else None  # once the placement workflow queued it

    return dict(await eventually(find))


async def test_an_accepted_call_is_connected_to_the_agents_device(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api, queue_name="support")
    _, queue = await api.post("/v1/queues", {"name": "Phones", "channels": ["voice"]})
    _, agent = await api.post("/v1/agents", {"name": "Ann Agent"})
    agent_id = agent["agent_id"]
    agent_api = api.as_token(await api.issue_token("agent", agent_id=agent_id))
    assert (await agent_api.post(f"/v1/agents/{agent_id}/login"))[0] == 200
    call_sid = "CA" + secrets.token_hex(16)
    status, twiml = await post_twilio(
        client, runtime, api.tenant_id, "twilio/voice", call_params(unique_phone(), call_sid)
    )
    assert status == 200
    assert "<Enqueue>support</Enqueue>" in twiml
    conversation = await _voice_conversation(api)
    assert conversation["queue_id"] == queue["queue_id"]

    async def offered() -> bool:
        _, desk = await api.get("/v1/routing/agents")
        return bool(desk["items"][0]["offers"])

    await eventually(offered)
    status, _ = await agent_api.post(f"/v1/conversations/{conversation['id']}/accept")
    assert status == 200

    async def redirected() -> Any:
        calls = [r for r in clouds.sent("twilio") if "/Calls/" in r.path]
        return calls[0] if calls else None

    update = await eventually(redirected)
    assert update.path.endswith(f"/Accounts/{ACCOUNT_SID}/Calls/{call_sid}.json")
    url = update.form["Url"]
    assert url.endswith(f"/v1/channels/{api.tenant_id}/twilio/voice/connect?agent={agent_id}")
    # Twilio then fetches the connect TwiML, signed like every webhook
    status, connect = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/voice/connect",
        call_params("+447700900001", call_sid, "in-progress"),
        query=f"?agent={agent_id}",
    )
    assert status == 200
    assert f"<Dial><Client>agent-{agent_id}</Client></Dial>" in connect
    forged, _ = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/voice/connect",
        call_params("+447700900001", call_sid, "in-progress"),
        query=f"?agent={agent_id}",
        signature="forged",
    )
    assert forged == 403


async def test_a_caller_hanging_up_while_waiting_is_abandoned(
    api: Api, client: TestClient[Any, Any], runtime: Runtime, clouds: FakeClouds
) -> None:
    await configure_twilio(api, queue_name="support")
    await api.post("/v1/queues", {"name": "Phones", "channels": ["voice"]})
    call_sid = "CA" + secrets.token_hex(16)
    caller = unique_phone()
    await post_twilio(client, runtime, api.tenant_id, "twilio/voice", call_params(caller, call_sid))
    conversation = await _voice_conversation(api)
    assert conversation["waiting_since"] is not None
    status, _ = await post_twilio(
        client,
        runtime,
        api.tenant_id,
        "twilio/voice/status",
        {**call_params(caller, call_sid, "completed"), "CallDuration": "31"},
    )
    assert status == 204

    async def abandoned() -> bool:
        _, live = await api.get("/v1/metrics/intervals")
        return any(row["abandoned"] == 1 for row in live["items"])

    await eventually(abandoned)
    _, detail = await api.get(f"/v1/conversations/{conversation['id']}")
    assert detail["waiting_since"] is None
