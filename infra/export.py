"""Data-subject export: everything the product holds about a subject, as documented JSON
(docs/export-schema.json), assembled from the read models and opened for the download."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from contact_centre.privacy import Sealer
from infra.db import Tx
from infra.http.channel_views import render_calls, render_delivery, render_network
from infra.http.views import Opener, iso, render_crm_contact, render_message, render_note
from projections import channel_activity, crm, deliveries, inbox
from projections import retention as ledger
from projections.base import loads

EXPORT_SCHEMA = "https://contact-centre.example/schemas/subject-export/v1"


def _conversations(tx: Tx, sealer: Sealer, tenant: str, contact_id: str) -> list[dict[str, Any]]:
    rows = inbox.list_conversations(tx, tenant, contact_id=contact_id, limit=100_000)
    conversations = []
    for row in sorted(rows, key=lambda r: (r["opened_at"], r["id"])):
        conversation_id = str(row["id"])
        entries = inbox.list_messages(tx, tenant, conversation_id)
        body: dict[str, Any] = {
            "id": row["id"],
            "channel": row["channel"],
            "status": row["status"],
            "opened_at": iso(row["opened_at"]),
            "updated_at": iso(row["updated_at"]),
            "messages": [render_message(e, sealer) for e in entries if e["kind"] == "message"],
            "notes": [render_note(e, sealer) for e in entries if e["kind"] == "note"],
        }
        outbound = [m["id"] for m in body["messages"] if m["direction"] == "outbound"]
        delivered = deliveries.for_messages(tx, tenant, outbound)
        for message in body["messages"]:
            if message["direction"] == "outbound":
                message["delivery"] = render_delivery(delivered.get(message["id"]))
        if row["channel"] == "voice":
            calls = channel_activity.call_events(tx, tenant, conversation_id)
            body["calls"] = render_calls(calls, Opener(sealer))
        if row["channel"] == "webchat":
            networks = channel_activity.visitor_networks(tx, tenant, conversation_id)
            body["visitor_network"] = render_network(networks[-1], sealer) if networks else None
        conversations.append(body)
    return conversations


def _requests(tx: Tx, tenant: str, contact_id: str) -> list[dict[str, Any]]:
    return [
        {
            "id": r["id"],
            "kind": r["kind"],
            "status": r["status"],
            "received_at": iso(r["received_at"]),
            "due_at": iso(r["due_at"]),
            "closed_at": iso(r["closed_at"]),
        }
        for r in ledger.requests(tx, tenant)
        if contact_id in loads(r["contact_ids"])
    ]


def subject_export(
    tx: Tx,
    sealer: Sealer,
    tenant_id: UUID,
    contact_ids: list[str],
    *,
    request_id: UUID | None,
    generated_at: datetime,
) -> dict[str, Any]:
    tenant = str(tenant_id)
    subjects = []
    for contact_id in contact_ids:
        row = crm.get_contact(tx, tenant, contact_id)
        if row is None:  # erased or unknown: nothing held any more
            subjects.append(
                {
                    "contact_id": contact_id,
                    "erased": True,
                    "identities": [],
                    "conversations": [],
                    "consents": [],
                    "requests": _requests(tx, tenant, contact_id),
                }
            )
            continue
        contact = render_crm_contact(row, sealer)
        subjects.append(
            {
                "contact_id": contact_id,
                "display_name": contact["display_name"],
                "erased": bool(contact.get("erased", False)),
                "restricted": bool(row.get("restricted")),
                "identities": contact["identities"],
                "tags": contact["tags"],
                "attributes": contact["attributes"],
                "consents": [{"channel": c, "status": "opted_out"} for c in contact["opted_out"]],
                "first_contact_at": contact["first_contact_at"],
                "last_contact_at": contact["last_contact_at"],
                "conversations": _conversations(tx, sealer, tenant, contact_id),
                "requests": _requests(tx, tenant, contact_id),
            }
        )
    return {
        "$schema": EXPORT_SCHEMA,
        "format": "contact-centre/subject-export",
        "version": 1,
        "generated_at": iso(int(generated_at.timestamp() * 1_000_000)),
        "tenant_id": tenant,
        "request_id": str(request_id) if request_id else None,
        "subjects": subjects,
    }
