"""Core API routes: health, interactions, conversations, tokens, agents, queues, tenant."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from uuid import UUID

from aiohttp import web

from contact_centre.application import Principal, Receive
from contact_centre.conversations import ConversationStatus
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.interaction import Channel
from contact_centre.staff import AgentPresence
from contact_centre.tenancy import Role
from infra.db import Tx
from infra.http import openapi
from infra.http.auditing import record_read
from infra.http.auth import (
    ALL_ROLES,
    STAFF,
    authenticate,
    require_role,
)
from infra.http.channel_views import enrich_conversation
from infra.http.crm_routes import setup_crm_routes
from infra.http.errors import ApiError
from infra.http.keys import AUTH, OPENAPI, RUNTIME
from infra.http.paging import decode_cursor, encode_cursor, page_limit
from infra.http.privacy_routes import setup_privacy_routes
from infra.http.schemas import (
    get_str,
    get_uuid,
    parse_interaction,
    parse_uuid,
    read_json,
    reject_unknown,
    req_str,
)
from infra.http.search import search_tokens, search_words_of
from infra.http.supervision_routes import setup_supervision_routes
from infra.http.views import Opener, iso, render_conversation, render_message, render_note
from infra.http.webhook_routes import setup_webhook_routes
from infra.runtime import Runtime
from projections import crm, directory, inbox
from projections.base import loads

ADMIN = frozenset({Role.ADMIN})
SUPERVISORS = frozenset({Role.ADMIN, Role.SUPERVISOR})
INGEST = frozenset({Role.ADMIN, Role.INTEGRATION})
T = TypeVar("T")


async def _principal(request: web.Request, roles: frozenset[Role]) -> Principal:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, roles)
    return principal


def _rt(request: web.Request) -> Runtime:
    return request.app[RUNTIME]


async def _settle(request: web.Request, position: int | None) -> None:
    """Read-your-writes: wait (bounded) until the inbox shows what was just written."""
    rt = _rt(request)
    if position is not None:
        timeout = rt.settings.projection_wait_ms / 1000
        await rt.feed.progress.wait("inbox", position, timeout)


def _path_uuid(request: web.Request, name: str) -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise ApiError(
            404, "not_found", f"no {name.replace('_', ' ')} {request.match_info[name]!r}"
        ) from None


# -- health -------------------------------------------------------------------------------
async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def ready(request: web.Request) -> web.Response:
    rt = _rt(request)

    def check() -> dict[str, Any]:
        state: dict[str, Any] = {}
        if rt.settings.uses_kafka:
            latest = state["latest"] = rt.app.recorder.max_notification_id() or 0
            # Scaled: positions per partition; a projection's position is its watermark.
            from infra.kafka.messages import events_topic
            from infra.kafka.relay import watermarks

            marks = watermarks(rt.readdb, events_topic(rt.settings.kafka_topic_prefix))
            relay, positions = marks if marks is not None else (0, {})
            positions = dict(positions)
            state["relay"] = {"position": relay, "lag": latest - relay}
            with rt.readdb.read() as tx:  # the log-order projections (the webhook outbox)
                tx.execute("SELECT consumer, position FROM cc_tracking WHERE partition = -1")
                positions.update({str(name): int(pos) for name, pos in tx.fetchall()})
        else:
            with rt.readdb.read() as tx:
                tx.execute("SELECT consumer, position FROM cc_tracking WHERE partition = -1")
                positions = {str(name): int(pos) for name, pos in tx.fetchall()}
            # a read model that had nothing to write for a while has applied further than
            # its stored position says (it is written down every few thousand events)
            for c in rt.consumers:
                positions[c.name] = max(positions.get(c.name, 0), rt.feed.progress.get(c.name))
            # the head read after the positions: a lag is never reported short
            state["latest"] = rt.app.recorder.max_notification_id() or 0
        rt.vault.refresh()
        state["positions"] = positions
        return state

    try:
        state = await asyncio.to_thread(check)
    except Exception as error:
        return web.json_response(
            {"status": "unavailable", "error": type(error).__name__}, status=503
        )
    projections = {
        c.name: {
            "position": state["positions"].get(c.name, 0),
            "lag": state["latest"] - state["positions"].get(c.name, 0),
            "error": rt.feed.errors.get(c.name),
        }
        for c in rt.consumers
    }
    return web.json_response(
        {
            "status": "ready",
            "event_store": {"position": state["latest"]},
            "projections": projections,
            **({"relay": state["relay"]} if "relay" in state else {}),
            # the process applying the read models beside serve (CC_PROJECTIONS=process)
            **(
                {"projector": {"running": rt.projector.running, "restarts": rt.projector.restarts}}
                if rt.projector is not None
                else {}
            ),
        }
    )


async def openapi_json(request: web.Request) -> web.Response:
    """The OpenAPI 3.1 description of every route (infra/http/openapi.py)."""
    return web.json_response(request.app[OPENAPI])


# -- interactions -------------------------------------------------------------------------
async def post_interaction(request: web.Request) -> web.Response:
    principal = await _principal(request, INGEST)
    rt = _rt(request)
    doc = await read_json(request)
    interaction = parse_interaction(doc, principal.tenant_id, rt.clock.now())
    result, _ = await rt.writer.run(Receive(rt.app, interaction))
    body = {
        "conversation_id": str(result.conversation_id),
        "contact_id": str(result.contact_id),
        "message_id": str(result.message_id),
        "duplicate": result.duplicate,
    }
    return web.json_response(body, status=200 if result.duplicate else 201)


# -- conversations ------------------------------------------------------------------------
def _visible_queues(tx: Tx, principal: Principal) -> list[str] | None:
    """The queues an agent token may see (None: every queue, for other roles)."""
    if principal.role is not Role.AGENT or principal.agent_id is None:
        return None
    return directory.agent_queue_ids(tx, str(principal.tenant_id), str(principal.agent_id))


def can_see(tx: Tx, principal: Principal, row: dict[str, Any]) -> bool:
    """Agents see conversations assigned to them or waiting in their queues."""
    queues = _visible_queues(tx, principal)
    if queues is None:
        return True
    return row["assignee_id"] == str(principal.agent_id) or row["queue_id"] in queues


async def require_visible(
    request: web.Request, principal: Principal, conversation_id: UUID
) -> None:
    """404 for a conversation the caller may not see (as for one that does not exist)."""
    if principal.role is not Role.AGENT:
        return

    def check(tx: Tx) -> bool:
        row = inbox.get_conversation(tx, str(principal.tenant_id), str(conversation_id))
        return row is not None and can_see(tx, principal, row)

    if not await _read(_rt(request), check):
        raise NotFoundError(f"conversation {conversation_id} not found")


def _inbox_filters(principal: Principal, source: Mapping[str, Any]) -> dict[str, Any]:
    """The inbox filters, from a query string or a search body (same names)."""

    def text(name: str) -> str | None:
        value = source.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ValidationError(f"{name} must be a string")
        return value

    def enum(name: str, kind: type[Any]) -> str | None:
        value = text(name)
        if value is None:
            return None
        try:
            return str(kind(value).value)
        except ValueError:
            options = ", ".join(m.value for m in kind)
            raise ValidationError(f"{name} must be one of: {options}") from None

    assignee = text("assignee")
    if assignee == "me":
        if principal.agent_id is None:
            raise ValidationError("assignee=me needs an agent token")
        assignee = str(principal.agent_id)
    elif assignee not in (None, "none"):
        assignee = str(parse_uuid(assignee, "assignee"))
    contact_id = text("contact_id")
    queue_id = text("queue_id")
    limit = page_limit(source.get("limit"))
    cursor = text("cursor")
    return {
        "status": enum("status", ConversationStatus),
        "channel": enum("channel", Channel),
        "assignee": assignee,
        "contact_id": str(parse_uuid(contact_id, "contact_id")) if contact_id else None,
        "queue_id": str(parse_uuid(queue_id, "queue_id")) if queue_id else None,
        "after": decode_cursor(cursor),
        "limit": limit,
    }


async def _inbox_page(
    request: web.Request, principal: Principal, filters: dict[str, Any], contact: str | None
) -> dict[str, Any]:
    rt = _rt(request)
    words = search_words_of(contact) if contact is not None else None
    limit = filters.pop("limit")

    def query() -> dict[str, Any]:
        rt.vault.refresh()
        contact_ids: list[str] | None = None
        if words is not None:
            tokens = search_tokens(rt, principal.tenant_id, words)
            contact_ids = []
        with rt.readdb.read() as tx:
            queues = _visible_queues(tx, principal)
            if words is not None and tokens is not None:
                contact_ids = crm.search_contact_ids(tx, str(principal.tenant_id), tokens)
            rows = inbox.list_conversations(
                tx,
                str(principal.tenant_id),
                contact_ids=contact_ids,
                visible_to=(str(principal.agent_id), queues) if queues is not None else None,
                limit=limit + 1,
                **filters,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        items = [render_conversation(row, rt.vault, detail=False) for row in rows]
        last = rows[-1] if rows else None
        next_cursor = (
            encode_cursor(int(str(last["updated_at"])), str(last["id"])) if more and last else None
        )
        return {"items": items, "next": next_cursor}

    return await asyncio.to_thread(query)


async def list_conversations(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    filters = _inbox_filters(principal, request.query)
    page = await _inbox_page(request, principal, filters, None)
    await record_read(request, principal, "conversations", [c["id"] for c in page["items"]])
    return web.json_response(page)


async def search_conversations(request: web.Request) -> web.Response:
    """The inbox with a contact search: POST, so names never travel in URLs (and logs)."""
    principal = await _principal(request, STAFF)
    doc = await read_json(request)
    reject_unknown(
        doc,
        {"contact", "status", "channel", "assignee", "contact_id", "queue_id", "limit", "cursor"},
    )
    contact = get_str(doc, "contact", required=False, max_len=200)
    filters = _inbox_filters(principal, doc)
    page = await _inbox_page(request, principal, filters, contact)
    await record_read(request, principal, "conversations", [c["id"] for c in page["items"]])
    return web.json_response(page)


async def get_conversation(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")

    def query() -> dict[str, Any] | None:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            row = inbox.get_conversation(tx, str(principal.tenant_id), str(conversation_id))
            if row is None or not can_see(tx, principal, row):
                return None
            entries = inbox.list_messages(tx, str(principal.tenant_id), str(conversation_id))
        body = render_conversation(row, rt.vault, detail=True)
        body["messages"] = [render_message(e, rt.vault) for e in entries if e["kind"] == "message"]
        body["notes"] = [render_note(e, rt.vault) for e in entries if e["kind"] == "note"]
        with rt.readdb.read() as tx:
            enrich_conversation(rt, tx, principal, body)
        return body

    body = await asyncio.to_thread(query)
    if body is None:
        raise NotFoundError(f"conversation {conversation_id} not found")
    await record_read(request, principal, "conversation", [body["id"], body["contact"]["id"]])
    return web.json_response(body)


async def post_reply(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    await require_visible(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"body"})
    body = get_str(doc, "body", max_len=100_000)
    assert body is not None
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise ValidationError("Idempotency-Key must be 1-255 characters")
    (message_id, repeat), position = await rt.writer.run(
        lambda uow: rt.app.reply_in(
            uow, principal.tenant_id, conversation_id, principal.actor, body, key
        )
    )
    await _settle(request, position)
    return web.json_response(
        {
            "message_id": str(message_id),
            "conversation_id": str(conversation_id),
            "author": principal.actor,
            "duplicate": repeat,
        },
        status=200 if repeat else 201,
    )


async def post_note(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    await require_visible(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"body"})
    body = get_str(doc, "body", max_len=100_000)
    assert body is not None
    note_id, position = await rt.writer.run(
        lambda uow: rt.app.add_note_in(
            uow, principal.tenant_id, conversation_id, principal.actor, body
        )
    )
    await _settle(request, position)
    return web.json_response(
        {"note_id": str(note_id), "conversation_id": str(conversation_id)}, status=201
    )


async def post_status(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    await require_visible(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"status"})
    raw = req_str(doc, "status", max_len=32)
    try:
        status = ConversationStatus(raw)
    except ValueError:
        options = ", ".join(s.value for s in ConversationStatus)
        raise ValidationError(f"status must be one of: {options}") from None
    changed, position = await rt.writer.run(
        lambda uow: rt.app.change_status_in(
            uow, principal.tenant_id, conversation_id, status, principal.actor
        )
    )
    await _settle(request, position)
    return web.json_response(
        {"conversation_id": str(conversation_id), "status": status.value, "changed": changed}
    )


async def post_assignment(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    await require_visible(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"agent_id"})
    agent_id = get_uuid(doc, "agent_id", required=False)
    if principal.role is Role.AGENT and agent_id not in (None, principal.agent_id):
        raise ApiError(403, "forbidden", "agents may only assign conversations to themselves")
    _, position = await rt.writer.run(
        lambda uow: rt.app.assign_in(
            uow, principal.tenant_id, conversation_id, agent_id, principal.actor
        )
    )
    await _settle(request, position)
    return web.json_response(
        {
            "conversation_id": str(conversation_id),
            "assignee_id": str(agent_id) if agent_id else None,
        }
    )


async def post_queue_placement(request: web.Request) -> web.Response:
    principal = await _principal(request, SUPERVISORS)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    doc = await read_json(request)
    reject_unknown(doc, {"queue_id", "priority"})
    queue_id = get_uuid(doc, "queue_id")
    assert queue_id is not None
    priority = doc.get("priority")
    if priority is not None and (not isinstance(priority, int) or isinstance(priority, bool)):
        raise ValidationError("priority must be an integer from 0 to 100")
    _, position = await rt.writer.run(
        lambda uow: rt.app.queue_conversation_in(
            uow, principal.tenant_id, conversation_id, queue_id, priority, "manual"
        )
    )
    await _settle(request, position)
    return web.json_response({"conversation_id": str(conversation_id), "queue_id": str(queue_id)})


async def post_abandon(request: web.Request) -> web.Response:
    """A channel reports that the customer left while waiting (hung up, closed the chat)."""
    principal = await _principal(request, INGEST)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    doc = await read_json(request)
    reject_unknown(doc, {"reason"})
    reason = get_str(doc, "reason", required=False, max_len=64) or "customer_left"
    _, position = await rt.writer.run(
        lambda uow: rt.app.abandon_in(uow, principal.tenant_id, conversation_id, reason)
    )
    await _settle(request, position)
    return web.json_response({"conversation_id": str(conversation_id), "abandoned": True})


# -- tenant, tokens, agents, queues -------------------------------------------------------
async def get_tenant(request: web.Request) -> web.Response:
    principal = await _principal(request, ALL_ROLES)
    rt = _rt(request)
    summary = await asyncio.to_thread(rt.app.tenant_summary, principal.tenant_id)
    if summary is None:
        raise NotFoundError("tenant not found")
    return web.json_response(
        {
            "tenant_id": str(principal.tenant_id),
            "name": summary["name"],
            "status": summary["status"],
            "role": principal.role.value,
        }
    )


async def post_token(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    doc = await read_json(request)
    reject_unknown(doc, {"role", "label", "agent_id"})
    raw_role = req_str(doc, "role", max_len=32)
    try:
        role = Role(raw_role)
    except ValueError:
        raise ValidationError(
            "role must be one of: admin, supervisor, agent, integration"
        ) from None
    label = get_str(doc, "label", required=False, max_len=200) or ""
    agent_id = get_uuid(doc, "agent_id", required=False)
    issued, position = await rt.writer.run(
        lambda uow: rt.app.issue_token_in(uow, principal.tenant_id, role, label, agent_id)
    )
    await _settle_directory(request, position)
    return web.json_response(
        {"token_id": str(issued.token_id), "token": issued.token, "role": issued.role.value},
        status=201,
    )


async def _settle_directory(request: web.Request, position: int | None) -> None:
    rt = _rt(request)
    if position is not None:
        await rt.feed.progress.wait("directory", position, rt.settings.projection_wait_ms / 1000)


async def _read(rt: Runtime, query: Callable[[Tx], T]) -> T:
    """Run a read-model query in a worker thread (never on the event loop)."""

    def run() -> T:
        with rt.readdb.read() as tx:
            return query(tx)

    return await asyncio.to_thread(run)


async def list_tokens(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rows = await _read(_rt(request), lambda tx: directory.list_tokens(tx, str(principal.tenant_id)))
    items = [
        {
            "token_id": r["id"],
            "role": r["role"],
            "label": r["label"],
            "agent_id": r["agent_id"],
            "issued_at": iso(r["issued_at"]),
            "revoked_at": iso(r["revoked_at"]),
        }
        for r in rows
    ]
    return web.json_response({"items": items})


async def delete_token(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    token_id = _path_uuid(request, "token_id")
    _, position = await rt.writer.run(
        lambda uow: rt.app.revoke_token_in(uow, principal.tenant_id, token_id)
    )
    request.app[AUTH].forget_token(token_id)
    await _settle_directory(request, position)
    return web.Response(status=204)


async def post_agent(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    doc = await read_json(request)
    reject_unknown(doc, {"name", "email", "skills"})
    name = get_str(doc, "name", max_len=200)
    email = get_str(doc, "email", required=False, max_len=320)
    skills = doc.get("skills") or []
    if not isinstance(skills, list) or not all(isinstance(s, str) for s in skills):
        raise ValidationError("skills must be a list of strings like 'billing:3'")
    assert name is not None
    agent_id, position = await rt.writer.run(
        lambda uow: rt.app.create_agent_in(uow, principal.tenant_id, name, email, skills)
    )
    await _settle_directory(request, position)
    return web.json_response({"agent_id": str(agent_id)}, status=201)


async def list_agents(request: web.Request) -> web.Response:
    principal = await _principal(request, SUPERVISORS)
    rt = _rt(request)

    def query() -> list[dict[str, Any]]:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            rows = directory.list_agents(tx, str(principal.tenant_id))
        items = []
        for r in rows:
            opener = Opener(rt.vault)
            item: dict[str, Any] = {
                "agent_id": r["id"],
                "name": opener.text(r["name"]),
                "email": opener.text(r["email"]),
                "skills": loads(str(r["skills"])),
                "created_at": iso(r["created_at"]),
            }
            if opener.erased:
                item["erased"] = True
            items.append(item)
        return items

    items = await asyncio.to_thread(query)
    await record_read(request, principal, "agents", [a["agent_id"] for a in items])
    return web.json_response({"items": items})


async def post_presence(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    agent_id = _path_uuid(request, "agent_id")
    if principal.role is Role.AGENT and principal.agent_id != agent_id:
        raise ApiError(403, "forbidden", "agents set their own presence only")
    doc = await read_json(request)
    reject_unknown(doc, {"presence", "reason"})
    try:
        presence = AgentPresence(req_str(doc, "presence", max_len=16))
    except ValueError:
        raise ValidationError("presence must be available, busy, away or offline") from None
    reason = get_str(doc, "reason", required=False, max_len=100)
    changed, position = await rt.writer.run(
        lambda uow: rt.app.set_presence_in(uow, principal.tenant_id, agent_id, presence, reason)
    )
    if position is not None:
        await rt.feed.progress.wait("metrics", position, rt.settings.projection_wait_ms / 1000)
    return web.json_response(
        {"agent_id": str(agent_id), "presence": presence.value, "changed": changed}
    )


async def patch_queue(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    queue_id = _path_uuid(request, "queue_id")
    doc = await read_json(request)
    settings, position = await rt.writer.run(
        lambda uow: rt.app.configure_queue_in(uow, principal.tenant_id, queue_id, doc)
    )
    await _settle_directory(request, position)
    return web.json_response({"queue_id": str(queue_id), "settings": settings})


async def post_queue(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    doc = await read_json(request)
    reject_unknown(doc, {"name", "channels"})
    name = get_str(doc, "name", max_len=200)
    raw_channels = doc.get("channels") or []
    if not isinstance(raw_channels, list):
        raise ValidationError("channels must be a list")
    try:
        channels = [Channel(c) for c in raw_channels]
    except ValueError:
        raise ValidationError(
            "channels must name voice, sms, whatsapp, email, webchat or social"
        ) from None
    assert name is not None
    queue_id, position = await rt.writer.run(
        lambda uow: rt.app.create_queue_in(uow, principal.tenant_id, name, channels)
    )
    await _settle_directory(request, position)
    return web.json_response({"queue_id": str(queue_id)}, status=201)


async def list_queues(request: web.Request) -> web.Response:
    principal = await _principal(request, SUPERVISORS)
    rows = await _read(_rt(request), lambda tx: directory.list_queues(tx, str(principal.tenant_id)))
    items = [
        {
            "queue_id": r["id"],
            "name": r["name"],
            "channels": loads(str(r["channels"])),
            "settings": loads(str(r["settings"])),
            "created_at": iso(r["created_at"]),
        }
        for r in rows
    ]
    return web.json_response({"items": items})


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    app[OPENAPI] = openapi.document()
    app.router.add_get("/v1/openapi.json", openapi_json)
    app.router.add_post("/v1/interactions", post_interaction)
    app.router.add_get("/v1/conversations", list_conversations)
    app.router.add_get("/v1/conversations/{conversation_id}", get_conversation)
    app.router.add_post("/v1/conversations/{conversation_id}/replies", post_reply)
    app.router.add_post("/v1/conversations/{conversation_id}/notes", post_note)
    app.router.add_post("/v1/conversations/{conversation_id}/status", post_status)
    app.router.add_post("/v1/conversations/{conversation_id}/assignment", post_assignment)
    app.router.add_post("/v1/conversations/{conversation_id}/queue", post_queue_placement)
    app.router.add_post("/v1/conversations/{conversation_id}/abandon", post_abandon)
    app.router.add_post("/v1/conversations/search", search_conversations)
    app.router.add_get("/v1/tenant", get_tenant)
    app.router.add_post("/v1/tokens", post_token)
    app.router.add_get("/v1/tokens", list_tokens)
    app.router.add_delete("/v1/tokens/{token_id}", delete_token)
    app.router.add_post("/v1/agents", post_agent)
    app.router.add_get("/v1/agents", list_agents)
    app.router.add_post("/v1/agents/{agent_id}/presence", post_presence)
    app.router.add_post("/v1/queues", post_queue)
    app.router.add_get("/v1/queues", list_queues)
    setup_supervision_routes(app)  # before /v1/queues/{queue_id}
    app.router.add_patch("/v1/queues/{queue_id}", patch_queue)
    setup_crm_routes(app)
    setup_privacy_routes(app)
    setup_webhook_routes(app)
