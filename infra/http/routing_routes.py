"""Routing routes: offers (accept, decline), transfer, wrap-up, agent sessions and
settings, routing rules, the routing desk for supervisors, and the live sockets."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any
from uuid import UUID

from aiohttp import WSMsgType, web

from contact_centre.application import Principal
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.tenancy import Role
from infra.http.auth import STAFF
from infra.http.errors import ApiError
from infra.http.routes import _path_uuid, _principal, _rt, _settle
from infra.http.schemas import get_str, get_uuid, read_json, reject_unknown
from infra.live import Connection, agent_message
from projections import inbox

ADMIN = frozenset({Role.ADMIN})
SUPERVISORS = frozenset({Role.ADMIN, Role.SUPERVISOR})
AGENTS = frozenset({Role.AGENT})
WS_HEARTBEAT = 20.0


def _me(principal: Principal) -> UUID:
    if principal.agent_id is None:
        raise ApiError(403, "forbidden", "this needs an agent token")
    return principal.agent_id


async def _held_by(request: web.Request, principal: Principal, conversation_id: UUID) -> None:
    """Agents act only on conversations assigned to them (404 for others, as if absent)."""
    if principal.role is not Role.AGENT:
        return
    rt = _rt(request)

    def check() -> bool:
        with rt.readdb.read() as tx:
            row = inbox.get_conversation(tx, str(principal.tenant_id), str(conversation_id))
        return row is not None and row["assignee_id"] == str(principal.agent_id)

    if not await asyncio.to_thread(check):
        raise NotFoundError(f"conversation {conversation_id} not found")


# -- offers -------------------------------------------------------------------------------
async def post_accept(request: web.Request) -> web.Response:
    principal = await _principal(request, AGENTS)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    me = _me(principal)
    _, position = await rt.writer.run(
        lambda uow: rt.app.accept_in(uow, principal.tenant_id, conversation_id, me)
    )
    await _settle(request, position)
    return web.json_response({"conversation_id": str(conversation_id), "assignee_id": str(me)})


async def post_decline(request: web.Request) -> web.Response:
    principal = await _principal(request, AGENTS)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    me = _me(principal)

    def decline(uow: Any) -> None:
        conversation = rt.app._conversation(uow, principal.tenant_id, conversation_id)
        if conversation.offered_to != me:
            raise NotFoundError(f"no offer of conversation {conversation_id} to you")
        rt.app.end_offer_in(uow, principal.tenant_id, conversation_id, me, "declined")

    _, position = await rt.writer.run(decline)
    await _settle(request, position)
    return web.json_response({"conversation_id": str(conversation_id), "declined": True})


# -- transfer and wrap-up -----------------------------------------------------------------
async def post_transfer(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    await _held_by(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"queue_id", "agent_id", "note"})
    queue_id = get_uuid(doc, "queue_id", required=False)
    agent_id = get_uuid(doc, "agent_id", required=False)
    note = get_str(doc, "note", required=False, max_len=10_000)
    _, position = await rt.writer.run(
        lambda uow: rt.app.transfer_in(
            uow, principal.tenant_id, conversation_id, principal.actor, queue_id, agent_id, note
        )
    )
    await _settle(request, position)
    return web.json_response(
        {
            "conversation_id": str(conversation_id),
            "queue_id": str(queue_id) if queue_id else None,
            "agent_id": str(agent_id) if agent_id else None,
        }
    )


async def post_wrap_up(request: web.Request) -> web.Response:
    principal = await _principal(request, AGENTS)
    rt = _rt(request)
    conversation_id = _path_uuid(request, "conversation_id")
    me = _me(principal)
    await _held_by(request, principal, conversation_id)
    doc = await read_json(request)
    reject_unknown(doc, {"disposition", "resolve"})
    disposition = get_str(doc, "disposition", max_len=64) or ""
    resolve = doc.get("resolve", True)
    if not isinstance(resolve, bool):
        raise ValidationError("resolve must be true or false")
    _, position = await rt.writer.run(
        lambda uow: rt.app.wrap_up_in(
            uow, principal.tenant_id, conversation_id, me, disposition, resolve
        )
    )
    await _settle(request, position)
    return web.json_response(
        {
            "conversation_id": str(conversation_id),
            "disposition": disposition.strip().lower(),
            "resolved": resolve,
        }
    )


# -- agents -------------------------------------------------------------------------------
def _self_or_supervisor(principal: Principal, agent_id: UUID) -> None:
    if principal.role is Role.AGENT and principal.agent_id != agent_id:
        raise ApiError(403, "forbidden", "agents log themselves in and out only")


async def post_login(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    agent_id = _path_uuid(request, "agent_id")
    _self_or_supervisor(principal, agent_id)
    await rt.writer.run(lambda uow: rt.app.log_in_in(uow, principal.tenant_id, agent_id))
    return web.json_response({"agent_id": str(agent_id), "presence": "available"})


async def post_logout(request: web.Request) -> web.Response:
    principal = await _principal(request, STAFF)
    rt = _rt(request)
    agent_id = _path_uuid(request, "agent_id")
    _self_or_supervisor(principal, agent_id)
    moved, _ = await rt.writer.run(
        lambda uow: rt.app.log_out_in(uow, principal.tenant_id, agent_id)
    )
    return web.json_response({"agent_id": str(agent_id), "presence": "offline", "requeued": moved})


async def patch_agent(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    agent_id = _path_uuid(request, "agent_id")
    doc = await read_json(request)
    reject_unknown(doc, {"skills", "capacity"})
    skills = doc.get("skills")
    if skills is not None and (
        not isinstance(skills, list) or not all(isinstance(s, str) for s in skills)
    ):
        raise ValidationError("skills must be a list of strings like 'billing:3'")
    capacity = doc.get("capacity")
    if capacity is not None and not isinstance(capacity, dict):
        raise ValidationError('capacity maps channels to numbers, e.g. {"voice": 1}')

    if skills is None and capacity is None:
        raise ValidationError("send skills and/or capacity")

    def change(uow: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"agent_id": str(agent_id)}
        if skills is not None:
            out["skills"] = rt.app.set_skills_in(uow, principal.tenant_id, agent_id, skills)
        if capacity is not None:
            out["capacity"] = rt.app.set_capacity_in(uow, principal.tenant_id, agent_id, capacity)
        return out

    body, position = await rt.writer.run(change)
    if position is not None:
        await rt.feed.progress.wait("directory", position, rt.settings.projection_wait_ms / 1000)
    return web.json_response(body)


async def routing_desk(request: web.Request) -> web.Response:
    """Agents as routing sees them: presence, load and capacity per channel, open offers
    and recent declines (supervisors)."""
    principal = await _principal(request, SUPERVISORS)
    rt = _rt(request)
    feed = rt.routing
    assert feed is not None
    with feed.lock:
        agents = [
            agent_message(a, feed.state)
            for a in feed.state.agents.values()
            if a.tenant_id == principal.tenant_id
        ]
    for item in agents:
        item.pop("type")
    agents.sort(key=lambda a: str(a["agent_id"]))
    return web.json_response({"items": agents})


# -- rules --------------------------------------------------------------------------------
async def get_rules(request: web.Request) -> web.Response:
    principal = await _principal(request, SUPERVISORS)
    rt = _rt(request)

    await asyncio.to_thread(rt.vault.refresh)
    config, _ = await rt.writer.run(lambda uow: rt.app.routing_rules(uow, principal.tenant_id))
    return web.json_response(config)


async def put_rules(request: web.Request) -> web.Response:
    principal = await _principal(request, ADMIN)
    rt = _rt(request)
    doc = await read_json(request)
    config, _ = await rt.writer.run(
        lambda uow: rt.app.configure_routing_rules_in(uow, principal.tenant_id, doc)
    )
    return web.json_response(config)


# -- live sockets -------------------------------------------------------------------------
async def _socket(request: web.Request, principal: Principal, agent: bool) -> web.WebSocketResponse:
    rt = _rt(request)
    feed = rt.routing
    assert feed is not None
    ws = web.WebSocketResponse(heartbeat=WS_HEARTBEAT)
    await ws.prepare(request)
    connection = Connection(
        principal.tenant_id, principal.agent_id if agent else None, asyncio.get_running_loop()
    )
    with feed.lock:  # the snapshot and the first push see the same state
        if agent:
            assert principal.agent_id is not None
            hello = rt.live.agent_hello(feed.state, principal.tenant_id, principal.agent_id)
        else:
            hello = rt.live.supervisor_hello(feed.state, principal.tenant_id)
        rt.live.add(connection)
    reader = asyncio.create_task(_drain(ws))
    wait = rt.settings.projection_wait_ms / 1000
    shown = 0  # pushes up to this position have been held as long as they may be
    getter: asyncio.Task[tuple[int, float, dict[str, Any]] | None] | None = None
    try:
        await ws.send_json(hello)
        while not ws.closed:
            getter = asyncio.create_task(connection.queue.get())
            done, _ = await asyncio.wait({getter, reader}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                break
            item = getter.result()
            if item is None:  # the client fell too far behind
                await ws.close(code=1013, message=b"too slow")
                break
            position, queued, message = item
            if rt.projections_elsewhere and position > shown:
                # a client reads the conversation it was told of: hold the push until the
                # projector has shown the inbox as far, at most CC_PROJECTION_WAIT_MS
                # from when it was queued (pushes queued together wait together)
                left = queued + wait - asyncio.get_running_loop().time()
                if left > 0:
                    await rt.feed.progress.wait("inbox", position, left)
                shown = position
            await ws.send_json(message)
    finally:
        rt.live.remove(connection)
        for task in (getter, reader):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read (and ignore) what the client sends, until it closes."""
    async for message in ws:
        if message.type in (WSMsgType.ERROR, WSMsgType.CLOSE):
            break


