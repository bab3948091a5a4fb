"""Contacts: the CRM view, search, lookup by identity, and the timeline."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

from aiohttp import web

from contact_centre.application import NS_IDENTITY
from contact_centre.errors import NotFoundError, ValidationError
from contact_centre.interaction import Identity, IdentityKind
from contact_centre.tenancy import Role
from infra.http.auditing import record_read
from infra.http.auth import authenticate, require_role
from infra.http.errors import ApiError
from infra.http.keys import AUTH, RUNTIME
from infra.http.paging import decode_cursor, encode_cursor, page_limit
from infra.http.schemas import get_str, read_json, reject_unknown
from infra.http.search import search_tokens, search_words_of
from infra.http.views import render_crm_contact, render_timeline_entry
from infra.runtime import Runtime
from projections import crm, timeline

READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT, Role.INTEGRATION})


def _contact_page(
    rt: Runtime, tenant: str, ids: list[str] | None, tag: str | None, after: Any, limit: int
) -> dict[str, Any]:
    rt.vault.refresh()
    with rt.readdb.read() as tx:
        rows = crm.list_contacts(tx, tenant, ids=ids, tag=tag, after=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    last = rows[-1] if rows else None
    return {
        "items": [render_crm_contact(row, rt.vault) for row in rows],
        "next": encode_cursor(int(last["last_contact_at"] or 0), str(last["id"]))
        if more and last
        else None,
    }


async def list_contacts(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, READERS)
    rt = request.app[RUNTIME]
    tag = request.query.get("tag") or None
    after = decode_cursor(request.query.get("cursor"))
    limit = page_limit(request.query.get("limit"))
    body = await _run(rt, _contact_page, rt, str(principal.tenant_id), None, tag, after, limit)
    await record_read(request, principal, "contacts", [c["id"] for c in body["items"]])
    return web.json_response(body)


async def search_contacts(request: web.Request) -> web.Response:
    """POST, so that names and addresses searched for never travel in URLs (or logs)."""
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, READERS)
    rt = request.app[RUNTIME]
    doc = await read_json(request)
    reject_unknown(doc, {"query", "tag", "limit", "cursor"})
    words = search_words_of(get_str(doc, "query", max_len=200) or "")
    tag = get_str(doc, "tag", required=False, max_len=64)
    after = decode_cursor(get_str(doc, "cursor", required=False, max_len=200))
    limit = page_limit(doc.get("limit"))

    def query() -> dict[str, Any]:
        tokens = search_tokens(rt, principal.tenant_id, words)
        if tokens is None:
            return {"items": [], "next": None}
        with rt.readdb.read() as tx:
            ids = crm.search_contact_ids(tx, str(principal.tenant_id), tokens)
        return _contact_page(rt, str(principal.tenant_id), ids, tag, after, limit)

    body = await _run(rt, query)
    await record_read(request, principal, "contacts", [c["id"] for c in body["items"]])
    return web.json_response(body)


async def lookup_contact(request: web.Request) -> web.Response:
    """Exact lookup by one identity (phone, email, visitor id, handle), normalised as on
    ingest, through the write-side blind index."""
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, READERS)
    rt = request.app[RUNTIME]
    doc = await read_json(request)
    reject_unknown(doc, {"kind", "address"})
    try:
        kind = IdentityKind(str(doc.get("kind")))
    except ValueError:
        raise ValidationError("kind must be one of: phone, email, visitor, handle") from None
    address = get_str(doc, "address", max_len=320) or ""

    def query() -> dict[str, Any] | None:
        summary = rt.app.tenant_summary(principal.tenant_id) or {}
        identity = rt.app.normaliser.normalise(Identity(kind, address), summary.get("phone_region"))
        digest = rt.vault.existing_blind_index(
            principal.tenant_id, "identity", "\x1f".join((identity.kind.value, identity.address))
        )
        if digest is None:
            return None
        key = f"{principal.tenant_id}:{digest}"
        found = rt.app.index.get_many(NS_IDENTITY, [key]).get(key)
        if found is None:
            return None
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            row = crm.get_contact(tx, str(principal.tenant_id), found)
        return None if row is None else render_crm_contact(row, rt.vault)

    body = await _run(rt, query)
    if body is None:
        raise NotFoundError("no contact has that identity")
    await record_read(request, principal, "contact", [body["id"]])
    return web.json_response(body)


def _contact_id(request: web.Request) -> UUID:
    try:
        return UUID(request.match_info["contact_id"])
    except ValueError:
        raise ApiError(404, "not_found", "no such contact") from None


async def get_contact(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, READERS)
    rt = request.app[RUNTIME]
    contact_id = _contact_id(request)

    def query() -> dict[str, Any] | None:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            row = crm.get_contact(tx, str(principal.tenant_id), str(contact_id))
        return None if row is None else render_crm_contact(row, rt.vault)

    body = await _run(rt, query)
    if body is None:
        raise NotFoundError(f"contact {contact_id} not found")
    await record_read(request, principal, "contact", [str(contact_id)])
    return web.json_response(body)


async def contact_timeline(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT}))
    rt = request.app[RUNTIME]
    contact_id = _contact_id(request)
    order = request.query.get("order", "asc")
    if order not in ("asc", "desc"):
        raise ValidationError("order must be asc or desc")
    raw_after = decode_cursor(request.query.get("cursor"))
    after = None
    if raw_after is not None:
        if not raw_after[1].isdigit():
            raise ValidationError("cursor is not one this API returned")
        after = (raw_after[0], int(raw_after[1]))
    limit = page_limit(request.query.get("limit"))

    def query() -> dict[str, Any] | None:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            if crm.get_contact(tx, str(principal.tenant_id), str(contact_id)) is None:
                return None
            rows = timeline.list_timeline(
                tx,
                str(principal.tenant_id),
                [str(contact_id)],
                after=after,
                descending=order == "desc",
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        last = rows[-1] if rows else None
        return {
            "items": [render_timeline_entry(row, rt.vault) for row in rows],
            "next": encode_cursor(int(last["occurred_at"]), str(last["position"]))
            if more and last
            else None,
        }

    body = await _run(rt, query)
    if body is None:
        raise NotFoundError(f"contact {contact_id} not found")
    await record_read(request, principal, "timeline", [str(contact_id)])
    return web.json_response(body)


async def _run(rt: Runtime, fn: Any, *args: Any) -> Any:
    """Reads touch the database and the vault: never on the event loop."""
    return await asyncio.to_thread(fn, *args)


def setup_crm_routes(app: web.Application) -> None:
    app.router.add_get("/v1/contacts", list_contacts)
    app.router.add_post("/v1/contacts/search", search_contacts)
    app.router.add_post("/v1/contacts/lookup", lookup_contact)
    app.router.add_get("/v1/contacts/{contact_id}", get_contact)
    app.router.add_get("/v1/contacts/{contact_id}/timeline", contact_timeline)
