"""Webchat: the visitor's side of the widget — origin and network checks, the pre-chat
form, per-IP rate limits, and the hub that pushes agents' replies to open sockets.

Frames are JSON objects with a ``type`` (see docs/channels.md for the protocol).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from contact_centre.deliveries import OutboundJob, SendResult
from contact_centre.errors import ValidationError
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction

PROVIDER = "webchat"
COOKIE = "cc_visitor"
COOKIE_MAX_AGE = 183 * 24 * 3600  # six months, the chat-visitor retention period (P1)
_VISITOR_ID = re.compile(r"^v_[A-Za-z0-9_-]{16,64}$")
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
PRE_CHAT_FIELDS = ("name", "email", "question")
DEFAULT_PRE_CHAT = [{"field": "name", "required": True}, {"field": "question", "required": True}]

# Close codes (4000-4999 are the application's own).
CLOSE_BLOCKED = 4403
CLOSE_RATE_LIMITED = 4429
CLOSE_POLICY = 1008  # policy violation (e.g. the origin changed)


def new_visitor_id() -> str:
    return "v_" + secrets.token_urlsafe(18)


def valid_visitor_id(value: str | None) -> bool:
    return bool(value) and bool(_VISITOR_ID.match(value or ""))


def thread_key(visitor_id: str) -> str:
    """One running conversation per visitor: a reconnect finds it again."""
    return f"webchat:{visitor_id}"


def origin_allowed(origin: str | None, allowed: Iterable[str]) -> bool:
    if not origin:
        return False
    wanted = origin.strip().rstrip("/").lower()
    return any(wanted == a.strip().rstrip("/").lower() for a in allowed)


def parse_networks(raw: Iterable[str]) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(item.strip(), strict=False) for item in raw if item.strip()]


def client_ip(
    peer: str | None,
    forwarded_for: str | None,
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str | None:
    """The visitor's address: the peer, unless the peer is a trusted proxy, in which case
    the right-most X-Forwarded-For entry that is not itself a trusted proxy."""

    def is_trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in trusted)

    if peer is None or not is_trusted(peer) or not forwarded_for:
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        try:
            address = str(ipaddress.ip_address(hop))  # canonical, as blocks are stored
        except ValueError:
            return peer  # a malformed header: trust nothing in it
        if not is_trusted(address):
            return address
    return peer  # every hop is one of our proxies


class RateLimiter:
    """A token bucket per key (an IP address): ``rate`` per second, bursts of ``burst``.
    Bounded memory: the least recently seen keys are forgotten first."""

    def __init__(self, rate: float, burst: int, max_keys: int = 50_000) -> None:
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def allow(self, key: str, now: float | None = None) -> bool:
        moment = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (float(self.burst), moment))
            tokens = min(float(self.burst), tokens + (moment - last) * self.rate)
            allowed = tokens >= 1.0
            self._buckets[key] = (tokens - 1.0 if allowed else tokens, moment)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
            return allowed


@dataclass(frozen=True, slots=True)
class PreChat:
    name: str | None
    email: str | None
    question: str
    consent: bool


def pre_chat_fields(settings: dict[str, Any]) -> list[dict[str, Any]]:
    raw = settings.get("pre_chat_fields")
    return raw if isinstance(raw, list) else DEFAULT_PRE_CHAT


def parse_start(frame: dict[str, Any], settings: dict[str, Any]) -> PreChat:
    """Validate the pre-chat form against the tenant's configured fields."""
    values: dict[str, str | None] = {}
    for name in PRE_CHAT_FIELDS:
        value = frame.get(name)
        if value is not None and (not isinstance(value, str) or len(value) > 2_000):
            raise ValidationError(f"{name} must be a string of at most 2000 characters")
        values[name] = value.strip() if isinstance(value, str) and value.strip() else None
    for spec in pre_chat_fields(settings):
        if spec.get("required") and not values.get(str(spec.get("field"))):
            raise ValidationError(f"{spec.get('field')} is required")
    if values["name"] and len(values["name"]) > 200:
        raise ValidationError("name must be at most 200 characters")
    consent = frame.get("consent") is True
    if settings.get("privacy_policy_url") and not consent:
        raise ValidationError("consent to the privacy policy is required")
    return PreChat(values["name"], values["email"], values["question"] or "", consent)


def client_message_id(frame: dict[str, Any]) -> str:
    raw = frame.get("id")
    if not isinstance(raw, str) or not _CLIENT_ID.match(raw):
        raise ValidationError("id must be 1-64 letters, digits or _.:- (the client's message id)")
    return raw


def message_body(frame: dict[str, Any], key: str = "body") -> str:
    body = frame.get(key)
    if not isinstance(body, str) or not body.strip():
        raise ValidationError(f"{key} must be a non-empty string")
    if len(body) > 10_000:
        raise ValidationError(f"{key} must be at most 10000 characters")
    return body


