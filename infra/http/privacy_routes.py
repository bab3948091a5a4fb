"""Privacy: retention policy and ledger, legal holds, data-subject requests and exports,
erasure, restriction, agent deletion, tenant termination, and the audit log."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any
from uuid import UUID

from aiohttp import web

from contact_centre.application import Principal
from contact_centre.compliance import HoldTarget, RequestKind
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.interaction import Identity, IdentityKind
from contact_centre.retention import RetentionPolicy
from contact_centre.tenancy import Role
from infra.db import Tx
from infra.export import subject_export
from infra.http.auditing import record_read
from infra.http.auth import authenticate, require_role
from infra.http.errors import ApiError
from infra.http.keys import AUTH, RUNTIME
from infra.http.paging import page_limit
from infra.http.schemas import get_str, parse_time, parse_uuid, read_json, reject_unknown, req_str
from infra.http.views import iso
from infra.openpgp import encrypt, fingerprint
from infra.runtime import Runtime
from projections import retention as ledger
from projections.base import loads, micros

ADMIN = frozenset({Role.ADMIN})
SUPERVISORS = frozenset({Role.ADMIN, Role.SUPERVISOR})
NEAR_DUE = timedelta(days=7)


async def _caller(request: web.Request, roles: frozenset[Role]) -> tuple[Principal, Runtime]:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, roles)
    return principal, request.app[RUNTIME]


def _path_uuid(request: web.Request, name: str) -> UUID:
    try:
        return UUID(request.match_info[name])
    except ValueError:
        raise ApiError(404, "not_found", f"no such {name.removesuffix('_id')}") from None


async def _read(rt: Runtime, fn: Any, *args: Any) -> Any:
    def run() -> Any:
        with rt.readdb.read() as tx:
            return fn(tx, *args)

    return await asyncio.to_thread(run)


async def _settle(rt: Runtime) -> None:
    """Privacy commands apply their events to the read models as they save; wait for any
    other writes too (bounded), so the next read sees the result."""
    await rt.projected(rt.settings.projection_wait_ms / 1000)


# -- retention ----------------------------------------------------------------------------
async def get_policy(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, SUPERVISORS)
    state = await _read(rt, ledger.tenant_state, str(principal.tenant_id))
    policy = RetentionPolicy.from_dict(loads(state["policy"]) if state else None)
    return web.json_response(_policy_body(policy))


def _policy_body(policy: RetentionPolicy) -> dict[str, Any]:
    return {
        "months": dict(policy.months),
        "contact_notice_days": policy.contact_notice_days,
        "marketing_suppression": "kept while the tenant exists",
    }


async def put_policy(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request)
    reject_unknown(doc, {"months", "contact_notice_days"})
    if not isinstance(doc.get("months") or {}, dict):
        raise ValidationError("months must be an object of category: months")
    changes = dict(doc.get("months") or {})
    if "contact_notice_days" in doc:
        changes["contact_notice_days"] = doc["contact_notice_days"]
    policy, _ = await rt.writer.run(
        lambda uow: rt.app.change_retention_policy_in(uow, principal.tenant_id, changes)
    )
    await _settle(rt)
    return web.json_response(_policy_body(policy))


async def get_ledger(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    category = request.query.get("category") or None
    status = request.query.get("status") or None
    contact = request.query.get("contact_id") or None
    after = request.query.get("cursor") or None
    limit = page_limit(request.query.get("limit"))
    tenant = str(principal.tenant_id)

    def query(tx: Tx) -> dict[str, Any]:
        state = ledger.tenant_state(tx, tenant) or {}
        policy = RetentionPolicy.from_dict(loads(state["policy"]) if state else None)
        held = ledger.held_targets(tx, tenant)
        rows = ledger.scopes(
            tx,
            tenant,
            category=category,
            status=status,
            contact_id=str(parse_uuid(contact, "contact_id")) if contact else None,
            after=after,
            limit=limit + 1,
        )
        more = len(rows) > limit
        rows = rows[:limit]
        items = []
        for row in rows:
            due = ledger.due_at(row, policy, state)
            items.append(
                {
                    "scope": row["scope_id"],
                    "kind": row["kind"],
                    "subject_id": row["subject_id"],
                    "category": row["category"],
                    "status": row["status"],
                    "anchor_at": iso(row["anchor_at"]),
                    "due_at": due.isoformat() if due else None,
                    "held": ledger.is_held(row, held),
                    "erased_at": iso(row["erased_at"]),
                    "contact_id": row["contact_id"],
                }
            )
        return {"items": items, "next": rows[-1]["scope_id"] if more and rows else None}

    return web.json_response(await _read(rt, query))


async def get_deletions(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    since = parse_time(request.query["since"], "since") if "since" in request.query else None
    rows = await _read(
        rt,
        ledger.deletions,
        str(principal.tenant_id),
        micros(since) if since else 0,
        page_limit(request.query.get("limit"), 200),
    )
    return web.json_response(
        {
            "items": [
                {
                    "scope": r["id"],
                    "kind": r["scope_kind"],
                    "subject_id": r["subject_id"],
                    "category": r["category"],
                    "rule": r["rule"],
                    "request_id": r["request_id"],
                    "at": iso(r["at"]),
                }
                for r in rows
            ]
        }
    )


async def post_retention_run(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request) if request.can_read_body else {}
    reject_unknown(doc, {"dry_run"})
    dry_run = doc.get("dry_run", True)
    if not isinstance(dry_run, bool):
        raise ValidationError("dry_run must be true or false")
    report = await asyncio.to_thread(
        rt.privacy.sweep, rt.clock.now(), tenant=principal.tenant_id, dry_run=dry_run
    )
    await _settle(rt)
    body = report.summary()
    body["items"] = [vars(action) for action in report.actions[:1000]]
    return web.json_response(body)


# -- holds --------------------------------------------------------------------------------
async def post_hold(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request)
    reject_unknown(doc, {"target_kind", "target_id", "reason"})
    try:
        target = HoldTarget(req_str(doc, "target_kind", max_len=32))
    except ValueError:
        raise ValidationError("target_kind must be contact, conversation or tenant") from None
    target_id = parse_uuid(req_str(doc, "target_id", max_len=64), "target_id")
    reason = req_str(doc, "reason", max_len=2000)
    hold_id, _ = await rt.writer.run(
        lambda uow: rt.app.place_hold_in(
            uow, principal.tenant_id, target, target_id, reason, principal.actor
        )
    )
    await _settle(rt)
    return web.json_response(
        {"hold_id": str(hold_id), "target_kind": target.value, "target_id": str(target_id)},
        status=201,
    )


async def list_holds(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    rows = await _read(rt, ledger.holds, str(principal.tenant_id))
    return web.json_response(
        {
            "items": [
                {
                    "hold_id": r["hold_id"],
                    "target_kind": r["target_kind"],
                    "target_id": r["target_id"],
                    "placed_by": r["placed_by"],
                    "placed_at": iso(r["placed_at"]),
                    "released_by": r["released_by"],
                    "released_at": iso(r["released_at"]),
                    "active": r["released_at"] is None,
                }
                for r in rows
            ]
        }
    )


async def release_hold(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    hold_id = _path_uuid(request, "hold_id")
    await rt.writer.run(
        lambda uow: rt.app.release_hold_in(uow, principal.tenant_id, hold_id, principal.actor)
    )
    await _settle(rt)
    return web.json_response({"hold_id": str(hold_id), "active": False})


# -- data-subject requests ----------------------------------------------------------------
def _request_body(row: dict[str, Any], now_us: int) -> dict[str, Any]:
    due = int(row["due_at"])
    open_ = row["status"] == "open"
    return {
        "request_id": row["id"],
        "kind": row["kind"],
        "status": row["status"],
        "contact_ids": loads(row["contact_ids"]),
        "identity_kind": row["identity_kind"],
        "received_at": iso(row["received_at"]),
        "due_at": iso(due),
        "closed_at": iso(row["closed_at"]),
        "overdue": open_ and due < now_us,
        "near_due": open_ and now_us <= due <= now_us + int(NEAR_DUE.total_seconds() * 1e6),
        "outcome": loads(row["outcome"]) if row["outcome"] else None,
    }


async def post_request(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request)
    reject_unknown(doc, {"kind", "subject", "contact_id", "note", "received_at"})
    try:
        kind = RequestKind(req_str(doc, "kind", max_len=32))
    except ValueError:
        options = ", ".join(k.value for k in RequestKind)
        raise ValidationError(f"kind must be one of: {options}") from None
    identity = None
    subject = doc.get("subject")
    if subject is not None:
        if not isinstance(subject, dict):
            raise ValidationError("subject must be {kind, address}")
        reject_unknown(subject, {"kind", "address"}, "subject")
        try:
            identity = Identity(
                IdentityKind(str(subject.get("kind"))), req_str(subject, "address", max_len=320)
            )
        except ValueError:
            raise ValidationError("subject.kind must be phone, email, visitor or handle") from None
    contact_raw = get_str(doc, "contact_id", required=False, max_len=64)
    contact_id = parse_uuid(contact_raw, "contact_id") if contact_raw else None
    note = get_str(doc, "note", required=False, max_len=4000)
    received = doc.get("received_at")
    received_at = parse_time(received, "received_at") if received is not None else None
    request_id, _ = await rt.writer.run(
        lambda uow: rt.app.receive_request_in(
            uow, principal.tenant_id, kind, identity, contact_id, note, received_at
        )
    )
    await _settle(rt)
    row = await _read(rt, ledger.get_request, str(principal.tenant_id), str(request_id))
    return web.json_response(_request_body(row, micros(rt.clock.now())), status=201)


async def list_requests(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, SUPERVISORS)
    status = request.query.get("status") or None
    now_us = micros(rt.clock.now())
    rows = await _read(rt, lambda tx: ledger.requests(tx, str(principal.tenant_id), status=status))
    items = [_request_body(r, now_us) for r in rows]
    if request.query.get("attention") == "true":  # the dashboard: near or past due
        items = [i for i in items if i["overdue"] or i["near_due"]]
    return web.json_response({"items": items})


async def _request_row(request: web.Request, principal: Principal, rt: Runtime) -> dict[str, Any]:
    request_id = _path_uuid(request, "request_id")
    row = await _read(rt, ledger.get_request, str(principal.tenant_id), str(request_id))
    if row is None:
        raise NotFoundError(f"request {request_id} not found")
    return dict(row)


async def get_request(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, SUPERVISORS)
    row = await _request_row(request, principal, rt)
    return web.json_response(_request_body(row, micros(rt.clock.now())))


async def extend_request(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    request_id = _path_uuid(request, "request_id")
    doc = await read_json(request)
    reject_unknown(doc, {"days", "reason"})
    days = doc.get("days")
    if not isinstance(days, int) or isinstance(days, bool):
        raise ValidationError("days must be a whole number")
    reason = req_str(doc, "reason", max_len=2000)
    await rt.writer.run(
        lambda uow: rt.app.extend_request_in(uow, principal.tenant_id, request_id, days, reason)
    )
    await _settle(rt)
    row = await _request_row(request, principal, rt)
    return web.json_response(_request_body(row, micros(rt.clock.now())))


async def reject_request(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    request_id = _path_uuid(request, "request_id")
    doc = await read_json(request)
    reject_unknown(doc, {"reason"})
    reason = req_str(doc, "reason", max_len=2000)
    await rt.writer.run(
        lambda uow: rt.app.reject_request_in(uow, principal.tenant_id, request_id, reason)
    )
    await _settle(rt)
    row = await _request_row(request, principal, rt)
    return web.json_response(_request_body(row, micros(rt.clock.now())))


async def fulfil_request(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    request_id = _path_uuid(request, "request_id")
    doc = await read_json(request) if request.can_read_body else {}
    reject_unknown(doc, {"display_name"})
    await asyncio.to_thread(rt.privacy.fulfil_request, principal.tenant_id, request_id, doc)
    await _settle(rt)
    row = await _request_row(request, principal, rt)
    return web.json_response(_request_body(row, micros(rt.clock.now())))


async def export_request(request: web.Request) -> web.Response:
    """The subject's data as documented JSON (docs/export-schema.json), encrypted with
    OpenPGP when the tenant configured a public key (P6). Every download is audited."""
    principal, rt = await _caller(request, ADMIN)
    row = await _request_row(request, principal, rt)
    if row["kind"] not in (RequestKind.ACCESS.value, RequestKind.PORTABILITY.value):
        raise ApiError(409, "conflict", "only access and portability requests have an export")
    if row["status"] == "rejected":
        raise ApiError(409, "conflict", "the request was rejected")
    contacts = loads(row["contact_ids"])

    def build() -> tuple[bytes, str | None]:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            export = subject_export(
                tx,
                rt.vault,
                principal.tenant_id,
                contacts,
                request_id=UUID(row["id"]),
                generated_at=rt.clock.now(),
            )
        data = json.dumps(export, ensure_ascii=False, indent=2).encode()
        key = rt.privacy.export_key(principal.tenant_id)
        return data, key

    data, key = await asyncio.to_thread(build)
    await record_read(request, principal, "export", [row["id"], *contacts])
    if key is not None and request.query.get("format") != "json-unencrypted":
        armored = await asyncio.to_thread(encrypt, data, key)
        return web.Response(
            text=armored,
            content_type="application/pgp-encrypted",
            headers={"Content-Disposition": f'attachment; filename="{row["id"]}.json.asc"'},
        )
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="{row["id"]}.json"'},
    )


async def put_export_key(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request)
    reject_unknown(doc, {"public_key"})
    key = get_str(doc, "public_key", required=False, max_len=100_000)
    print_ = await asyncio.to_thread(fingerprint, key) if key else None
    await rt.writer.run(
        lambda uow: rt.app.configure_export_key_in(uow, principal.tenant_id, key, print_)
    )
    return web.json_response({"fingerprint": print_, "encrypted_exports": key is not None})


# -- subjects -----------------------------------------------------------------------------
async def erase_contact(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    contact_id = _path_uuid(request, "contact_id")
    doc = await read_json(request) if request.can_read_body else {}
    reject_unknown(doc, {"reason"})
    reason = get_str(doc, "reason", required=False, max_len=64) or "admin_request"
    outcome = await asyncio.to_thread(
        rt.privacy.erase_contact, principal.tenant_id, contact_id, f"admin:{reason}"
    )
    await _settle(rt)
    return web.json_response({"contact_id": str(contact_id), **outcome.as_dict()})


async def restrict_contact(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    contact_id = _path_uuid(request, "contact_id")
    doc = await read_json(request) if request.can_read_body else {}
    reject_unknown(doc, {"reason"})
    reason = get_str(doc, "reason", required=False, max_len=64) or "restriction"
    changed, _ = await rt.writer.run(
        lambda uow: rt.app.restrict_contact_in(uow, principal.tenant_id, contact_id, reason)
    )
    await _settle(rt)
    return web.json_response(
        {"contact_id": str(contact_id), "restricted": True, "changed": changed}
    )


async def lift_restriction(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    contact_id = _path_uuid(request, "contact_id")
    changed, _ = await rt.writer.run(
        lambda uow: rt.app.lift_restriction_in(uow, principal.tenant_id, contact_id)
    )
    await _settle(rt)
    return web.json_response(
        {"contact_id": str(contact_id), "restricted": False, "changed": changed}
    )


async def delete_agent(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    agent_id = _path_uuid(request, "agent_id")
    await asyncio.to_thread(rt.privacy.delete_agent, principal.tenant_id, agent_id)
    request.app[AUTH].forget_tenant(principal.tenant_id)  # its tokens were revoked
    await _settle(rt)
    return web.Response(status=204)


async def terminate_tenant(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    doc = await read_json(request)
    reject_unknown(doc, {"grace_days"})
    grace = doc.get("grace_days", 0)
    if not isinstance(grace, int) or isinstance(grace, bool):
        raise ValidationError("grace_days must be a whole number from 0 to 30")
    await rt.writer.run(lambda uow: rt.app.terminate_tenant_in(uow, principal.tenant_id, grace))
    request.app[AUTH].forget_tenant(principal.tenant_id)
    purge_after = rt.clock.now() + timedelta(days=grace)
    return web.json_response(
        {
            "tenant_id": str(principal.tenant_id),
            "status": "terminated",
            "grace_days": grace,
            "purge_after": purge_after.isoformat(),
            "reactivate_with": "contact-centre tenant reactivate TENANT_ID",
        }
    )


# -- the audit log ------------------------------------------------------------------------
async def get_audit(request: web.Request) -> web.Response:
    principal, rt = await _caller(request, ADMIN)
    since = parse_time(request.query["since"], "since") if "since" in request.query else None
    until = parse_time(request.query["until"], "until") if "until" in request.query else None
    subject = request.query.get("subject") or None
    after = request.query.get("after", "0")
    if not after.isdigit():
        raise ValidationError("after must be a sequence number")
    rows = await asyncio.to_thread(
        rt.audit.entries,
        principal.tenant_id,
        since=since,
        until=until,
        subject=subject,
        after_seq=int(after),
        limit=page_limit(request.query.get("limit"), 200),
    )
    for row in rows:
        row["at"] = iso(row["at"])
    return web.json_response({"items": rows, "next": str(rows[-1]["seq"]) if rows else None})


def setup_privacy_routes(app: web.Application) -> None:
    app.router.add_get("/v1/retention/policy", get_policy)
    app.router.add_put("/v1/retention/policy", put_policy)
    app.router.add_get("/v1/retention/ledger", get_ledger)
    app.router.add_get("/v1/retention/deletions", get_deletions)
    app.router.add_post("/v1/retention/run", post_retention_run)
    app.router.add_post("/v1/holds", post_hold)
    app.router.add_get("/v1/holds", list_holds)
    app.router.add_post("/v1/holds/{hold_id}/release", release_hold)
    app.router.add_post("/v1/requests", post_request)
    app.router.add_get("/v1/requests", list_requests)
    app.router.add_get("/v1/requests/{request_id}", get_request)
    app.router.add_post("/v1/requests/{request_id}/extend", extend_request)
    app.router.add_post("/v1/requests/{request_id}/reject", reject_request)
    app.router.add_post("/v1/requests/{request_id}/fulfil", fulfil_request)
    app.router.add_get("/v1/requests/{request_id}/export", export_request)
    app.router.add_put("/v1/privacy/export-key", put_export_key)
    app.router.add_post("/v1/contacts/{contact_id}/erasure", erase_contact)
    app.router.add_post("/v1/contacts/{contact_id}/restriction", restrict_contact)
    app.router.add_delete("/v1/contacts/{contact_id}/restriction", lift_restriction)
    app.router.add_delete("/v1/agents/{agent_id}", delete_agent)
    app.router.add_post("/v1/tenant/termination", terminate_tenant)
    app.router.add_get("/v1/audit", get_audit)
