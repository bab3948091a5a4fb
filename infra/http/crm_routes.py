"""Contacts: the CRM view, search, lookup by identity, and the timeline."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from uuid import UUID

from aiohttp import web

from contact_centre.application import NS_IDENTITY, Principal, check_attributes
from contact_centre.crm_service import NS_EXTERNAL_ID, ContactChanges, Upsert, UpsertResult
from contact_centre.errors import DomainError, NotFoundError, ValidationError
from contact_centre.interaction import Identity, IdentityKind
from contact_centre.tenancy import Role
from infra.http.auditing import record_read
from infra.http.auth import authenticate, require_role
from infra.http.errors import ApiError
from infra.http.keys import AUTH, RUNTIME
from infra.http.paging import decode_cursor, encode_cursor, page_limit
from infra.http.schemas import get_str, read_json, reject_unknown, req_str
from infra.http.search import search_tokens, search_words_of
from infra.http.views import iso, render_crm_contact, render_timeline_entry
from infra.runtime import Runtime
from projections import crm, directory, inbox, timeline

READERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT, Role.INTEGRATION})
MAX_CONVERSATIONS = 200  # listed in a contact's 360 view (the newest; the rest by filter)


def exported(principal: Principal) -> bool:
    """Integration tokens export data to another system: restricted contacts are left out
    of what they read (GDPR art. 18), and conversation content too (P16)."""
    return principal.role is Role.INTEGRATION


def _contact_page(
    rt: Runtime,
    principal: Principal,
    ids: list[str] | None,
    tag: str | None,
    after: Any,
    limit: int,
) -> dict[str, Any]:
    rt.vault.refresh()
    with rt.readdb.read() as tx:
        rows = crm.list_contacts(
            tx,
            str(principal.tenant_id),
            ids=ids,
            tag=tag,
            after=after,
            limit=limit + 1,
            include_restricted=not exported(principal),
        )
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
    body = await _run(rt, _contact_page, rt, principal, None, tag, after, limit)
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
        return _contact_page(rt, principal, ids, tag, after, limit)

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
    kinds = ", ".join([*(k.value for k in IdentityKind), "external_id"])
    raw_kind = str(doc.get("kind"))
    if raw_kind not in {*(k.value for k in IdentityKind), "external_id"}:
        raise ValidationError(f"kind must be one of: {kinds}")
    address = get_str(doc, "address", max_len=320) or ""

    def query() -> dict[str, Any] | None:
        if raw_kind == "external_id":
            namespace, parts = NS_EXTERNAL_ID, ("external-id", address.strip())
        else:
            summary = rt.app.tenant_summary(principal.tenant_id) or {}
            identity = rt.app.normaliser.normalise(
                Identity(IdentityKind(raw_kind), address), summary.get("phone_region")
            )
            namespace = NS_IDENTITY
            parts = ("identity", "\x1f".join((identity.kind.value, identity.address)))
        digest = rt.vault.existing_blind_index(principal.tenant_id, *parts)
        if digest is None:
            return None
        key = f"{principal.tenant_id}:{digest}"
        found = rt.app.index.get_many(namespace, [key]).get(key)
        if found is None:
            return None
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            row = crm.get_contact(tx, str(principal.tenant_id), found)
        if row is None or (row["restricted"] and exported(principal)):
            return None
        return render_crm_contact(row, rt.vault)

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

    tenant = str(principal.tenant_id)

    def query() -> dict[str, Any] | str | None:
        rt.vault.refresh()
        with rt.readdb.read() as tx:
            row = crm.get_contact(tx, tenant, str(contact_id))
            if row is None:
                return crm.merged_into(tx, tenant, str(contact_id))
            if row["restricted"] and exported(principal):
                return None
            conversations = inbox.list_conversations(
                tx, tenant, contact_id=str(contact_id), limit=MAX_CONVERSATIONS
            )
            queues = (
                directory.agent_queue_ids(tx, tenant, str(principal.agent_id))
                if principal.role is Role.AGENT and principal.agent_id is not None
                else None
            )
        body = render_crm_contact(row, rt.vault)
        if not exported(principal):
            body["restricted"] = bool(row["restricted"])
        body["conversations"] = [
            {
                "id": c["id"],
                "channel": c["channel"],
                "status": c["status"],
                "assignee_id": c["assignee_id"],
                "queue_id": c["queue_id"],
                "opened_at": iso(c["opened_at"]),
                "updated_at": iso(c["updated_at"]),
            }
            for c in conversations
            if queues is None
            or c["assignee_id"] == str(principal.agent_id)
            or c["queue_id"] in queues
        ]
        return body

    body = await _run(rt, query)
    if isinstance(body, str):
        raise ApiError(
            404, "not_found", f"contact {contact_id} was merged into {body}", merged_into=body
        )
    if body is None:
        raise NotFoundError(f"contact {contact_id} not found")
    await record_read(request, principal, "contact", [str(contact_id)])
    return web.json_response(body)


async def contact_timeline(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, READERS)
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
            row = crm.get_contact(tx, str(principal.tenant_id), str(contact_id))
            if row is None or (row["restricted"] and exported(principal)):
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
        if exported(principal):  # metadata only: no message text leaves for a CRM
            rows = [{**row, "content": None} for row in rows]
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
    setup_crm_sync_routes(app)
    app.router.add_get("/v1/contacts", list_contacts)
    app.router.add_post("/v1/contacts/search", search_contacts)
    app.router.add_post("/v1/contacts/lookup", lookup_contact)
    app.router.add_get("/v1/contacts/{contact_id}", get_contact)
    app.router.add_get("/v1/contacts/{contact_id}/timeline", contact_timeline)


# -- CRM sync: upsert, update, merge, bulk import ------------------------------------------
WRITERS = frozenset({Role.ADMIN, Role.INTEGRATION})
CONTACT_FIELDS = {"external_id", "display_name", "identities", "tags", "attributes"}
NDJSON = ("application/x-ndjson", "application/ndjson")
MAX_LINE = 64 * 1024
IMPORT_WINDOW = 256  # lines in flight to the writer at once


def parse_contact_changes(doc: Any) -> ContactChanges:
    """The body of an upsert, an update or one import line."""
    if not isinstance(doc, dict):
        raise ValidationError("a contact must be a JSON object")
    reject_unknown(doc, CONTACT_FIELDS)
    identities_raw = doc.get("identities") or []
    if not isinstance(identities_raw, list) or len(identities_raw) > 20:
        raise ValidationError("identities must be a list of at most 20 {kind, address}")
    identities = []
    for i, item in enumerate(identities_raw):
        if not isinstance(item, dict):
            raise ValidationError(f"identities[{i}] must be an object with kind and address")
        reject_unknown(item, {"kind", "address"}, f"identities[{i}]")
        kind = item.get("kind")
        if kind not in ("email", "phone"):
            raise ValidationError(f"identities[{i}].kind must be email or phone")
        address = req_str(item, "address", max_len=320)
        identities.append(Identity(IdentityKind(kind), address))
    tags = doc.get("tags") or {}
    if not isinstance(tags, dict):
        raise ValidationError('tags must be {"add": [...], "remove": [...]}')
    reject_unknown(tags, {"add", "remove"}, "tags")
    add, remove = tags.get("add") or [], tags.get("remove") or []
    for name, value in (("tags.add", add), ("tags.remove", remove)):
        if not isinstance(value, list) or not all(isinstance(t, str) for t in value):
            raise ValidationError(f"{name} must be a list of strings")
    attributes = doc.get("attributes")
    if attributes is not None and not isinstance(attributes, dict):
        raise ValidationError("attributes must be an object of name: value")
    if attributes:
        check_attributes(attributes)  # refused here, before it reaches a batch
    return ContactChanges(
        external_id=get_str(doc, "external_id", required=False, max_len=200),
        display_name=get_str(doc, "display_name", required=False, max_len=200),
        identities=tuple(identities),
        tags_add=tuple(add),
        tags_remove=tuple(remove),
        attributes=attributes,
    )


def _idempotency_key(request: web.Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise ValidationError("Idempotency-Key must be 1-255 characters")
    return key


def _result_body(result: UpsertResult) -> dict[str, Any]:
    return {
        "contact_id": str(result.contact_id),
        "created": result.created,
        "changed": list(result.changed),
        "duplicate": result.duplicate,
    }


async def _settle_contacts(rt: Runtime, position: int | None) -> None:
    if position is not None:
        timeout = rt.settings.projection_wait_ms / 1000
        for name in ("crm", "inbox", "timeline"):
            await rt.feed.progress.wait(name, position, timeout)


async def upsert_contact(request: web.Request) -> web.Response:
    """Create or update a contact found by external id, else by email or phone."""
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, WRITERS)
    rt = request.app[RUNTIME]
    key = _idempotency_key(request)
    changes = parse_contact_changes(await read_json(request))
    result, position = await rt.writer.run(
        Upsert(
            rt.app,
            principal.tenant_id,
            changes,
            idempotency_key=key,
            allow_restricted=not exported(principal),
        )
    )
    await _settle_contacts(rt, position)
    return web.json_response(_result_body(result), status=201 if result.created else 200)


async def patch_contact(request: web.Request) -> web.Response:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, WRITERS)
    rt = request.app[RUNTIME]
    contact_id = _contact_id(request)
    changes = parse_contact_changes(await read_json(request))
    result, position = await rt.writer.run(
        lambda uow: rt.app.update_contact_in(
            uow,
            principal.tenant_id,
            contact_id,
            changes,
            allow_restricted=not exported(principal),
        )
    )
    await _settle_contacts(rt, position)
    return web.json_response(_result_body(result))


async def merge_contact(request: web.Request) -> web.Response:
    """Merge the contact named in the body into the one in the path."""
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, WRITERS)
    rt = request.app[RUNTIME]
    survivor = _contact_id(request)
    doc = await read_json(request)
    reject_unknown(doc, {"contact_id"})
    raw = req_str(doc, "contact_id", max_len=64)
    try:
        merged = UUID(raw)
    except ValueError:
        raise ValidationError("contact_id must be a UUID") from None
    outcome, position = await rt.writer.run(
        lambda uow: rt.app.merge_contacts_in(uow, principal.tenant_id, survivor, merged)
    )
    # Everything of the merged-away contact now lives on in the survivor: its key goes
    # (the retention ledger records it erased; the sweep finishes it if we stop here).
    await asyncio.to_thread(rt.vault.destroy, outcome.scopes)
    await _settle_contacts(rt, position)
    return web.json_response(
        {
            "contact_id": str(survivor),
            "merged_contact_id": str(merged),
            "conversation_ids": [str(c) for c in outcome.conversation_ids],
        }
    )


async def _lines(request: web.Request, limit: int) -> Any:
    """(line number, bytes or None when too long) of an NDJSON body, read as it streams."""
    buffer = b""
    number = 0
    skipping = False
    async for chunk in request.content.iter_chunked(MAX_LINE):
        buffer += chunk
        while True:
            cut = buffer.find(b"\n")
            if cut < 0:
                if len(buffer) > MAX_LINE and not skipping:
                    number += 1
                    yield number, None
                    skipping = True
                if skipping:
                    buffer = b""
                break
            line, buffer = buffer[:cut], buffer[cut + 1 :]
            if skipping:
                skipping = False
                continue
            if line.strip():
                number += 1
                yield number, (line if len(line) <= MAX_LINE else None)
                if number > limit:
                    return
    if buffer.strip() and not skipping:
        yield number + 1, buffer


async def import_contacts(request: web.Request) -> web.Response:
    """Bulk upsert from NDJSON (one contact per line, as ``POST /v1/contacts`` takes it).
    The body is read as it streams and lines go to the writer in group commits; every line
    gets a result line (in order), and a bad line never stops the others."""
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, WRITERS)
    rt = request.app[RUNTIME]
    if request.content_type not in NDJSON:
        raise ApiError(415, "unsupported_media_type", "send the body as application/x-ndjson")
    key = _idempotency_key(request)
    allow_restricted = not exported(principal)
    limit = rt.settings.import_max_lines
    results: list[bytes] = []
    counts = {"created": 0, "updated": 0, "unchanged": 0, "error": 0}
    pending: list[tuple[int, asyncio.Future[Any] | dict[str, Any]]] = []
    latest = 0

    def emit(number: int, outcome: Any) -> None:
        nonlocal latest
        if isinstance(outcome, dict):
            line = {"line": number, "status": "error", "error": outcome}
        elif outcome.error is not None:
            error = outcome.error
            if isinstance(error, DomainError):
                detail = {"error": error.code, "detail": error.detail}
            else:
                detail = {"error": "internal", "detail": "the line could not be written"}
            line = {"line": number, "status": "error", "error": detail}
        else:
            result: UpsertResult = outcome.result
            status = "created" if result.created else "updated" if result.changed else "unchanged"
            line = {"line": number, "status": status, **_result_body(result)}
            latest = max(latest, outcome.position or 0)
        counts[str(line["status"])] += 1
        results.append(json.dumps(line).encode() + b"\n")

    async def drain(keep: int) -> None:
        while len(pending) > keep:
            number, item = pending.pop(0)
            emit(number, item if isinstance(item, dict) else await item)

    async for number, raw in _lines(request, limit):
        if number > limit:
            detail = f"an import takes at most {limit} lines: the rest was not read"
            pending.append((number, {"error": "too_many_lines", "detail": detail}))
            break
        if raw is None:
            pending.append((number, {"error": "line_too_long", "detail": f"over {MAX_LINE} bytes"}))
            continue
        try:
            changes = parse_contact_changes(json.loads(raw))
        except (ValueError, UnicodeDecodeError):
            pending.append((number, {"error": "malformed_json", "detail": "not valid JSON"}))
            continue
        except DomainError as error:
            pending.append((number, {"error": error.code, "detail": error.detail}))
            continue
        command = Upsert(
            rt.app,
            principal.tenant_id,
            changes,
            idempotency_key=f"{key}:{number}" if key is not None else None,
            allow_restricted=allow_restricted,
        )
        pending.append((number, asyncio.ensure_future(rt.writer.submit(command))))
        await drain(IMPORT_WINDOW)
    await drain(0)
    await _settle_contacts(rt, latest or None)
    summary = {"summary": {"lines": sum(counts.values()), **counts}}
    results.append(json.dumps(summary).encode() + b"\n")
    return web.Response(body=b"".join(results), content_type="application/x-ndjson")


def setup_crm_sync_routes(app: web.Application) -> None:
    app.router.add_post("/v1/contacts", upsert_contact)
    app.router.add_post("/v1/contacts/import", import_contacts)
    app.router.add_patch("/v1/contacts/{contact_id}", patch_contact)
    app.router.add_post("/v1/contacts/{contact_id}/merge", merge_contact)
