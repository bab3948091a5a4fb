"""The visitor's WebSocket: ``/v1/webchat/{widget_key}/ws``.

Before the upgrade: the widget key names a tenant (404), the Origin is one of its allowed
origins (403), the visitor's IP is under its connection rate (429). After it: a blocked
visitor (by IP or cookie) is closed with 4403. Then the visitor gets a welcome frame (its
visitor id, the pre-chat form, the history of its running conversation) and talks in
JSON frames; agents' replies are pushed by the delivery workflow through the hub.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from uuid import UUID

from aiohttp import WSMsgType, web

from channels import webchat
from channels.base import ProviderConfig
from contact_centre.application import Receive, ReceiveResult, UnitOfWork
from contact_centre.conversations import ConversationStatus
from contact_centre.errors import ConflictError, DomainError, ValidationError
from contact_centre.interaction import Channel, Identity, IdentityKind
from infra.channels import ChannelServices
from infra.http.channel_routes import services
from infra.http.errors import ApiError
from infra.http.keys import RUNTIME
from infra.http.views import Opener, iso
from infra.identities import normalise_email
from infra.runtime import Runtime
from infra.writer import OverloadedError
from projections import inbox

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 16 * 1024
MAX_STRIKES = 5  # rate-limited frames before the socket is closed


async def visitor_socket(request: web.Request) -> web.StreamResponse:
    rt = request.app[RUNTIME]
    svc = services(rt)
    key = request.match_info["widget_key"]
    tenant_id = (
        await asyncio.to_thread(rt.app.claimed_tenant, "widget", key) if len(key) <= 128 else None
    )
    config = await asyncio.to_thread(svc.configs.get, tenant_id, "webchat") if tenant_id else None
    if tenant_id is None or config is None or config.text("widget_key") != key:
        raise ApiError(404, "not_found", "no webchat with this widget key")
    if not webchat.origin_allowed(request.headers.get("Origin"), config.strings("allowed_origins")):
        raise ApiError(403, "origin_not_allowed", "this page's origin may not use the widget")
    ip = webchat.client_ip(
        request.remote,
        request.headers.get("X-Forwarded-For"),
        svc.trusted_proxies,
    )
    if not svc.connect_limiter.allow(ip or "-"):
        raise ApiError(429, "rate_limited", "too many connections from this address")
    cookie = request.cookies.get(webchat.COOKIE)
    visitor = cookie if cookie and webchat.valid_visitor_id(cookie) else webchat.new_visitor_id()
    ws = web.WebSocketResponse(heartbeat=30, max_msg_size=MAX_FRAME_BYTES)
    if not ws.can_prepare(request).ok:
        raise ApiError(400, "not_websocket", "open this URL as a WebSocket")
    secure = request.secure or rt.settings.base_url.startswith("https://")
    ws.set_cookie(
        webchat.COOKIE,
        visitor,
        max_age=webchat.COOKIE_MAX_AGE,
        httponly=True,
        secure=secure,
        samesite="None" if secure else "Lax",
        path="/v1/webchat/",
    )
    await ws.prepare(request)
    if await asyncio.to_thread(rt.app.is_blocked, tenant_id, ip, visitor):
        await ws.close(code=webchat.CLOSE_BLOCKED, message=b"blocked")
        return ws
    session = VisitorSession(rt, svc, config, visitor, ip, ws)
    svc.hub.connected_visitor(ws, tenant_id, ip, visitor)
    try:
        await session.run()
    finally:
        session.leave()
        svc.hub.disconnected_visitor(ws)
    return ws


class VisitorSession:
    def __init__(
        self,
        rt: Runtime,
        svc: ChannelServices,
        config: ProviderConfig,
        visitor: str,
        ip: str | None,
        ws: web.WebSocketResponse,
    ) -> None:
        self.rt = rt
        self.svc = svc
        self.config = config
        self.tenant_id = config.tenant_id
        self.visitor = visitor
        self.ip = ip
        self.ws = ws
        self.conversation_id: UUID | None = None
        self.strikes = 0

    # -- lifecycle ------------------------------------------------------------------------
    async def run(self) -> None:
        if self.rt.projections_elsewhere:
            # the visitor may reconnect right after writing: let the inbox show it first
            await self.rt.projected(self.rt.settings.projection_wait_ms / 1000, ("inbox",))
        found = await asyncio.to_thread(self._running_conversation)
        history: list[dict[str, Any]] = []
        if found is not None:
            self._join(found)
            history = await asyncio.to_thread(self._history, found)
            await self._capture_network()
        await self.ws.send_json(
            {
                "type": "welcome",
                "visitor_id": self.visitor,
                "conversation_id": str(found) if found else None,
                "pre_chat": {
                    "fields": webchat.pre_chat_fields(self.config.settings),
                    "privacy_policy_url": self.config.settings.get("privacy_policy_url"),
                },
                "history": history,
            }
        )
        async for message in self.ws:
            if message.type is not WSMsgType.TEXT:
                continue  # binary frames are not part of the protocol; errors end the loop
            await self._frame(message.data)
            if self.ws.closed:
                break

    def leave(self) -> None:
        if self.conversation_id is not None:
            self.svc.hub.leave(self.conversation_id, self.ws)

    def _join(self, conversation_id: UUID) -> None:
        if self.conversation_id == conversation_id:
            return
        self.leave()
        self.conversation_id = conversation_id
        self.svc.hub.join(conversation_id, self.ws)

    # -- frames ---------------------------------------------------------------------------
    async def _frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            await self._error("malformed", "frames are JSON objects")
            return
        if not isinstance(frame, dict) or not isinstance(frame.get("type"), str):
            await self._error("malformed", "frames are JSON objects with a type")
            return
        kind = frame["type"]
        try:
            if kind == "typing":
                if self.conversation_id is not None:
                    self.svc.hub.visitor_typing(self.conversation_id, frame.get("typing") is True)
            elif kind in ("start", "message"):
                if not self.svc.message_limiter.allow(self.ip or "-"):
                    await self._rate_limited()
                    return
                await (self._start(frame) if kind == "start" else self._message(frame))
            else:
                raise ValidationError(f"unknown frame type {kind[:32]!r}")
        except DomainError as error:
            await self._error(error.code, error.detail, frame.get("id"))
        except OverloadedError:
            await self._error("overloaded", "try again shortly", frame.get("id"))

    async def _start(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is not None:
            raise ConflictError("the chat has started already; send messages")
        client_id = webchat.client_message_id(frame)
        form = webchat.parse_start(frame, self.config.settings)
        if form.email:
            normalise_email(form.email)  # refuse a malformed address before writing anything
        interaction = webchat.interaction(
            self.tenant_id, self.visitor, client_id, form.question, self.rt.clock.now(), form.name
        )
        app = self.rt.app

        def start(uow: UnitOfWork) -> ReceiveResult:
            result = Receive(app, interaction)(uow)
            app.capture_visitor_network_in(
                uow, self.tenant_id, result.conversation_id, self.ip, self.visitor
            )
            if form.email:
                email = Identity(IdentityKind.EMAIL, form.email)
                # someone else's address: the chat goes on without linking it
                with contextlib.suppress(ConflictError):
                    app.link_identity_in(uow, self.tenant_id, result.contact_id, email)
            return result

        result, _ = await self.rt.writer.run(start)
        self._join(result.conversation_id)
        await self.ws.send_json(
            {
                "type": "started",
                "id": client_id,
                "conversation_id": str(result.conversation_id),
                "message_id": str(result.message_id),
            }
        )

    async def _message(self, frame: dict[str, Any]) -> None:
        if self.conversation_id is None:
            raise ConflictError("start the chat first (send the pre-chat form)")
        client_id = webchat.client_message_id(frame)
        body = webchat.message_body(frame)
        interaction = webchat.interaction(
            self.tenant_id, self.visitor, client_id, body, self.rt.clock.now()
        )
        result, _ = await self.rt.writer.run(Receive(self.rt.app, interaction))
        self._join(result.conversation_id)  # a closed conversation was followed by a new one
        await self.ws.send_json(
            {
                "type": "ack",
                "id": client_id,
                "message_id": str(result.message_id),
                "conversation_id": str(result.conversation_id),
                "duplicate": result.duplicate,
            }
        )

    async def _capture_network(self) -> None:
        conversation_id = self.conversation_id
        if conversation_id is None:
            return
        try:
            await self.rt.writer.run(
                lambda uow: self.rt.app.capture_visitor_network_in(
                    uow, self.tenant_id, conversation_id, self.ip, self.visitor
                )
            )
        except DomainError as error:  # e.g. the conversation was erased meanwhile
            log.info("visitor network not captured (%s)", error.code)

    async def _rate_limited(self) -> None:
        self.strikes += 1
        if self.strikes >= MAX_STRIKES:
            await self.ws.close(code=webchat.CLOSE_RATE_LIMITED, message=b"rate limited")
            return
        await self._error("rate_limited", "slow down: too many messages from this address")

    async def _error(self, code: str, detail: str, frame_id: Any = None) -> None:
        if not self.ws.closed:
            reply: dict[str, Any] = {"type": "error", "error": code, "detail": detail}
            if isinstance(frame_id, str):
                reply["id"] = frame_id[:64]
            await self.ws.send_json(reply)

    # -- reads ----------------------------------------------------------------------------
    def _running_conversation(self) -> UUID | None:
        found = self.rt.app.find_thread(
            self.tenant_id, Channel.WEBCHAT, webchat.thread_key(self.visitor)
        )
        if found is None:
            return None
        with self.rt.readdb.read() as tx:
            row = inbox.get_conversation(tx, str(self.tenant_id), str(found))
        if row is None or row["status"] == ConversationStatus.CLOSED.value:
            return None
        return found

    def _history(self, conversation_id: UUID) -> list[dict[str, Any]]:
        """The messages of the conversation as the visitor sees them (never notes)."""
        self.rt.vault.refresh()
        with self.rt.readdb.read() as tx:
            rows = inbox.list_messages(tx, str(self.tenant_id), str(conversation_id))
        history = []
        for row in rows:
            if row["kind"] != "message":
                continue
            opener = Opener(self.rt.vault)
            if row["direction"] == "inbound":
                content = opener.content(row["content"])
                body = content.body if content else None
            else:
                body = opener.text(row["body"])
            history.append(
                {
                    "id": row["id"],
                    "direction": row["direction"],
                    "author": "visitor" if row["direction"] == "inbound" else "agent",
                    "body": body,
                    "at": iso(row["occurred_at"]),
                }
            )
        return history
