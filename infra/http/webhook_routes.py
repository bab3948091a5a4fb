"""Outbound webhooks (role: admin): subscriptions, secret rotation, the delivery log, the
dead-letter view and replays (docs/webhooks.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from contact_centre.application import Principal
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.tenancy import Role
from contact_centre.webhooks import ReplayScope
from infra.db import Tx
from infra.http.paging import decode_cursor, encode_cursor, page_limit
from infra.http.privacy_routes import _caller, _path_uuid
from infra.http.schemas import get_str, parse_time, read_json, reject_unknown, req_str
from infra.http.views import Opener, iso
from infra.runtime import Runtime
from projections import webhooks as outbox
from projections.base import loads, micros
from projections.webhooks import WebhooksProjection
from workflows.webhooks import message_id

ADMIN = frozenset({Role.ADMIN})
STATES = ("pending", "delivered", "dead", "suppressed")
DEFAULT_GRACE_HOURS = 24


async def _admin(request: web.Request) -> tuple[Principal, Runtime]:
    return await _caller(request, ADMIN)


async def _read(rt: Runtime, fn: Any, *args: Any) -> Any:
    def run() -> Any:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            return fn(tx, *args)

    return await asyncio.to_thread(run)


async def _settle(rt: Runtime, position: int | None) -> None:
    if position is not None:
        timeout = rt.settings.projection_wait_ms / 1000
        await rt.feed.progress.wait(WebhooksProjection.name, position, timeout)


def _string_list(doc: dict[str, Any], name: str, *, required: bool) -> list[str] | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValidationError(f"{name} must be a list of strings")
    return list(value)


def render_subscription(
    row: dict[str, Any], rt: Runtime, counts: dict[str, int] | None = None
) -> dict[str, Any]:
    opener = Opener(rt.vault)
    until = row["previous_valid_until"]
    rotating = row["previous_secret"] is not None and until is not None
    return {
        "webhook_id": row["id"],
        "url": opener.text(row["url"]),
        "event_types": loads(row["event_types"]),
        "personal_fields": loads(row["personal_fields"]),
        "description": row["description"],
        "status": row["status"],
        "disabled_reason": row["disabled_reason"],
        "disabled_at": iso(row["disabled_at"]),
        "failing_since": iso(row["failing_since"]),
        "last_success_at": iso(row["last_success_at"]),
        "previous_secret_valid_until": iso(until) if rotating else None,
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
        "deliveries": {state: (counts or {}).get(state, 0) for state in STATES},
    }


def render_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery_id": row["id"],
        "webhook_id": row["subscription_id"],
        "message_id": message_id(str(row["id"])),
        "event_type": row["event_type"],
        "event_id": row["event_ref"],
        "state": row["state"],
        "attempts": row["attempts"],
        "occurred_at": iso(row["occurred_at"]),
        "next_attempt_at": iso(row["due_at"]) if row["state"] == "pending" else None,
        "last_attempt_at": iso(row["last_attempt_at"]),
        "last_status": row["last_status"],
        "last_error": row["last_error"],
        "settled_at": iso(row["settled_at"]),
        "reason": row["reason"],
        "payload": loads(row["payload"]),
    }


def render_attempt(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "delivery_id": row["delivery_id"],
        "attempt": row["attempt"],
        "at": iso(row["at"]),
        "outcome": row["outcome"],
        "status_code": row["status_code"],
        "latency_ms": row["latency_ms"],
        "error": row["error"],
    }


async def _subscription_body(rt: Runtime, tenant: str, webhook_id: UUID) -> dict[str, Any]:
    def query(tx: Tx) -> dict[str, Any] | None:
        rows = outbox.subscriptions(tx, tenant, [str(webhook_id)])
        if not rows:
            return None
        counts = outbox.delivery_counts(tx, tenant).get(str(webhook_id), {})
        return render_subscription(rows[0], rt, counts)

    body = await _read(rt, query)
    if body is None:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return dict(body)


# -- subscriptions --------------------------------------------------------------------------
async def post_webhook(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    doc = await read_json(request)
    reject_unknown(doc, {"url", "event_types", "personal_fields", "description"})
    url = _policy(rt).check_url(req_str(doc, "url", max_len=2000))
    event_types = _string_list(doc, "event_types", required=True) or []
    fields = _string_list(doc, "personal_fields", required=False) or []
    description = get_str(doc, "description", required=False, max_len=200) or ""
    (webhook_id, secret), position = await rt.writer.run(
        lambda uow: rt.app.create_webhook_in(
            uow, principal.tenant_id, url, event_types, fields, description
        )
    )
    await _settle(rt, position)
    body = await _subscription_body(rt, str(principal.tenant_id), webhook_id)
    body["secret"] = secret  # shown only here
    return web.json_response(body, status=201)


def _policy(rt: Runtime) -> Any:
    assert rt.webhooks is not None, "the runtime was built without webhooks"
    return rt.webhooks.policy


async def list_webhooks(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    tenant = str(principal.tenant_id)

    def query(tx: Tx) -> list[dict[str, Any]]:
        counts = outbox.delivery_counts(tx, tenant)
        return [
            render_subscription(row, rt, counts.get(str(row["id"])))
            for row in outbox.subscriptions(tx, tenant)
        ]

    return web.json_response({"items": await _read(rt, query)})


async def get_webhook(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    return web.json_response(await _subscription_body(rt, str(principal.tenant_id), webhook_id))


async def patch_webhook(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    doc = await read_json(request)
    reject_unknown(doc, {"url", "event_types", "personal_fields", "description", "enabled"})
    url = get_str(doc, "url", required=False, max_len=2000)
    if url is not None:
        url = _policy(rt).check_url(url)
    enabled = doc.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        raise ValidationError("enabled must be true or false")
    event_types = _string_list(doc, "event_types", required=False)
    fields = _string_list(doc, "personal_fields", required=False)
    description = get_str(doc, "description", required=False, max_len=200)
    _, position = await rt.writer.run(
        lambda uow: rt.app.change_webhook_in(
            uow,
            principal.tenant_id,
            webhook_id,
            url=url,
            event_types=event_types,
            personal_fields=fields,
            description=description,
            enabled=enabled,
        )
    )
    await _settle(rt, position)
    return web.json_response(await _subscription_body(rt, str(principal.tenant_id), webhook_id))


async def delete_webhook(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    _, position = await rt.writer.run(
        lambda uow: rt.app.delete_webhook_in(uow, principal.tenant_id, webhook_id)
    )
    await _settle(rt, position)
    return web.Response(status=204)


async def rotate_secret(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    doc = await read_json(request) if request.can_read_body else {}
    reject_unknown(doc, {"grace_hours"})
    grace = doc.get("grace_hours", DEFAULT_GRACE_HOURS)
    if not isinstance(grace, int) or isinstance(grace, bool) or not 0 <= grace <= 168:
        raise ValidationError("grace_hours must be a whole number from 0 to 168")
    (secret, until), position = await rt.writer.run(
        lambda uow: rt.app.rotate_webhook_secret_in(
            uow, principal.tenant_id, webhook_id, timedelta(hours=grace)
        )
    )
    await _settle(rt, position)
    return web.json_response(
        {
            "webhook_id": str(webhook_id),
            "secret": secret,
            "previous_secret_valid_until": iso(int(until.timestamp() * 1_000_000)),
        }
    )


# -- the delivery log -----------------------------------------------------------------------
async def _log_page(
    request: web.Request,
    listing: Any,
    render: Any,
    **filters: Any,
) -> web.Response:
    """A page of a webhook's deliveries or attempts (newest first), or 404 for a webhook
    the caller's tenant does not have."""
    principal, rt = await _admin(request)
    webhook_id = str(_path_uuid(request, "webhook_id"))
    before = decode_cursor(request.query.get("cursor"))
    limit = page_limit(request.query.get("limit"))
    tenant = str(principal.tenant_id)

    def query(tx: Tx) -> dict[str, Any] | None:
        if not outbox.subscriptions(tx, tenant, [webhook_id]):
            return None
        rows = listing(tx, tenant, webhook_id, before=before, limit=limit + 1, **filters)
        last = rows[limit - 1] if len(rows) > limit else None
        return {
            "items": [render(row) for row in rows[:limit]],
            "next": None if last is None else encode_cursor(int(last["position"]), last["id"]),
        }

    body = await _read(rt, query)
    if body is None:
        raise NotFoundError(f"webhook {webhook_id} not found")
    return web.json_response(body)


