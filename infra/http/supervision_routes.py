"""Queues and dashboards: queue state, live and interval metrics (docs/metrics.md)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from aiohttp import web

from contact_centre.application import Principal
from contact_centre.errors import ValidationError
from contact_centre.interaction import Channel
from contact_centre.tenancy import Role
from infra.db import Tx
from infra.http.auth import authenticate, require_role
from infra.http.keys import AUTH, RUNTIME
from infra.http.schemas import parse_time, parse_uuid
from infra.http.views import iso
from infra.runtime import Runtime
from projections import directory, metrics, queues, retention, webhooks
from projections.base import micros

WATCHERS = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT})
MAX_RANGE = timedelta(days=31)
SEVEN_DAYS = 7 * 86_400 * 1_000_000
DAY = 86_400 * 1_000_000


def visible_queues(tx: Tx, principal: Principal) -> list[str] | None:
    """Agents see their queues (whose required skills they have); others see all."""
    if principal.role is Role.AGENT and principal.agent_id is not None:
        return directory.agent_queue_ids(tx, str(principal.tenant_id), str(principal.agent_id))
    return None


def _queue_filter(request: web.Request, allowed: list[str] | None) -> list[str] | None:
    wanted = request.query.get("queue_id")
    if not wanted:
        return allowed
    queue_id = str(parse_uuid(wanted, "queue_id"))
    if allowed is not None and queue_id not in allowed:
        return []
    return [queue_id]


async def _watcher(request: web.Request) -> tuple[Principal, Runtime]:
    principal = await authenticate(request, request.app[AUTH])
    require_role(principal, WATCHERS)
    return principal, request.app[RUNTIME]


async def queue_state(request: web.Request) -> web.Response:
    principal, rt = await _watcher(request)
    tenant = str(principal.tenant_id)
    now = micros(rt.clock.now())

    def query() -> dict[str, Any]:
        with rt.readdb.read() as tx:
            allowed = _queue_filter(request, visible_queues(tx, principal))
            known = {
                str(q["id"]): q
                for q in directory.list_queues(tx, tenant)
                if allowed is None or str(q["id"]) in allowed
            }
            rows = queues.waiting(tx, tenant, list(known))
        by_queue: dict[str, list[dict[str, Any]]] = {q: [] for q in known}
        for row in rows:
            by_queue.setdefault(str(row["queue_id"]), []).append(row)
        items = []
        for queue_id, waiting in by_queue.items():
            counts: dict[str, int] = {}
            for row in waiting:
                counts[row["channel"]] = counts.get(row["channel"], 0) + 1
            items.append(
                {
                    "queue_id": queue_id,
                    "name": known[queue_id]["name"] if queue_id in known else None,
                    "waiting": [
                        {
                            "conversation_id": row["conversation_id"],
                            "channel": row["channel"],
                            "priority": row["priority"],
                            "waiting_since": iso(row["waiting_since"]),
                            "wait_seconds": max(0, now - int(row["waiting_since"])) // 1_000_000,
                        }
                        for row in waiting
                    ],
                    "counts_by_channel": counts,
                    "longest_wait_seconds": max(
                        (max(0, now - int(r["waiting_since"])) // 1_000_000 for r in waiting),
                        default=0,
                    ),
                }
            )
        return {"at": iso(now), "items": items}

    return web.json_response(await asyncio.to_thread(query))


async def live_metrics(request: web.Request) -> web.Response:
    principal, rt = await _watcher(request)
    tenant = str(principal.tenant_id)
    now = micros(rt.clock.now())

    def query() -> dict[str, Any]:
        with rt.readdb.read() as tx:
            allowed = _queue_filter(request, visible_queues(tx, principal))
            rows = queues.waiting(tx, tenant, allowed)
            presence = metrics.presence_counts(tx, tenant)
            working = metrics.in_progress(tx, tenant, allowed)
            open_requests = retention.requests(tx, tenant, status="open")
            breach_count, recent = metrics.sla_breaches(tx, tenant, now - DAY, allowed)
            endpoints = webhooks.health(tx, tenant)
        waits = [max(0, now - int(r["waiting_since"])) // 1_000_000 for r in rows]
        return {
            "at": iso(now),
            "waiting": len(rows),
            "longest_wait_seconds": max(waits, default=0),
            "in_progress": working,
            "agents": {p: presence.get(p, 0) for p in ("available", "busy", "away", "offline")},
            "sla_breaches": {
                "last_24_hours": breach_count,
                "recent": [
                    {
                        "conversation_id": b["conversation_id"],
                        "queue_id": b["queue_id"],
                        "kind": b["kind"],
                        "threshold_seconds": b["threshold_seconds"],
                        "waited_seconds": b["waited_seconds"],
                        "at": iso(b["at"]),
                    }
                    for b in recent
                ],
            },
            "privacy_requests": {
                "open": len(open_requests),
                "due_within_7_days": sum(
                    1 for r in open_requests if now <= int(r["due_at"]) <= now + SEVEN_DAYS
                ),
                "overdue": sum(1 for r in open_requests if int(r["due_at"]) < now),
            },
            # outbound webhooks: endpoints disabled (410 or sustained failure) or failing
            # now, and deliveries given up (docs/webhooks.md)
            "webhooks": endpoints,
        }

    return web.json_response(await asyncio.to_thread(query))


def _seconds(total: int, count: int) -> float | None:
    return round(total / count / 1_000_000, 1) if count else None


async def interval_metrics(request: web.Request) -> web.Response:
    principal, rt = await _watcher(request)
    now = rt.clock.now()
    end = parse_time(request.query["to"], "to") if "to" in request.query else now
    start = (
        parse_time(request.query["from"], "from")
        if "from" in request.query
        else end - timedelta(days=1)
    )
    if not start < end or end - start > MAX_RANGE:
        raise ValidationError("from must be before to, at most 31 days apart")
    channel = request.query.get("channel") or None
    if channel is not None:
        try:
            channel = Channel(channel).value
        except ValueError:
            raise ValidationError("channel must be a channel name") from None

    def query() -> dict[str, Any]:
        with rt.readdb.read() as tx:
            allowed = _queue_filter(request, visible_queues(tx, principal))
            rows = metrics.intervals(
                tx,
                str(principal.tenant_id),
                metrics.interval_of(micros(start)),
                micros(end),
                allowed,
                channel,
            )
        items = []
        for r in rows:
            settled = r["answered"] + r["abandoned"]
            items.append(
                {
                    "queue_id": r["queue_id"] if r["queue_id"] != "-" else None,
                    "channel": r["channel"],
                    "interval_start": iso(r["interval_start"]),
                    "offered": r["offered"],
                    "answered": r["answered"],
                    "abandoned": r["abandoned"],
                    "overflowed": r["overflowed"],
                    "answered_within_threshold": r["answered_in_sl"],
                    "average_speed_of_answer_seconds": _seconds(r["answer_time"], r["answered"]),
                    "average_handle_time_seconds": _seconds(r["handle_time"], r["handled"]),
                    "first_response_time_seconds": _seconds(r["response_time"], r["responded"]),
                    "service_level_percent": round(100 * r["answered_in_sl"] / settled, 1)
                    if settled
                    else None,
                }
            )
        return {
            "interval_minutes": 15,
            "from": iso(micros(start)),
            "to": iso(micros(end)),
            "items": items,
        }

    return web.json_response(await asyncio.to_thread(query))


def setup_supervision_routes(app: web.Application) -> None:
    app.router.add_get("/v1/queues/state", queue_state)
    app.router.add_get("/v1/metrics/live", live_metrics)
    app.router.add_get("/v1/metrics/intervals", interval_metrics)
