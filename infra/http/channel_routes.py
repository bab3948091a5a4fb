"""Channel webhooks (``/v1/channels/{tenant_id}/...``), channel settings and the webchat
blocklist.

Every webhook: find the tenant's provider settings (404 when none), verify the
provider's signature over the public URL it called (403), parse (4xx), then write through
the writer. Providers retry, and every write here is idempotent on the provider's ids.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any
from uuid import UUID

from aiohttp import web

from channels import email as email_channel
from channels import meta, slack, twilio
from channels.base import ProviderConfig, WebhookError
from contact_centre.application import Principal, Receive
from contact_centre.blocks import BlockKind
from contact_centre.channel_settings import Provider
from contact_centre.deliveries import DeliveryStatus
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.tenancy import Role
from infra.channel_config import SCHEMAS, parse_provider, validate
from infra.channels import ChannelServices
from infra.http.auth import STAFF, authenticate, require_role
from infra.http.errors import ApiError
from infra.http.keys import AUTH, RUNTIME
from infra.http.schemas import read_json, reject_unknown
from infra.http.views import Opener, iso
from infra.runtime import Runtime
from projections import channel_activity, inbox

ADMIN = frozenset({Role.ADMIN})
INGEST = frozenset({Role.ADMIN, Role.INTEGRATION})
FORM = "application/x-www-form-urlencoded"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


def services(rt: Runtime) -> ChannelServices:
    assert rt.channels is not None, "the runtime was built without channel services"
    return rt.channels


def webhook(handler: Handler) -> Handler:
    """Map an adapter's refusal (:class:`WebhookError`) to its JSON problem."""

    @wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except WebhookError as error:
            raise ApiError(error.status, error.code, error.detail) from None

    return wrapped


