"""What the channels add to a conversation's API view: delivery state beside each reply,
calls (status, durations, recording, transcript), and for webchat the visitor's typing
and, for admins only, the visitor's IP and cookie."""

from __future__ import annotations

import json
from typing import Any
from uuid import UUID

from contact_centre.application import Principal
from contact_centre.privacy import Sealer
from contact_centre.tenancy import Role
from infra.db import Tx
from infra.http.views import Opener, iso
from infra.runtime import Runtime
from projections import channel_activity, deliveries


def render_delivery(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {
        "status": row["status"],
        "provider": row["provider"],
        "provider_status": row["provider_status"],
        "error_code": row["error_code"],
        "attempts": row["attempts"],
        "updated_at": iso(row["updated_at"]),
    }


def render_calls(rows: list[dict[str, Any]], opener: Opener) -> list[dict[str, Any]]:
    calls: dict[str, dict[str, Any]] = {}
    for row in rows:
        call = calls.setdefault(
            row["call_ref"],
            {
                "message_id": row["call_ref"],
                "status": None,
                "duration_seconds": None,
                "events": [],
                "recording": None,
                "transcript": None,
            },
        )
        if row["kind"] == "status":
            call["status"] = row["status"]
            if row["duration_seconds"] is not None:
                call["duration_seconds"] = row["duration_seconds"]
            call["events"].append(
                {
                    "status": row["status"],
                    "duration_seconds": row["duration_seconds"],
                    "at": iso(row["at"]),
                }
            )
        elif row["kind"] == "recording":
            text = opener.text(row["payload"])
            doc = json.loads(text) if text else {"sid": None, "url": None}
            call["recording"] = {
                "sid": doc["sid"],
                "url": doc["url"],
                "duration_seconds": row["duration_seconds"],
            }
        else:
            call["transcript"] = opener.text(row["payload"])
    return list(calls.values())


def enrich_conversation(rt: Runtime, tx: Tx, principal: Principal, body: dict[str, Any]) -> None:
    tenant = str(principal.tenant_id)
    conversation_id = str(body["id"])
    outbound = [m["id"] for m in body["messages"] if m["direction"] == "outbound"]
    found = deliveries.for_messages(tx, tenant, outbound)
    for message in body["messages"]:
        if message["direction"] == "outbound":
            message["delivery"] = render_delivery(found.get(message["id"]))
    if body["channel"] == "voice":
        opener = Opener(rt.vault)
        rows = channel_activity.call_events(tx, tenant, conversation_id)
        body["calls"] = render_calls(rows, opener)
    if body["channel"] == "webchat":
        hub = rt.channels.hub if rt.channels else None
        body["visitor_typing"] = bool(hub and hub.is_visitor_typing(UUID(conversation_id)))
        if principal.role is Role.ADMIN:  # P4: the visitor's IP is for admins only
            networks = channel_activity.visitor_networks(tx, tenant, conversation_id)
            body["visitor_network"] = render_network(networks[-1], rt.vault) if networks else None


def render_network(row: dict[str, Any], sealer: Sealer) -> dict[str, Any]:
    opener = Opener(sealer)
    text = opener.text(row["network"])
    doc = json.loads(text) if text else {"ip": None, "visitor_id": None}
    shown: dict[str, Any] = {
        "ip": doc["ip"],
        "visitor_id": doc["visitor_id"],
        "captured_at": iso(row["at"]),
    }
    if opener.erased:
        shown["erased"] = True
    return shown
