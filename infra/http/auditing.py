"""Auditing reads of personal data through the API (P13, P14)."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from contact_centre.application import Principal
from infra.audit import AuditEntry
from infra.http.keys import RUNTIME


async def record_read(
    request: web.Request, principal: Principal, subject_kind: str, subjects: Iterable[str]
) -> None:
    """Record who read which subjects' personal data, when, through which endpoint. The
    caller sends the data only after this returns (the entry is durable)."""
    rt = request.app[RUNTIME]
    route = request.match_info.route.resource
    endpoint = route.canonical if route is not None else request.path
    await rt.audit.record(
        AuditEntry(
            tenant_id=principal.tenant_id,
            at=rt.clock.now(),
            actor=principal.actor,
            role=principal.role.value,
            action="read",
            subject_kind=subject_kind,
            subjects=tuple(str(s) for s in subjects),
            endpoint=f"{request.method} {endpoint}",
        )
    )
