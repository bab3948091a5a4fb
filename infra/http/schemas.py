"""Validation of request bodies at the edge: precise messages, nothing written on failure."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from aiohttp import web

from contact_centre.errors import ValidationError
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)
from infra.http.errors import ApiError


async def read_json(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 4xx ApiError."""
    content_type = request.headers.get("Content-Type", "")
    if request.can_read_body and "json" not in content_type.lower():
        raise ApiError(415, "unsupported_media_type", "send the body as application/json")
    raw = await request.read()
    if not raw:
        raise ApiError(400, "malformed_json", "the request body is empty")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "malformed_json", "the request body is not valid JSON") from None
    if not isinstance(doc, dict):
        raise ApiError(422, "invalid", "the request body must be a JSON object")
    return doc


def reject_unknown(doc: dict[str, Any], allowed: set[str], where: str = "body") -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise ValidationError(f"unknown field(s) in {where}: {', '.join(unknown)}")


def get_str(
    doc: dict[str, Any], name: str, *, required: bool = True, max_len: int = 10_000
) -> str | None:
    value = doc.get(name)
    if value is None:
        if required:
            raise ValidationError(f"{name} is required")
        return None
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    if len(value) > max_len:
        raise ValidationError(f"{name} is longer than {max_len} characters")
    return value


def req_str(doc: dict[str, Any], name: str, *, max_len: int = 10_000) -> str:
    value = get_str(doc, name, required=True, max_len=max_len)
    assert value is not None
    return value


def get_uuid(doc: dict[str, Any], name: str, *, required: bool = True) -> UUID | None:
    value = get_str(doc, name, required=required, max_len=64)
    if value is None:
        return None
    return parse_uuid(value, name)


def parse_uuid(value: str, name: str = "id") -> UUID:
    try:
        return UUID(value)
    except ValueError:
        raise ValidationError(f"{name} must be a UUID") from None


def parse_time(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be an ISO 8601 date-time string")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValidationError(f"{name} must be an ISO 8601 date-time") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"{name} must include a time zone (e.g. Z)")
    return parsed


def _enum(value: Any, enum: type[Any], name: str) -> Any:
    try:
        return enum(value)
    except ValueError:
        options = ", ".join(m.value for m in enum)
        raise ValidationError(f"{name} must be one of: {options}") from None


def parse_identity(value: Any, name: str, *, with_name: bool) -> Identity:
    if not isinstance(value, dict):
        raise ValidationError(f"{name} must be an object with kind and address")
    reject_unknown(value, {"kind", "address", "display_name"}, name)
    kind = _enum(value.get("kind"), IdentityKind, f"{name}.kind")
    address = get_str(value, "address", max_len=320)
    display_name = get_str(value, "display_name", required=False, max_len=256)
    if not with_name:
        display_name = None
    assert address is not None
    return Identity(kind, address, display_name)


def parse_attachment(value: Any, index: int) -> Attachment:
    where = f"attachments[{index}]"
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object")
    reject_unknown(value, {"name", "content_type", "size", "sha256", "url"}, where)
    size = value.get("size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise ValidationError(f"{where}.size must be an integer")
    return Attachment(
        name=get_str(value, "name", required=False, max_len=256) or "",
        content_type=get_str(value, "content_type", required=False, max_len=255)
        or "application/octet-stream",
        size=size,
        sha256=get_str(value, "sha256", required=False, max_len=64),
        url=get_str(value, "url", required=False, max_len=2000),
    )


INTERACTION_FIELDS = {
    "channel",
    "direction",
    "provider",
    "provider_message_id",
    "from",
    "to",
    "thread_key",
    "body",
    "subject",
    "occurred_at",
    "attachments",
}


def parse_interaction(doc: dict[str, Any], tenant_id: UUID, now: datetime) -> Interaction:
    """The generic inbound shape of ``POST /v1/interactions``."""
    reject_unknown(doc, INTERACTION_FIELDS)
    channel = _enum(doc.get("channel"), Channel, "channel")
    direction = _enum(doc.get("direction", "inbound"), Direction, "direction")
    attachments_raw = doc.get("attachments") or []
    if not isinstance(attachments_raw, list):
        raise ValidationError("attachments must be a list")
    occurred_raw = doc.get("occurred_at")
    recipient_raw = doc.get("to")
    return Interaction(
        tenant_id=tenant_id,
        channel=channel,
        direction=direction,
        provider=req_str(doc, "provider", max_len=64),
        provider_message_id=req_str(doc, "provider_message_id", max_len=512),
        sender=parse_identity(doc.get("from"), "from", with_name=True),
        recipient=(
            parse_identity(recipient_raw, "to", with_name=False)
            if recipient_raw is not None
            else None
        ),
        thread_key=get_str(doc, "thread_key", required=False, max_len=2000),
        body=get_str(doc, "body", required=False, max_len=100_000) or "",
        subject=get_str(doc, "subject", required=False, max_len=1000),
        occurred_at=parse_time(occurred_raw, "occurred_at") if occurred_raw is not None else now,
        attachments=tuple(parse_attachment(a, i) for i, a in enumerate(attachments_raw)),
    )