def _tenant(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["tenant_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such tenant") from None


async def _config(rt: Runtime, tenant_id: UUID, provider: str) -> ProviderConfig:
    config = await asyncio.to_thread(services(rt).configs.get, tenant_id, provider)
    if config is None:
        raise ApiError(404, "not_configured", f"{provider} is not configured for this tenant")
    return config


def public_url(rt: Runtime, request: web.Request) -> str:
    """The URL the provider called, as it signed it: behind a proxy that is
    ``CC_PUBLIC_BASE_URL`` plus the path; otherwise the URL as this server saw it."""
    if rt.settings.public_base_url:
        return rt.settings.public_base_url.rstrip("/") + request.path_qs
    return str(request.url)


async def _form(request: web.Request) -> Any:
    if request.content_type != FORM:
        raise ApiError(415, "unsupported_media_type", f"send the body as {FORM}")
    return await request.post()


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/xml")


# -- Twilio -------------------------------------------------------------------------------
async def _twilio(request: web.Request) -> tuple[Runtime, ProviderConfig, Any]:
    rt = _rt(request)
    config = await _config(rt, _tenant(request), twilio.PROVIDER)
    params = await _form(request)
    signature = request.headers.get("X-Twilio-Signature", "")
    twilio.verify(config, public_url(rt, request), params, signature)
    return rt, config, params


@webhook
async def twilio_sms(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    inbound = twilio.parse_message(config, params, rt.clock.now())
    await rt.writer.run(
        lambda uow: rt.app.receive_with_consent_in(
            uow, inbound.interaction, inbound.keyword, inbound.opted_out
        )
    )
    if inbound.keyword in twilio.HELP:
        return _xml(twilio.help_reply(config))
    return _xml(twilio.empty_messaging_reply())


@webhook
async def twilio_sms_status(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    status = twilio.parse_message_status(params)
    raw = request.query.get("delivery")
    try:
        delivery = UUID(raw) if raw else None
    except ValueError:
        raise ApiError(400, "malformed_payload", "delivery is not an id") from None
    target = status.status
    if target is not None:
        await rt.writer.run(
            lambda uow: rt.app.report_delivery_status_in(
                uow,
                config.tenant_id,
                twilio.PROVIDER,
                status.message_sid,
                target,
                status.provider_status,
                status.error_code,
                delivery,
            )
        )
    return web.Response(status=204)


@webhook
async def twilio_voice(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    interaction = twilio.parse_call(config, params, rt.clock.now())
    await rt.writer.run(Receive(rt.app, interaction))
    online = twilio.agents_online(config)
    return _xml(twilio.call_answer(config, services(rt).options, online))


@webhook
async def twilio_voice_connect(request: web.Request) -> web.Response:
    """Twilio fetches this when a queued call is redirected to the agent who accepted it."""
    await _twilio(request)  # verifies the signature
    try:
        agent_id = UUID(request.query.get("agent", ""))
    except ValueError:
        raise WebhookError(400, "malformed_payload", "agent is not an id") from None
    return _xml(twilio.connect_twiml(agent_id))


@webhook
async def twilio_voice_status(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    call = twilio.parse_call_status(params)
    await rt.writer.run(
        lambda uow: rt.app.record_call_status_in(
            uow,
            config.tenant_id,
            twilio.PROVIDER,
            call.call_sid,
            call.status,
            call.duration_seconds,
        )
    )
    return web.Response(status=204)


@webhook
async def twilio_voice_recording(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    rec = twilio.parse_recording(params)
    await rt.writer.run(
        lambda uow: rt.app.attach_recording_in(
            uow,
            config.tenant_id,
            twilio.PROVIDER,
            rec.call_sid,
            rec.recording_sid,
            rec.url,
            rec.duration_seconds,
        )
    )
    return web.Response(status=204)


@webhook
async def twilio_voice_transcription(request: web.Request) -> web.Response:
    rt, config, params = await _twilio(request)
    text = twilio.parse_transcription(params)
    if text.completed and text.text.strip():
        await rt.writer.run(
            lambda uow: rt.app.attach_transcript_in(
                uow,
                config.tenant_id,
                twilio.PROVIDER,
                text.call_sid,
                text.transcription_sid,
                text.text,
            )
        )
    return web.Response(status=204)


# -- Slack --------------------------------------------------------------------------------
@webhook
async def slack_events(request: web.Request) -> web.Response:
    rt = _rt(request)
    config = await _config(rt, _tenant(request), slack.PROVIDER)
    body = await request.read()
    slack.verify(
        config,
        body,
        request.headers.get("X-Slack-Request-Timestamp", ""),
        request.headers.get("X-Slack-Signature", ""),
    )
    event = slack.parse(config, body)
    if event.challenge is not None:
        return web.json_response({"challenge": event.challenge})
    interaction, echo = event.interaction, event.echo_ref
    if interaction is not None:
        await rt.writer.run(Receive(rt.app, interaction))
    elif echo is not None:
        # Our bot's reply showing up in the channel: Slack has it.
        await rt.writer.run(
            lambda uow: rt.app.report_delivery_status_in(
                uow,
                config.tenant_id,
                slack.PROVIDER,
                echo,
                DeliveryStatus.DELIVERED,
                "posted",
                None,
            )
        )
    return web.json_response({"ok": True})


# -- Meta ---------------------------------------------------------------------------------
@webhook
async def meta_subscribe(request: web.Request) -> web.Response:
    rt = _rt(request)
    config = await _config(rt, _tenant(request), meta.PROVIDER)
    query = request.query
    meta.verify_subscription(config, query.get("hub.mode", ""), query.get("hub.verify_token", ""))
    challenge = query.get("hub.challenge", "")
    if not challenge or len(challenge) > 200:
        raise ApiError(400, "malformed_payload", "hub.challenge is missing")
    return web.Response(text=challenge, content_type="text/plain")


@webhook
async def meta_webhook(request: web.Request) -> web.Response:
    rt = _rt(request)
    config = await _config(rt, _tenant(request), meta.PROVIDER)
    body = await request.read()
    meta.verify(config, body, request.headers.get("X-Hub-Signature-256", ""))
    batch = meta.parse(config, body)
    tenant_id = config.tenant_id

    def record(uow: Any) -> None:
        for interaction in batch.interactions:
            Receive(rt.app, interaction)(uow)
        for report in batch.statuses:
            rt.app.report_delivery_status_in(
                uow, tenant_id, meta.PROVIDER, report.mid, report.status, "delivered", None
            )

    if batch.interactions or batch.statuses:
        await rt.writer.run(record)
    return web.json_response({"ok": True})


# -- email --------------------------------------------------------------------------------
async def ingest_email(
    rt: Runtime, config: ProviderConfig, raw: bytes, envelope_recipient: str | None = None
) -> tuple[int, dict[str, Any]]:
    """Record one raw email for the tenant of ``config``: (HTTP-like status, answer)."""
    parsed = email_channel.parse(raw, rt.clock.now())
    tenant_id = config.tenant_id
    bounce = parsed.bounce
    if bounce is not None:
        target = bounce.status
        recorded = False
        if target is not None:
            recorded, _ = await rt.writer.run(
                lambda uow: rt.app.report_delivery_status_in(
                    uow,
                    tenant_id,
                    email_channel.PROVIDER,
                    bounce.original_message_id,
                    target,
                    bounce.action,
                    bounce.code,
                )
            )
        return 200, {"bounce": True, "recorded": recorded}
    if parsed.automatic is not None:
        return 202, {"ignored": parsed.automatic}
    recipient = envelope_recipient or email_channel.tenant_recipient(config, parsed.recipients)
    if recipient is None:
        raise ValidationError("the message is not addressed to any of this tenant's addresses")
    interaction = parsed.interaction(config, recipient)
    result, _ = await rt.writer.run(
        lambda uow: rt.app.receive_email_in(uow, interaction, parsed.references)
    )
    return (200 if result.duplicate else 201), {
        "conversation_id": str(result.conversation_id),
        "contact_id": str(result.contact_id),
        "message_id": str(result.message_id),
        "duplicate": result.duplicate,
    }


@webhook
async def email_raw(request: web.Request) -> web.Response:
    rt = _rt(request)
    tenant_id = _tenant(request)
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, INGEST)
    if principal.tenant_id != tenant_id:
        raise ApiError(404, "not_found", "no such tenant")
    config = await _config(rt, tenant_id, "email")
    raw = await request.read()
    status, answer = await ingest_email(rt, config, raw)
    return web.json_response(answer, status=status)


# -- settings -----------------------------------------------------------------------------
async def _admin(request: web.Request) -> Principal:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, ADMIN)
    return principal


def _provider(request: web.Request) -> Provider:
    try:
        return parse_provider(request.match_info["provider"])
    except ValidationError as error:
        raise ApiError(404, "not_found", error.detail) from None


async def put_channel_settings(request: web.Request) -> web.Response:
    tenant_id = (await _admin(request)).tenant_id
    rt = _rt(request)
    provider = _provider(request)
    doc = await read_json(request)
    public, secrets = validate(provider, doc)
    required = SCHEMAS[provider].required_secrets
    _, position = await rt.writer.run(
        lambda uow: rt.app.configure_channel_in(uow, tenant_id, provider, public, secrets, required)
    )
    if position is not None:
        await rt.feed.progress.wait(
            "channel_settings", position, rt.settings.projection_wait_ms / 1000
        )
    shown = await asyncio.to_thread(services(rt).configs.shown, tenant_id, provider)
    return web.json_response({"provider": provider.value, "settings": shown})


async def get_channel_settings(request: web.Request) -> web.Response:
    tenant_id = (await _admin(request)).tenant_id
    rt = _rt(request)
    provider = _provider(request)
    shown = await asyncio.to_thread(services(rt).configs.shown, tenant_id, provider)
    if shown is None:
        raise NotFoundError(f"{provider.value} is not configured")
    return web.json_response({"provider": provider.value, "settings": shown})


# -- webchat blocklist and agent typing ---------------------------------------------------
async def post_block(request: web.Request) -> web.Response:
    principal = await _admin(request)
    tenant_id = principal.tenant_id
    rt = _rt(request)
    doc = await read_json(request)
    reject_unknown(doc, {"ip", "visitor_id", "reason"})
    if ("ip" in doc) == ("visitor_id" in doc):
        raise ValidationError("give exactly one of ip or visitor_id")
    reason = doc.get("reason") or ""
    if not isinstance(reason, str):
        raise ValidationError("reason must be a string")
    if "ip" in doc:
        try:
            value = str(ipaddress.ip_address(str(doc["ip"])))
        except ValueError:
            raise ValidationError("ip must be an IPv4 or IPv6 address") from None
        kind = BlockKind.IP
    else:
        value, kind = str(doc["visitor_id"]), BlockKind.VISITOR
    actor = principal.actor
    block_id, position = await rt.writer.run(
        lambda uow: rt.app.block_visitor_in(uow, tenant_id, kind, value, reason, actor)
    )
    if position is not None:
        await rt.feed.progress.wait(
            "channel_activity", position, rt.settings.projection_wait_ms / 1000
        )
    await services(rt).hub.close_blocked(tenant_id, kind.value, value)  # chatting right now
    return web.json_response({"block_id": str(block_id)}, status=201)


async def list_blocks(request: web.Request) -> web.Response:
    tenant_id = (await _admin(request)).tenant_id
    rt = _rt(request)

    def query() -> list[dict[str, Any]]:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            rows = channel_activity.list_blocks(tx, str(tenant_id))
        items = []
        for row in rows:
            opener = Opener(rt.vault)
            item: dict[str, Any] = {
                "block_id": row["id"],
                "kind": row["kind"],
                "value": opener.text(row["value"]),
                "reason": row["reason"],
                "created_at": iso(row["created_at"]),
                "lifted_at": iso(row["lifted_at"]),
            }
            if opener.erased:
                item["erased"] = True
            items.append(item)
        return items

    return web.json_response({"items": await asyncio.to_thread(query)})


async def delete_block(request: web.Request) -> web.Response:
    principal = await _admin(request)
    tenant_id = principal.tenant_id
    rt = _rt(request)
    try:
        block_id = UUID(request.match_info["block_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such block") from None
    _, position = await rt.writer.run(
        lambda uow: rt.app.lift_block_in(uow, tenant_id, block_id, principal.actor)
    )
    if position is not None:
        await rt.feed.progress.wait(
            "channel_activity", position, rt.settings.projection_wait_ms / 1000
        )
    return web.Response(status=204)


async def post_typing(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, STAFF)
    rt = _rt(request)
    try:
        conversation_id = UUID(request.match_info["conversation_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such conversation") from None
    doc = await read_json(request)
    reject_unknown(doc, {"typing"})
    typing = doc.get("typing")
    if not isinstance(typing, bool):
        raise ValidationError("typing must be true or false")

    def exists() -> bool:
        with rt.readdb.read() as tx:
            row = inbox.get_conversation(tx, str(principal.tenant_id), str(conversation_id))
        return row is not None

    if not await asyncio.to_thread(exists):
        raise NotFoundError(f"conversation {conversation_id} not found")
    frame = {"type": "typing", "from": "agent", "typing": typing}
    reached = await services(rt).hub.push_async(conversation_id, frame)
    return web.json_response({"conversation_id": str(conversation_id), "pushed_to": reached})


def setup_channel_routes(app: web.Application) -> None:
    from infra.http.webchat import visitor_socket

    base = "/v1/channels/{tenant_id}"
    app.router.add_post(f"{base}/twilio/voice", twilio_voice)
    app.router.add_post(f"{base}/twilio/voice/status", twilio_voice_status)
    app.router.add_post(f"{base}/twilio/voice/connect", twilio_voice_connect)
    app.router.add_post(f"{base}/twilio/voice/recording", twilio_voice_recording)
    app.router.add_post(f"{base}/twilio/voice/transcription", twilio_voice_transcription)
    app.router.add_post(f"{base}/twilio/sms", twilio_sms)
    app.router.add_post(f"{base}/twilio/sms/status", twilio_sms_status)
    app.router.add_post(f"{base}/slack/events", slack_events)
    app.router.add_get(f"{base}/meta/webhook", meta_subscribe)
    app.router.add_post(f"{base}/meta/webhook", meta_webhook)
    app.router.add_post(f"{base}/email/raw", email_raw)
    app.router.add_put("/v1/channel-settings/{provider}", put_channel_settings)
    app.router.add_get("/v1/channel-settings/{provider}", get_channel_settings)
    app.router.add_post("/v1/webchat/blocks", post_block)
    app.router.add_get("/v1/webchat/blocks", list_blocks)
    app.router.add_delete("/v1/webchat/blocks/{block_id}", delete_block)
    app.router.add_post("/v1/conversations/{conversation_id}/typing", post_typing)
    app.router.add_get("/v1/webchat/{widget_key}/ws", visitor_socket)