def interaction(
    tenant_id: UUID,
    visitor_id: str,
    client_id: str,
    body: str,
    now: datetime,
    name: str | None = None,
) -> Interaction:
    return Interaction(
        tenant_id=tenant_id,
        channel=Channel.WEBCHAT,
        direction=Direction.INBOUND,
        provider=PROVIDER,
        # A resend after a reconnect carries the same client id: recorded once.
        provider_message_id=f"{visitor_id}:{client_id}",
        sender=Identity(IdentityKind.VISITOR, visitor_id, name),
        thread_key=thread_key(visitor_id),
        body=body,
        occurred_at=now,
    )


class Socket(Protocol):
    async def send_json(self, data: Any) -> None: ...

    async def close(self, *, code: int = ..., message: bytes = ...) -> bool: ...


@dataclass
class _Entry:
    socket: Socket
    loop: asyncio.AbstractEventLoop


class WebchatHub:
    """The open visitor sockets of this process, by conversation; pushes are thread-safe
    (the delivery workflow pushes from its own thread)."""

    def __init__(self) -> None:
        self._sockets: dict[UUID, list[_Entry]] = {}
        self._typing: dict[UUID, float] = {}
        # every open visitor socket of this process: socket -> (tenant, ip, visitor id)
        self._visitors: dict[Socket, tuple[UUID, str | None, str]] = {}
        self._lock = threading.Lock()

    def connected_visitor(
        self, socket: Socket, tenant_id: UUID, ip: str | None, visitor: str
    ) -> None:
        with self._lock:
            self._visitors[socket] = (tenant_id, ip, visitor)

    def disconnected_visitor(self, socket: Socket) -> None:
        with self._lock:
            self._visitors.pop(socket, None)

    async def close_blocked(self, tenant_id: UUID, kind: str, value: str) -> int:
        """Close the open sockets of a visitor just blocked (by ``ip`` or ``visitor``)."""
        wanted = value.strip().lower()
        with self._lock:
            matching = [
                socket
                for socket, (tenant, ip, visitor) in self._visitors.items()
                if tenant == tenant_id
                and ((ip or "") if kind == "ip" else visitor).lower() == wanted
            ]
        for socket in matching:
            await socket.close(code=CLOSE_BLOCKED, message=b"blocked")
        return len(matching)

    def join(self, conversation_id: UUID, socket: Socket) -> None:
        entry = _Entry(socket, asyncio.get_running_loop())
        with self._lock:
            self._sockets.setdefault(conversation_id, []).append(entry)

    def leave(self, conversation_id: UUID, socket: Socket) -> None:
        with self._lock:
            entries = [e for e in self._sockets.get(conversation_id, []) if e.socket is not socket]
            if entries:
                self._sockets[conversation_id] = entries
            else:
                self._sockets.pop(conversation_id, None)
                self._typing.pop(conversation_id, None)

    def connected(self, conversation_id: UUID) -> int:
        with self._lock:
            return len(self._sockets.get(conversation_id, []))

    def visitor_typing(self, conversation_id: UUID, typing: bool) -> None:
        with self._lock:
            if typing:
                self._typing[conversation_id] = time.monotonic()
            else:
                self._typing.pop(conversation_id, None)

    def is_visitor_typing(self, conversation_id: UUID, within: float = 10.0) -> bool:
        with self._lock:
            since = self._typing.get(conversation_id)
        return since is not None and time.monotonic() - since < within

    def push(self, conversation_id: UUID, frame: dict[str, Any], timeout: float = 5.0) -> int:
        """Send ``frame`` to every socket of the conversation, from any thread; returns how
        many sockets took it."""
        with self._lock:
            entries = list(self._sockets.get(conversation_id, []))
        sent = 0
        for entry in entries:
            future = asyncio.run_coroutine_threadsafe(
                _send(entry.socket.send_json(frame)), entry.loop
            )
            try:
                sent += 1 if future.result(timeout) else 0
            except (TimeoutError, RuntimeError):
                future.cancel()
        return sent

    async def push_async(self, conversation_id: UUID, frame: dict[str, Any]) -> int:
        """The same as :meth:`push`, from a coroutine on the sockets' own loop."""
        with self._lock:
            entries = list(self._sockets.get(conversation_id, []))
        results = [await _send(e.socket.send_json(frame)) for e in entries]
        return sum(results)


async def _send(sending: Awaitable[None]) -> bool:
    try:
        await sending
    except (ConnectionError, RuntimeError):
        return False  # the socket closed meanwhile; the visitor gets it with the history
    return True


def reply_frame(job: OutboundJob, at: datetime) -> dict[str, Any]:
    return {
        "type": "message",
        "id": str(job.message_id),
        "direction": "outbound",
        "author": "agent",
        "body": job.body,
        "at": at.isoformat().replace("+00:00", "Z"),
    }


class WebchatSender:
    """Delivers an agent's reply to the visitor's open sockets. With none open, the reply
    is kept ("sent") and shown with the history when the visitor reconnects."""

    def __init__(self, hub: WebchatHub, now: Callable[[], datetime]) -> None:
        self.hub = hub
        self.now = now

    def send(self, job: OutboundJob) -> SendResult:
        reached = self.hub.push(job.conversation_id, reply_frame(job, self.now()))
        return SendResult.accepted(str(job.message_id), "delivered" if reached else "sent")