async def agent_socket(request: web.Request) -> web.WebSocketResponse:
    principal = await _principal(request, AGENTS)
    _me(principal)
    return await _socket(request, principal, agent=True)


async def supervisor_socket(request: web.Request) -> web.WebSocketResponse:
    principal = await _principal(request, SUPERVISORS)
    return await _socket(request, principal, agent=False)


def setup_routing_routes(app: web.Application) -> None:
    base = "/v1/conversations/{conversation_id}"
    app.router.add_post(f"{base}/accept", post_accept)
    app.router.add_post(f"{base}/decline", post_decline)
    app.router.add_post(f"{base}/transfer", post_transfer)
    app.router.add_post(f"{base}/wrap-up", post_wrap_up)
    app.router.add_post("/v1/agents/{agent_id}/login", post_login)
    app.router.add_post("/v1/agents/{agent_id}/logout", post_logout)
    app.router.add_patch("/v1/agents/{agent_id}", patch_agent)
    app.router.add_get("/v1/routing/agents", routing_desk)
    app.router.add_get("/v1/routing/rules", get_rules)
    app.router.add_put("/v1/routing/rules", put_rules)
    app.router.add_get("/v1/agent/ws", agent_socket)
    app.router.add_get("/v1/supervisor/ws", supervisor_socket)
