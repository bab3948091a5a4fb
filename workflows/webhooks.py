"""The webhook dispatcher: every subscription gets every event it asked for, at least once.

What is owed is derived from the log (``projections/webhooks.py``: one delivery per event
per subscription, with a stable id). Each round the dispatcher takes the deliveries that
are due, sends them (signed per Standard Webhooks, in log order per conversation or
contact: a later event of a key waits while an earlier one waits for a retry), and
records what happened as one ``WebhookReport`` per tenant. A crash between a send and its
report sends it again with the same ``webhook-id``: receivers dedupe on it.

Outcomes: 2xx delivered; 410 Gone disables the endpoint; anything else (other statuses,
timeouts, refused connections, redirects, refused targets) is retried with exponential
backoff and jitter for about a day, then given up (a dead letter, replayable). An
endpoint whose given-up delivery saw no success since it first failed is disabled: the
tenant is told by an event (``webhook.disabled``), the listing and the dashboard.

The HTTP client and the signer are ports (infra injects aiohttp and ``standardwebhooks``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from contact_centre.application import ContactCentre, UnitOfWork
from contact_centre.clock import Clock
from contact_centre.conversations import MessageContent
from contact_centre.privacy import Erased, Sealed, Sealer
from contact_centre.tenancy import TenantStatus
from contact_centre.webhooks import AttemptOutcome, DisableReason, next_retry
from projections import crm
from projections import webhooks as outbox
from projections.base import Tx, from_micros, loads, micros, sealed_from_text
from workflows.base import Ticker

log = logging.getLogger(__name__)

CONTACT_EVENTS = frozenset({"contact.created", "contact.updated", "contact.merged"})


@dataclass(frozen=True, slots=True)
class TransportResult:
    """What the endpoint answered: ``status`` None when no answer came (``error`` says
    why: ``timeout``, ``connection``, ``target_refused``...)."""

    status: int | None
    latency_ms: int
    error: str | None = None


class WebhookTransport(Protocol):
    """Posts one request; never follows redirects, bounded by connect and read timeouts.
    Failures are answers (a :class:`TransportResult`), not exceptions."""

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> TransportResult: ...

    async def close(self) -> None: ...


class Signer(Protocol):
    """Signs a message per Standard Webhooks with each secret (rotation: old and new)."""

    def signature(
        self, secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str
    ) -> str: ...


@dataclass
class _Target:
    url: str
    secrets: list[str]
    personal_fields: list[str]


@dataclass
class _Result:
    row: dict[str, Any]
    attempt: dict[str, Any]
    disable: DisableReason | None = None


def message_id(delivery: str) -> str:
    """The ``webhook-id`` header of a delivery (the same on every attempt and replay)."""
    return "msg_" + delivery.replace("-", "")


class WebhookDispatcher(Ticker):
    name = "webhooks"

    def __init__(
        self,
        app: ContactCentre,
        read: Callable[[], AbstractContextManager[Tx]],
        sealer: Sealer,
        transport: WebhookTransport,
        signer: Signer,
        *,
        shows: Callable[[int], bool],
        wall_clock: Clock,
        interval: float = 0.2,
        batch: int = 1000,
        concurrency: int = 64,
        jitter: Callable[[], float] = lambda: random.uniform(0.75, 1.25),
        leader: Callable[[], bool] = lambda: True,
        report_wait: float = 2.0,
    ) -> None:
        self.app = app
        self.read = read
        self.sealer = sealer
        self.transport = transport
        self.signer = signer
        # whether the webhooks read model shows the save at a position of the log
        self.shows = shows
        # whether this process is the one dispatcher (processes sharing a database)
        self.leader = leader
        # how long a round waits for the read model to show its report (0: not at all;
        # the stale-row guard keeps a row read before it from being sent again)
        self.report_wait = report_wait
        # Signatures carry real time: receivers check it against their own clocks, while
        # the runtime clock (which tests move) decides what is due.
        self.wall_clock = wall_clock
        self.interval = interval
        self.batch = batch
        self.concurrency = concurrency
        self.jitter = jitter
        self._loop: asyncio.AbstractEventLoop | None = None
        # delivery id -> (attempts reported, position of the report): rows read before the
        # read model applied our own report are stale and must not be sent again.
        self._reported: dict[str, tuple[int, int]] = {}
        self.rounds = 0

    # -- the round ----------------------------------------------------------------------
    def tick(self, now: datetime) -> int:
        if not self.leader():
            return 0
        shown: dict[int, bool] = {}
        for _, position in self._reported.values():
            if position not in shown:
                shown[position] = self.shows(position)
        self._reported = {k: v for k, v in self._reported.items() if not shown[v[1]]}
        with self.read() as tx:
            rows = outbox.due(tx, micros(now), self.batch)
            if not rows:
                return 0
            subscriptions = {
                str(s["id"]): s
                for s in outbox.subscriptions(
                    tx, ids=sorted({str(r["subscription_id"]) for r in rows})
                )
            }
            contacts = sorted({str(r["contact_id"]) for r in rows if r["contact_id"]})
            restricted = outbox.restricted(tx, contacts)
            details = self._contact_details(tx, rows, subscriptions)
        groups = self._groups(rows)
        targets = {sid: self._target(sub, now) for sid, sub in subscriptions.items()}
        tenants = self._active_tenants({str(r["tenant_id"]) for r in rows})
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        results = self._loop.run_until_complete(
            self._send_groups(groups, subscriptions, targets, restricted, details, tenants, now)
        )
        self._record(results)
        self.rounds += 1
        return len(results)

    def _groups(self, rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
        """Rows by (subscription, order key), in log order; a group stops at a row read
        before our own report of it reached the read model (and so do its successors)."""
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        blocked: set[tuple[str, str]] = set()
        for row in rows:
            key = (str(row["subscription_id"]), str(row["order_key"]))
            if key in blocked:
                continue
            reported = self._reported.get(str(row["id"]))
            if reported is not None and int(row["attempts"]) < reported[0]:
                blocked.add(key)
                continue
            groups.setdefault(key, []).append(row)
        return list(groups.values())

    def _target(self, sub: dict[str, Any], now: datetime) -> _Target | None:
        if sub["status"] != "active":
            return None
        url = self._open(sub["url"])
        secret = self._open(sub["secret"])
        if url is None or secret is None:
            return None  # the tenant's secrets were destroyed (purge)
        secrets = [secret]
        until = sub["previous_valid_until"]
        if sub["previous_secret"] and until is not None and until > micros(now):
            previous = self._open(sub["previous_secret"])
            if previous is not None:
                secrets.append(previous)
        return _Target(url, secrets, list(loads(sub["personal_fields"])))

    def _open(self, stored: str | Sealed | None) -> str | None:
        """A sealed value (or its read-model text) in clear; None when absent or erased."""
        sealed = sealed_from_text(stored) if isinstance(stored, str) else stored
        if sealed is None:
            return None
        value = self.sealer.open(sealed)
        return None if isinstance(value, Erased) else value

    def _active_tenants(self, tenants: Iterable[str]) -> set[str]:
        active = set()
        for tenant in tenants:
            summary = self.app.tenant_summary(UUID(tenant))
            if summary is not None and summary.get("status") == TenantStatus.ACTIVE.value:
                active.add(tenant)
        return active

    def _contact_details(
        self, tx: Tx, rows: list[dict[str, Any]], subscriptions: dict[str, dict[str, Any]]
    ) -> dict[str, dict[str, Any] | None]:
        """The CRM view of contacts whose events go to subscriptions that opted in to
        contact details or attributes (opened only at send time)."""
        wanted: set[tuple[str, str]] = set()
        for row in rows:
            sub = subscriptions.get(str(row["subscription_id"]))
            if sub is None or row["event_type"] not in CONTACT_EVENTS or not row["contact_id"]:
                continue
            fields = loads(sub["personal_fields"])
            if "contact_details" in fields or "contact_attributes" in fields:
                wanted.add((str(row["tenant_id"]), str(row["contact_id"])))
        return {contact: crm.get_contact(tx, tenant, contact) for tenant, contact in wanted}

    async def _send_groups(
        self,
        groups: list[list[dict[str, Any]]],
        subscriptions: dict[str, dict[str, Any]],
        targets: dict[str, _Target | None],
        restricted: set[str],
        details: dict[str, dict[str, Any] | None],
        tenants: set[str],
        now: datetime,
    ) -> list[_Result]:
        limit = asyncio.Semaphore(self.concurrency)

        async def group_task(rows: list[dict[str, Any]]) -> list[_Result]:
            async with limit:
                done: list[_Result] = []
                for row in rows:
                    sid = str(row["subscription_id"])
                    try:
                        result = await self._attempt(
                            row,
                            subscriptions.get(sid),
                            targets.get(sid),
                            restricted,
                            details,
                            tenants,
                            now,
                        )
                    except Exception as error:
                        # A bug here must not wedge the key behind this delivery: it counts
                        # as a failed attempt (logged by type; messages can quote data).
                        log.error("webhook attempt raised %s", type(error).__name__)
                        result = self._failed(row, subscriptions[sid], now, error)
                    if result is None:
                        break  # the endpoint is off: the read model settles the rest
                    done.append(result)
                    if result.attempt["outcome"] == AttemptOutcome.RETRY.value:
                        break  # later events of this key wait behind it
                    if result.disable is not None:
                        break
                return done

        batches = await asyncio.gather(*(group_task(rows) for rows in groups))
        return [result for batch in batches for result in batch]

    async def _attempt(
        self,
        row: dict[str, Any],
        sub: dict[str, Any] | None,
        target: _Target | None,
        restricted: set[str],
        details: dict[str, dict[str, Any] | None],
        tenants: set[str],
        now: datetime,
    ) -> _Result | None:
        if sub is None or target is None:
            return None
        number = int(row["attempts"]) + 1
        delivery = str(row["id"])
        if str(row["tenant_id"]) not in tenants:
            return self._settled(row, number, AttemptOutcome.SUPPRESSED, "tenant_inactive")
        if row["contact_id"] in restricted and row["event_type"] not in outbox.ALWAYS_TOLD:
            return self._settled(row, number, AttemptOutcome.SUPPRESSED, "contact_restricted")
        body = self._body(row, target, details)
        msg_id = message_id(delivery)
        moment = self.wall_clock.now()
        headers = {
            "content-type": "application/json",
            "user-agent": "contact-centre-webhooks/1",
            "webhook-id": msg_id,
            "webhook-timestamp": str(int(moment.timestamp())),
            "webhook-signature": self.signer.signature(target.secrets, msg_id, moment, body),
        }
        answer = await self.transport.post(target.url, body.encode(), headers)
        return self._outcome(row, sub, now, number, answer)

    def _outcome(
        self,
        row: dict[str, Any],
        sub: dict[str, Any],
        now: datetime,
        number: int,
        answer: TransportResult,
    ) -> _Result:
        """What an answer means: delivered, retry later, or given up (and whether the
        endpoint is to be disabled)."""
        delivery = str(row["id"])
        attempt: dict[str, Any] = {
            "delivery_id": delivery,
            "subscription_id": str(row["subscription_id"]),
            "attempt": number,
            "outcome": AttemptOutcome.DELIVERED.value,
            "status_code": answer.status,
            "latency_ms": answer.latency_ms,
            "error": answer.error,
            "retry_at": None,
            "reason": None,
        }
        if answer.status is not None and 200 <= answer.status < 300 and answer.error is None:
            return _Result(row, attempt)
        if attempt["error"] is None:
            attempt["error"] = f"http_{answer.status}"
        if answer.status == 410:
            attempt.update(outcome=AttemptOutcome.DEAD.value, reason="gone")
            return _Result(row, attempt, DisableReason.GONE)
        first = row["first_attempt_at"]
        first_at = from_micros(int(first)) if first is not None else now
        retry_at = next_retry(number, first_at, now, self.jitter())
        if retry_at is not None:
            attempt.update(outcome=AttemptOutcome.RETRY.value, retry_at=retry_at)
            return _Result(row, attempt)
        attempt.update(outcome=AttemptOutcome.DEAD.value, reason="exhausted")
        last_success = sub["last_success_at"]
        if last_success is None or int(last_success) < micros(first_at):
            # nothing got through since this delivery first failed, about a day ago
            return _Result(row, attempt, DisableReason.FAILING)
        return _Result(row, attempt)

    def _failed(
        self, row: dict[str, Any], sub: dict[str, Any], now: datetime, error: Exception
    ) -> _Result:
        answer = TransportResult(None, 0, f"internal:{type(error).__name__}")
        return self._outcome(row, sub, now, int(row["attempts"]) + 1, answer)

    def _settled(
        self, row: dict[str, Any], number: int, outcome: AttemptOutcome, reason: str
    ) -> _Result:
        return _Result(
            row,
            {
                "delivery_id": str(row["id"]),
                "subscription_id": str(row["subscription_id"]),
                "attempt": number,
                "outcome": outcome.value,
                "status_code": None,
                "latency_ms": 0,
                "error": reason,
                "retry_at": None,
                "reason": reason,
            },
        )

    # -- the body -----------------------------------------------------------------------
    def _body(
        self, row: dict[str, Any], target: _Target, details: dict[str, dict[str, Any] | None]
    ) -> str:
        payload = str(row["payload"])
        fields = target.personal_fields
        extra: dict[str, Any] = {}
        if row["personal"] and "message_content" in fields:
            extra["content"] = self._message(loads(row["personal"]))
        if row["event_type"] in CONTACT_EVENTS and row["contact_id"]:
            contact = details.get(str(row["contact_id"]))
            if "contact_details" in fields:
                extra["contact"] = self._contact(contact)
            if "contact_attributes" in fields:
                text = self._open(contact["attributes"]) if contact else None
                extra["attributes"] = json.loads(text) if text else None
        if not extra:
            return payload
        doc = json.loads(payload)
        doc["data"].update(extra)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)

    def _message(self, stored: dict[str, Any]) -> dict[str, Any]:
        if "inbound" in stored:
            text = self._open(stored["inbound"])
            if text is None:
                return {"erased": True}
            content = MessageContent.from_json(text)
            return {
                "body": content.body,
                "subject": content.subject,
                "from": content.sender,
                "from_name": content.sender_name,
                "to": content.recipient,
                "attachment_names": [name for name, _ in content.attachments],
            }
        body = self._open(stored.get("outbound"))
        return {"erased": True} if body is None else {"body": body}

    def _contact(self, row: dict[str, Any] | None) -> dict[str, Any] | None:
        if row is None:
            return None  # erased or merged away since
        return {
            "display_name": self._open(row["display_name"]),
            "identities": [
                {"kind": kind, "address": self._open(address)}
                for kind, address in loads(row["identities"])
            ],
            "external_id": self._open(row["external_id"]),
        }

    # -- recording ----------------------------------------------------------------------
    def _record(self, results: list[_Result]) -> None:
        if not results:
            return
        by_tenant: dict[UUID, list[dict[str, Any]]] = {}
        disable: dict[UUID, dict[UUID, DisableReason]] = {}
        for result in results:
            tenant = UUID(str(result.row["tenant_id"]))
            by_tenant.setdefault(tenant, []).append(result.attempt)
            if result.disable is not None:
                disable.setdefault(tenant, {})[UUID(str(result.row["subscription_id"]))] = (
                    result.disable
                )

        def command(uow: UnitOfWork) -> None:
            for tenant, attempts in sorted(by_tenant.items()):
                self.app.record_webhook_attempts_in(uow, tenant, attempts, disable.get(tenant, {}))

        _, position = self.app.run(command)
        if position is None:
            return
        for result in results:
            self._reported[str(result.row["id"])] = (int(result.attempt["attempt"]), position)
        failed = sum(1 for r in results if r.attempt["outcome"] != "delivered")
        if failed:
            log.info("webhooks: %d of %d attempts failed", failed, len(results))
        for result in results:
            if result.disable is not None:
                log.warning(
                    "webhook %s disabled (%s)", result.row["subscription_id"], result.disable.value
                )
        self._wait_applied(position)

    def _wait_applied(self, position: int) -> None:
        """The read model usually has the report as soon as it is saved (the feed applies
        it inline); when not, the stale-row guard above keeps us from sending twice."""
        deadline = time.monotonic() + self.report_wait
        while time.monotonic() < deadline and not self.shows(position):
            time.sleep(0.005)

    def close(self) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self.transport.close())
            self._loop.close()