async def list_deliveries(request: web.Request) -> web.Response:
    """The deliveries of a webhook, newest first; ``state=dead`` is the dead-letter view."""
    state = request.query.get("state") or None
    if state is not None and state not in STATES:
        raise ValidationError(f"state must be one of: {', '.join(STATES)}")
    return await _log_page(request, outbox.list_deliveries, render_delivery, state=state)


async def list_attempts(request: web.Request) -> web.Response:
    """The attempt log (status code, latency, error), newest first."""
    raw = request.query.get("delivery_id")
    delivery = None
    if raw:
        try:
            delivery = str(UUID(raw))
        except ValueError:
            raise ValidationError("delivery_id must be a UUID") from None
    return await _log_page(request, outbox.list_attempts, render_attempt, delivery=delivery)


async def get_delivery(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    delivery = _path_uuid(request, "delivery_id")
    tenant = str(principal.tenant_id)

    def query(tx: Tx) -> dict[str, Any] | None:
        row = outbox.get_delivery(tx, tenant, str(webhook_id), str(delivery))
        if row is None:
            return None
        body = render_delivery(row)
        attempts = outbox.list_attempts(tx, tenant, str(webhook_id), delivery=str(delivery))
        body["attempt_log"] = [render_attempt(a) for a in attempts]
        return body

    body = await _read(rt, query)
    if body is None:
        raise NotFoundError(f"delivery {delivery} not found")
    return web.json_response(body)


# -- replays --------------------------------------------------------------------------------
async def replay_delivery(request: web.Request) -> web.Response:
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    delivery = _path_uuid(request, "delivery_id")
    tenant = str(principal.tenant_id)
    row = await _read(rt, outbox.get_delivery, tenant, str(webhook_id), str(delivery))
    if row is None:
        raise NotFoundError(f"delivery {delivery} not found")
    if row["state"] == "pending":
        return web.json_response({"webhook_id": str(webhook_id), "replayed": 0}, status=202)
    _, position = await rt.writer.run(
        lambda uow: rt.app.replay_webhook_in(
            uow, principal.tenant_id, webhook_id, ReplayScope.DELIVERY, delivery=delivery
        )
    )
    await _settle(rt, position)
    return web.json_response({"webhook_id": str(webhook_id), "replayed": 1}, status=202)


async def replay_webhook(request: web.Request) -> web.Response:
    """Replay every dead letter (``{"dead_letters": true}``) or every delivery of the
    events that occurred in a time range (``{"from", "to"}``)."""
    principal, rt = await _admin(request)
    webhook_id = _path_uuid(request, "webhook_id")
    doc = await read_json(request)
    reject_unknown(doc, {"dead_letters", "from", "to"})
    tenant = str(principal.tenant_id)
    if doc.get("dead_letters") is True and "from" not in doc and "to" not in doc:
        scope, since, until = ReplayScope.DEAD_LETTERS, None, None
    elif "dead_letters" not in doc and "from" in doc and "to" in doc:
        scope = ReplayScope.RANGE
        since, until = parse_time(doc["from"], "from"), parse_time(doc["to"], "to")
        if since >= until:
            raise ValidationError("from must be before to")
    else:
        raise ValidationError('send {"dead_letters": true} or {"from": ..., "to": ...}')

    replayed = await _read(
        rt,
        outbox.count_replayable,
        tenant,
        str(webhook_id),
        None if since is None else micros(since),
        None if until is None else micros(until),
    )
    _, position = await rt.writer.run(
        lambda uow: rt.app.replay_webhook_in(
            uow, principal.tenant_id, webhook_id, scope, since=since, until=until
        )
    )
    await _settle(rt, position)
    return web.json_response({"webhook_id": str(webhook_id), "replayed": replayed}, status=202)


def setup_webhook_routes(app: web.Application) -> None:
    app.router.add_post("/v1/webhooks", post_webhook)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_get("/v1/webhooks/{webhook_id}", get_webhook)
    app.router.add_patch("/v1/webhooks/{webhook_id}", patch_webhook)
    app.router.add_delete("/v1/webhooks/{webhook_id}", delete_webhook)
    app.router.add_post("/v1/webhooks/{webhook_id}/rotate-secret", rotate_secret)
    app.router.add_get("/v1/webhooks/{webhook_id}/deliveries", list_deliveries)
    app.router.add_get("/v1/webhooks/{webhook_id}/deliveries/{delivery_id}", get_delivery)
    app.router.add_post(
        "/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/replay", replay_delivery
    )
    app.router.add_post("/v1/webhooks/{webhook_id}/replay", replay_webhook)
    app.router.add_get("/v1/webhooks/{webhook_id}/attempts", list_attempts)
