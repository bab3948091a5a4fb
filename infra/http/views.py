"""Rendering read-model rows as API JSON, opening sealed values for the caller.

An erased value (its scope key destroyed) renders as ``null`` and the object that held it
carries ``"erased": true`` — the explicit erased marker of the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from contact_centre.conversations import MessageContent
from contact_centre.privacy import Erased, Sealer
from projections.base import loads, sealed_from_text

PREVIEW_CHARS = 140


def iso(micros: int | None) -> str | None:
    if micros is None:
        return None
    moment = datetime.fromtimestamp(micros / 1_000_000, UTC)
    text = moment.isoformat(timespec="microseconds" if moment.microsecond else "seconds")
    return text.replace("+00:00", "Z")


class Opener:
    """Opens sealed read-model text; remembers whether anything was erased."""

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer
        self.erased = False

    def text(self, stored: Any) -> str | None:
        sealed = sealed_from_text(stored) if isinstance(stored, str) else stored
        if sealed is None:
            return None
        value = self.sealer.open(sealed)
        if isinstance(value, Erased):
            self.erased = True
            return None
        return value

    def content(self, stored: Any) -> MessageContent | None:
        text = self.text(stored)
        return None if text is None else MessageContent.from_json(text)


def render_contact(row: dict[str, Any], sealer: Sealer, *, identities: bool) -> dict[str, Any]:
    opener = Opener(sealer)
    contact: dict[str, Any] = {
        "id": row["contact_id"],
        "display_name": opener.text(row.get("contact_display_name")),
    }
    if identities and row.get("contact_identities"):
        contact["identities"] = [
            {"kind": kind, "address": opener.text(address)}
            for kind, address in loads(row["contact_identities"])
        ]
    if opener.erased:
        contact["erased"] = True
    return contact


def render_conversation(row: dict[str, Any], sealer: Sealer, *, detail: bool) -> dict[str, Any]:
    last: dict[str, Any] | None = None
    if row["last_direction"] is not None:
        opener = Opener(sealer)
        if row["last_direction"] == "inbound":
            content = opener.content(row["last_message"])
            text = content.body if content else None
        else:
            text = opener.text(row["last_message"])
        last = {
            "preview": text[:PREVIEW_CHARS] if text is not None else None,
            "direction": row["last_direction"],
            "occurred_at": iso(row["last_message_at"]),
        }
        if opener.erased:
            last["erased"] = True
    return {
        "id": row["id"],
        "channel": row["channel"],
        "status": row["status"],
        "assignee_id": row["assignee_id"],
        "contact": render_contact(row, sealer, identities=detail),
        "last_message": last,
        "unread": row["unread"],
        "message_count": row["message_count"],
        "opened_at": iso(row["opened_at"]),
        "updated_at": iso(row["updated_at"]),
        "queue_id": row["queue_id"],
        "priority": row["priority"],
        "waiting_since": iso(row["waiting_since"]),
    }


def render_message(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    opener = Opener(sealer)
    message: dict[str, Any] = {
        "id": row["id"],
        "direction": row["direction"],
        "body": opener.text(row["body"]) if row["direction"] != "inbound" else None,
        "occurred_at": iso(row["occurred_at"]),
        "recorded_at": iso(row["recorded_at"]),
    }
    if row["direction"] == "inbound":
        content = opener.content(row["content"])
        names = content.attachments if content else ()
        message["body"] = content.body if content else None
        message["provider"] = row["provider"]
        message["from"] = {
            "kind": row["sender_kind"],
            "address": content.sender if content else None,
            "display_name": content.sender_name if content else None,
        }
        if content and content.subject is not None:
            message["subject"] = content.subject
        message["attachments"] = [
            {
                "name": names[i][0] if i < len(names) else None,
                "content_type": meta["content_type"],
                "size": meta["size"],
                "sha256": meta["sha256"],
                "url": names[i][1] if i < len(names) else None,
            }
            for i, meta in enumerate(loads(row["attachments"]))
        ]
    else:
        message["author"] = row["author"]
    if opener.erased:
        message["erased"] = True
    return message


def render_note(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    opener = Opener(sealer)
    note: dict[str, Any] = {
        "id": row["id"],
        "author": row["author"],
        "body": opener.text(row["body"]),
        "created_at": iso(row["occurred_at"]),
    }
    if opener.erased:
        note["erased"] = True
    return note


def render_crm_contact(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    opener = Opener(sealer)
    attributes_text = opener.text(row["attributes"])
    contact: dict[str, Any] = {
        "id": row["id"],
        "display_name": opener.text(row["display_name"]),
        "identities": [
            {"kind": kind, "address": opener.text(address)}
            for kind, address in loads(row["identities"])
        ],
        "external_id": opener.text(row.get("external_id")),
        "tags": loads(row["tags"]),
        "attributes": loads(attributes_text) if attributes_text else {},
        "opted_out": loads(row["opted_out"]),
        "first_contact_at": iso(row["first_contact_at"]),
        "last_contact_at": iso(row["last_contact_at"]),
        "open_conversations": row["open_conversations"],
        "total_conversations": row["total_conversations"],
        "created_at": iso(row["created_at"]),
        "updated_at": iso(row["updated_at"]),
    }
    if opener.erased:
        contact["erased"] = True
    return contact


def render_timeline_entry(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    opener = Opener(sealer)
    entry: dict[str, Any] = {
        "id": row["id"],
        "conversation_id": row["conversation_id"],
        "channel": row["channel"],
        "kind": row["kind"],
        "occurred_at": iso(row["occurred_at"]),
        "detail": loads(row["detail"]),
    }
    if row["direction"] is not None:
        entry["direction"] = row["direction"]
    if row["content"] is not None:
        if row["kind"] == "message" and row["direction"] == "inbound":
            content = opener.content(row["content"])
            entry["body"] = content.body if content else None
            if content and content.subject is not None:
                entry["subject"] = content.subject
        else:
            entry["body"] = opener.text(row["content"])
    if opener.erased:
        entry["erased"] = True
    return entry
