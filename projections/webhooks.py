"""Webhook state, derived from the event log: the tenants' subscriptions, what each one is
owed (the outbox: one delivery per event per subscription), and the log of attempts.

A domain event becomes deliveries here, in log order, for every subscription of its
tenant that wants its type (a disabled endpoint's become dead letters at once, so a replay
can recover them). Payloads carry ids and metadata only; a subscription that opted in to
``message_content`` also gets the event's sealed content kept beside the payload, opened
only when it is sent (so erasing the conversation makes it unreadable here too).

Deliveries about a restricted contact are not made (``contact.restricted`` itself and
``data.erased`` are: GDPR art. 19 asks that recipients be told). Attempt rows and settled
deliveries older than the log's retention are deleted as reports arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from contact_centre.compliance import DataSubjectRequest
from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation
from contact_centre.webhooks import (
    AttemptOutcome,
    ReplayScope,
    SubscriptionStatus,
    WebhookReport,
    WebhookSubscription,
    delivery_id,
)
from projections.base import (
    Projection,
    Tx,
    dumps,
    handles,
    handles_run,
    insert_opened,
    insert_rows,
    loads,
    micros,
    sealed_text,
)

PAYLOAD_VERSION = 1
# Told even about a restricted contact (ids only): recipients must hear of restrictions
# and erasures (GDPR art. 19).
ALWAYS_TOLD = frozenset({"contact.restricted", "contact.restriction_lifted", "data.erased"})
PENDING, DELIVERED, DEAD, SUPPRESSED = "pending", "delivered", "dead", "suppressed"
_MISSED_CALL = frozenset({"no-answer", "busy", "failed", "canceled"})
_PRUNE_EVERY = 3_600_000_000  # microseconds: prune a tenant's old rows at most hourly


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class WebhooksProjection(Projection):
    name = "webhooks"
    version = 1
    tables = (
        "rm_webhook_subscriptions",
        "rm_webhook_deliveries",
        "rm_webhook_attempts",
        "rm_webhook_contacts",
        "rm_webhook_conversations",
    )
    ddl = (
        # url and secrets: sealed under the tenant's secrets scope
        "CREATE TABLE IF NOT EXISTS rm_webhook_subscriptions ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, url TEXT NOT NULL,"
        " event_types TEXT NOT NULL, personal_fields TEXT NOT NULL, description TEXT NOT NULL,"
        " secret TEXT NOT NULL, previous_secret TEXT, previous_valid_until BIGINT,"
        " status TEXT NOT NULL, disabled_reason TEXT, disabled_at BIGINT,"
        " failing_since BIGINT, last_success_at BIGINT,"
        " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_subscriptions_tenant"
        " ON rm_webhook_subscriptions (tenant_id, status)",
        # payload: ids and metadata (JSON); personal: sealed opt-in fields (JSON) or NULL
        "CREATE TABLE IF NOT EXISTS rm_webhook_deliveries ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, subscription_id TEXT NOT NULL,"
        " event_type TEXT NOT NULL, event_ref TEXT NOT NULL, order_key TEXT NOT NULL,"
        " position BIGINT NOT NULL, occurred_at BIGINT NOT NULL, contact_id TEXT,"
        " payload TEXT NOT NULL, personal TEXT, state TEXT NOT NULL,"
        " attempts INTEGER NOT NULL, due_at BIGINT, first_attempt_at BIGINT,"
        " last_attempt_at BIGINT, last_status INTEGER, last_error TEXT,"
        " settled_at BIGINT, reason TEXT)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_due"
        " ON rm_webhook_deliveries (state, position)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_order"
        " ON rm_webhook_deliveries (subscription_id, order_key, position)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_listing"
        " ON rm_webhook_deliveries (subscription_id, state, position)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_deliveries_settled"
        " ON rm_webhook_deliveries (tenant_id, settled_at)",
        "CREATE TABLE IF NOT EXISTS rm_webhook_attempts ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, subscription_id TEXT NOT NULL,"
        " delivery_id TEXT NOT NULL, attempt INTEGER NOT NULL, at BIGINT NOT NULL,"
        " status_code INTEGER, latency_ms INTEGER, error TEXT, outcome TEXT NOT NULL,"
        " position BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_attempts_subscription"
        " ON rm_webhook_attempts (subscription_id, position)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_attempts_delivery"
        " ON rm_webhook_attempts (delivery_id)",
        "CREATE INDEX IF NOT EXISTS rm_webhook_attempts_age ON rm_webhook_attempts (tenant_id, at)",
        "CREATE TABLE IF NOT EXISTS rm_webhook_contacts ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, restricted INTEGER NOT NULL)",
        "CREATE TABLE IF NOT EXISTS rm_webhook_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, contact_id TEXT NOT NULL,"
        " channel TEXT NOT NULL)",
    )

    def __init__(self, log_retention: timedelta = timedelta(days=30)) -> None:
        self.log_retention = log_retention
        self._pruned: dict[str, int] = {}
        # The tenants' subscriptions as read in the current transaction: every event of
        # a batch asks for them (an erasure's hundred events, a round trip each on
        # PostgreSQL). Only this transaction's own subscription events change them.
        self._subscribers: tuple[Tx, dict[str, list[tuple[str, Any, str]]]] | None = None

    def _subscriptions(self, tx: Tx, tenant: str) -> list[tuple[str, Any, str]]:
        """(id, personal fields, status) and wanted event types of the tenant's live
        subscriptions, read once per transaction."""
        entry = self._subscribers
        if entry is None or entry[0] is not tx:
            entry = self._subscribers = (tx, {})
        cached = entry[1]
        rows = cached.get(tenant)
        if rows is None:
            tx.execute(
                "SELECT id, event_types, personal_fields, status FROM rm_webhook_subscriptions"
                " WHERE tenant_id = ? AND status != ?",
                (tenant, SubscriptionStatus.DELETED.value),
            )
            rows = [
                (str(sid), (frozenset(loads(types)), loads(fields)), str(status))
                for sid, types, fields, status in tx.fetchall()
            ]
            cached[tenant] = rows
        return rows

    def _wanted(
        self, tx: Tx, tenant: str, event_type: str, except_subscription: str | None = None
    ) -> list[tuple[str, Any, str]]:
        """(id, personal fields, status) of the subscriptions that want ``event_type``."""
        return [
            (sid, spec[1], status)
            for sid, spec, status in self._subscriptions(tx, tenant)
            if event_type in spec[0] and sid != except_subscription
        ]

    # -- queueing -----------------------------------------------------------------------
    def _queue(
        self,
        tx: Tx,
        e: Any,
        position: int,
        event_type: str,
        order_key: str,
        contact_id: str | None,
        data: dict[str, Any],
        message: str | None = None,
        *,
        except_subscription: str | None = None,
    ) -> None:
        """Deliveries of one event to every subscription of the tenant that wants it."""
        tenant = str(e.tenant_id)
        wanted = self._wanted(tx, tenant, event_type, except_subscription)
        if not wanted:
            return
        if contact_id is not None and event_type not in ALWAYS_TOLD:
            tx.execute("SELECT restricted FROM rm_webhook_contacts WHERE id = ?", (contact_id,))
            row = tx.fetchone()
            if row is not None and row[0]:
                return
        at = micros(e.at)
        payload = dumps(
            {
                "type": event_type,
                "timestamp": iso(e.at),
                "tenant_id": tenant,
                "version": PAYLOAD_VERSION,
                "data": data,
            }
        )
        event_ref = f"{e.originator_id}:{e.originator_version}"
        rows = []
        for sid, fields, status in wanted:
            active = status == SubscriptionStatus.ACTIVE.value
            personal = message if message is not None and "message_content" in fields else None
            rows.append(
                (
                    str(delivery_id(UUID(sid), event_ref)),
                    tenant,
                    sid,
                    event_type,
                    event_ref,
                    order_key,
                    position,
                    at,
                    contact_id,
                    payload,
                    personal,
                    PENDING if active else DEAD,
                    at if active else None,
                    None if active else at,
                    None if active else "endpoint_disabled",
                )
            )
        tx.executemany(
            "INSERT INTO rm_webhook_deliveries (id, tenant_id, subscription_id, event_type,"
            " event_ref, order_key, position, occurred_at, contact_id, payload, personal,"
            " state, attempts, due_at, settled_at, reason)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            rows,
        )

    def _conversation(self, tx: Tx, e: Any) -> tuple[str, str, str]:
        """(conversation id, contact id, channel) of a conversation event."""
        conversation_id = str(e.originator_id)
        tx.execute(
            "SELECT contact_id, channel FROM rm_webhook_conversations WHERE id = ?",
            (conversation_id,),
        )
        row = tx.fetchone()
        if row is None:  # opened before this read model existed: ids we know
            return conversation_id, "", ""
        return conversation_id, str(row[0]), str(row[1])

    def _conversation_event(
        self,
        tx: Tx,
        e: Any,
        position: int,
        event_type: str,
        extra: dict[str, Any],
        message: str | None = None,
    ) -> None:
        if not self._wanted(tx, str(e.tenant_id), event_type):
            return  # no subscriber: nothing to look up
        conversation_id, contact_id, channel = self._conversation(tx, e)
        data = {
            "conversation_id": conversation_id,
            "contact_id": contact_id or None,
            "channel": channel or None,
            **extra,
        }
        self._queue(tx, e, position, event_type, conversation_id, contact_id or None, data, message)

    # -- conversations ------------------------------------------------------------------
    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(
            tx, "rm_webhook_conversations", run, ("id", "tenant_id", "contact_id", "channel")
        )
        for e, position in run:  # deliveries are ordered by position, not by insertion
            self._conversation_event(
                tx, e, position, "conversation.opened", {"opened_at": iso(e.at)}
            )

    @handles(Conversation.ContactChanged)
    def _contact_changed(self, tx: Tx, e: Conversation.ContactChanged, position: int) -> None:
        tx.execute(
            "UPDATE rm_webhook_conversations SET contact_id = ? WHERE id = ?",
            (str(e.contact_id), str(e.originator_id)),
        )

    @handles(Conversation.Assigned)
    def _assigned(self, tx: Tx, e: Conversation.Assigned, position: int) -> None:
        agent = str(e.agent_id) if e.agent_id else None
        self._conversation_event(
            tx, e, position, "conversation.assigned", {"agent_id": agent, "by": e.by}
        )

    @handles(Conversation.Resolved)
    def _resolved(self, tx: Tx, e: Conversation.Resolved, position: int) -> None:
        self._conversation_event(tx, e, position, "conversation.resolved", {"by": e.by})

    @handles(Conversation.Reopened)
    def _reopened(self, tx: Tx, e: Conversation.Reopened, position: int) -> None:
        self._conversation_event(
            tx, e, position, "conversation.reopened", {"by": e.by, "reason": e.reason}
        )

    @handles(Conversation.Closed)
    def _closed(self, tx: Tx, e: Conversation.Closed, position: int) -> None:
        self._conversation_event(tx, e, position, "conversation.closed", {"by": e.by})

    @handles(Conversation.MessageReceived)
    def _received(self, tx: Tx, e: Conversation.MessageReceived, position: int) -> None:
        extra = {
            "message_id": str(e.message_id),
            "provider": e.provider,
            "sender_kind": e.sender_kind,
            "occurred_at": iso(e.occurred_at),
            "attachments": [
                {k: a.get(k) for k in ("content_type", "size", "sha256")} for a in e.attachments
            ],
        }
        message = dumps({"inbound": sealed_text(e.content)})
        self._conversation_event(tx, e, position, "message.received", extra, message)

    @handles_run(Conversation.MessageReceived)
    def _received_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """One at a time (each a delivery per subscriber, nothing without one): a run
        handler so that a write batch's other events can be taken in runs."""
        for e, position in run:
            self._received(tx, e, position)

    @handles(Conversation.MessageSent)
    def _sent(self, tx: Tx, e: Conversation.MessageSent, position: int) -> None:
        extra = {"message_id": str(e.message_id), "author": e.author}
        message = dumps({"outbound": sealed_text(e.body)})
        self._conversation_event(tx, e, position, "message.sent", extra, message)

    @handles(Conversation.CallStatusChanged)
    def _call(self, tx: Tx, e: Conversation.CallStatusChanged, position: int) -> None:
        if e.status == "completed":
            event_type = "call.completed"
        elif e.status in _MISSED_CALL:
            event_type = "call.missed"
        else:
            return
        extra = {
            "call_id": str(e.call_ref),
            "status": e.status,
            "duration_seconds": e.duration_seconds,
        }
        self._conversation_event(tx, e, position, event_type, extra)

    @handles(Conversation.ContentErased)
    def _content_erased(self, tx: Tx, e: Conversation.ContentErased, position: int) -> None:
        if not self._wanted(tx, str(e.tenant_id), "data.erased"):
            return  # no subscriber: nothing to look up
        conversation_id, contact_id, _ = self._conversation(tx, e)
        data = {
            "subject": "conversation",
            "conversation_id": conversation_id,
            "contact_id": contact_id or None,
            "reason": e.reason,
            "request_id": str(e.request_id) if e.request_id else None,
        }
        self._queue(tx, e, position, "data.erased", conversation_id, contact_id or None, data)

    # -- contacts -----------------------------------------------------------------------
    @handles_run(Contact.Registered)
    def _contacts_created(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_rows(
            tx,
            "rm_webhook_contacts",
            (("id", "text"), ("tenant_id", "text")),
            [(str(e.originator_id), str(e.tenant_id)) for e, _ in run],
            key="id",
            also={"restricted": "0"},
        )
        for e, position in run:
            contact_id = str(e.originator_id)
            data = {"contact_id": contact_id, "identity_kinds": [e.identity_kind]}
            self._queue(tx, e, position, "contact.created", contact_id, contact_id, data)

    def _contact_updated(self, tx: Tx, e: Any, position: int, extra: dict[str, Any]) -> None:
        contact_id = str(e.originator_id)
        data = {"contact_id": contact_id, **extra}
        self._queue(tx, e, position, "contact.updated", contact_id, contact_id, data)

    @handles(Contact.DetailsCorrected)
    def _details(self, tx: Tx, e: Contact.DetailsCorrected, position: int) -> None:
        self._contact_updated(tx, e, position, {"changes": ["display_name"], "source": e.source})

    @handles(Contact.IdentityLinked)
    def _identity(self, tx: Tx, e: Contact.IdentityLinked, position: int) -> None:
        self._contact_updated(tx, e, position, {"changes": ["identities"], "identity_kind": e.kind})

    @handles(Contact.ExternalIdSet)
    def _external_id(self, tx: Tx, e: Contact.ExternalIdSet, position: int) -> None:
        self._contact_updated(tx, e, position, {"changes": ["external_id"]})

    @handles(Contact.Tagged)
    def _tagged(self, tx: Tx, e: Contact.Tagged, position: int) -> None:
        extra = {"changes": ["tags"], "tags_added": e.added, "tags_removed": e.removed}
        self._contact_updated(tx, e, position, extra)

    @handles(Contact.AttributesChanged)
    def _attributes(self, tx: Tx, e: Contact.AttributesChanged, position: int) -> None:
        self._contact_updated(tx, e, position, {"changes": ["attributes"]})

    @handles(Contact.OptedOut, Contact.OptedIn)
    def _consent(self, tx: Tx, e: Any, position: int) -> None:
        status = "opted_out" if isinstance(e, Contact.OptedOut) else "opted_in"
        extra = {"changes": ["consent"], "consent": {"channel": e.channel, "status": status}}
        self._contact_updated(tx, e, position, extra)

    @handles(Contact.Restricted)
    def _restricted(self, tx: Tx, e: Contact.Restricted, position: int) -> None:
        contact_id = str(e.originator_id)
        tx.execute("UPDATE rm_webhook_contacts SET restricted = 1 WHERE id = ?", (contact_id,))
        data = {"contact_id": contact_id}
        self._queue(tx, e, position, "contact.restricted", contact_id, contact_id, data)

    @handles(Contact.RestrictionLifted)
    def _lifted(self, tx: Tx, e: Contact.RestrictionLifted, position: int) -> None:
        contact_id = str(e.originator_id)
        tx.execute("UPDATE rm_webhook_contacts SET restricted = 0 WHERE id = ?", (contact_id,))
        data = {"contact_id": contact_id}
        self._queue(tx, e, position, "contact.restriction_lifted", contact_id, contact_id, data)

    @handles(Contact.Merged)
    def _merged(self, tx: Tx, e: Contact.Merged, position: int) -> None:
        contact_id = str(e.originator_id)
        data = {
            "contact_id": contact_id,
            "merged_contact_id": str(e.merged_contact_id),
            "conversation_ids": [str(c) for c in e.conversation_ids],
        }
        self._queue(tx, e, position, "contact.merged", contact_id, contact_id, data)

    @handles(Contact.Erased)
    def _contact_erased(self, tx: Tx, e: Contact.Erased, position: int) -> None:
        contact_id = str(e.originator_id)
        data = {
            "subject": "contact",
            "contact_id": contact_id,
            "reason": e.reason,
            "request_id": str(e.request_id) if e.request_id else None,
        }
        self._queue(tx, e, position, "data.erased", contact_id, contact_id, data)

    # -- data-subject requests ----------------------------------------------------------
    @handles(DataSubjectRequest.DueSoon)
    def _request_due(self, tx: Tx, e: DataSubjectRequest.DueSoon, position: int) -> None:
        request_id = str(e.originator_id)
        data = {"request_id": request_id, "due_at": iso(e.due_at)}
        self._queue(tx, e, position, "request.due", request_id, None, data)

    # -- subscriptions ------------------------------------------------------------------
    @handles(WebhookSubscription.Created)
    def _subscription(self, tx: Tx, e: WebhookSubscription.Created, position: int) -> None:
        at = micros(e.at)
        tx.execute(
            "INSERT INTO rm_webhook_subscriptions (id, tenant_id, url, event_types,"
            " personal_fields, description, secret, status, created_at, updated_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                sealed_text(e.url),
                dumps(e.event_types),
                dumps(e.personal_fields),
                e.description,
                sealed_text(e.secret),
                SubscriptionStatus.ACTIVE.value,
                at,
                at,
            ),
        )

    @handles(WebhookSubscription.Changed)
    def _changed(self, tx: Tx, e: WebhookSubscription.Changed, position: int) -> None:
        sets, params = ["updated_at = ?"], [micros(e.at)]
        for column, value in (
            ("url", sealed_text(e.url) if e.url is not None else None),
            ("event_types", dumps(e.event_types) if e.event_types is not None else None),
            (
                "personal_fields",
                dumps(e.personal_fields) if e.personal_fields is not None else None,
            ),
            ("description", e.description),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)  # type: ignore[arg-type]
        tx.execute(
            f"UPDATE rm_webhook_subscriptions SET {', '.join(sets)} WHERE id = ?",
            (*params, str(e.originator_id)),
        )

    @handles(WebhookSubscription.SecretRotated)
    def _rotated(self, tx: Tx, e: WebhookSubscription.SecretRotated, position: int) -> None:
        tx.execute(
            "UPDATE rm_webhook_subscriptions SET secret = ?, previous_secret = ?,"
            " previous_valid_until = ?, updated_at = ? WHERE id = ?",
            (
                sealed_text(e.secret),
                sealed_text(e.previous),
                micros(e.previous_valid_until),
                micros(e.at),
                str(e.originator_id),
            ),
        )

    def _settle_pending(self, tx: Tx, subscription_id: str, reason: str, at: int) -> None:
        tx.execute(
            "UPDATE rm_webhook_deliveries SET state = ?, reason = ?, settled_at = ?,"
            " due_at = NULL WHERE subscription_id = ? AND state = ?",
            (DEAD, reason, at, subscription_id, PENDING),
        )

    @handles(WebhookSubscription.Disabled)
    def _disabled(self, tx: Tx, e: WebhookSubscription.Disabled, position: int) -> None:
        subscription_id, at = str(e.originator_id), micros(e.at)
        tx.execute(
            "UPDATE rm_webhook_subscriptions SET status = ?, disabled_reason = ?,"
            " disabled_at = ?, updated_at = ? WHERE id = ?",
            (SubscriptionStatus.DISABLED.value, e.reason, at, at, subscription_id),
        )
        self._settle_pending(tx, subscription_id, "endpoint_disabled", at)
        data = {"webhook_id": subscription_id, "reason": e.reason}
        self._queue(
            tx,
            e,
            position,
            "webhook.disabled",
            subscription_id,
            None,
            data,
            except_subscription=subscription_id,
        )

    @handles(WebhookSubscription.Enabled)
    def _enabled(self, tx: Tx, e: WebhookSubscription.Enabled, position: int) -> None:
        tx.execute(
            "UPDATE rm_webhook_subscriptions SET status = ?, disabled_reason = NULL,"
            " disabled_at = NULL, failing_since = NULL, updated_at = ? WHERE id = ?",
            (SubscriptionStatus.ACTIVE.value, micros(e.at), str(e.originator_id)),
        )

    @handles(WebhookSubscription.Deleted)
    def _deleted(self, tx: Tx, e: WebhookSubscription.Deleted, position: int) -> None:
        subscription_id, at = str(e.originator_id), micros(e.at)
        tx.execute(
            "UPDATE rm_webhook_subscriptions SET status = ?, updated_at = ? WHERE id = ?",
            (SubscriptionStatus.DELETED.value, at, subscription_id),
        )
        self._settle_pending(tx, subscription_id, "webhook_deleted", at)

    @handles(WebhookSubscription.ReplayRequested)
    def _replay(self, tx: Tx, e: WebhookSubscription.ReplayRequested, position: int) -> None:
        at = micros(e.at)
        reset = (
            "UPDATE rm_webhook_deliveries SET state = ?, due_at = ?, first_attempt_at = NULL,"
            " settled_at = NULL, reason = NULL WHERE subscription_id = ?"
        )
        subscription_id = str(e.originator_id)
        scope = ReplayScope(e.scope)
        if scope is ReplayScope.DELIVERY:
            tx.execute(
                f"{reset} AND id = ? AND state != ?",
                (PENDING, at, subscription_id, str(e.delivery_id), PENDING),
            )
        elif scope is ReplayScope.DEAD_LETTERS:
            tx.execute(f"{reset} AND state = ?", (PENDING, at, subscription_id, DEAD))
        elif e.since is not None and e.until is not None:
            tx.execute(
                f"{reset} AND occurred_at >= ? AND occurred_at < ? AND state != ?",
                (PENDING, at, subscription_id, micros(e.since), micros(e.until), PENDING),
            )

    # -- reports ------------------------------------------------------------------------
    @handles(WebhookReport.Recorded)
    def _report(self, tx: Tx, e: WebhookReport.Recorded, position: int) -> None:
        tenant, at = str(e.tenant_id), micros(e.at)
        attempts, updates = [], []
        successes: set[str] = set()
        failures: set[str] = set()
        for a in e.attempts:
            outcome = AttemptOutcome(a["outcome"])
            attempts.append(
                (
                    f"{a['delivery_id']}:{a['attempt']}",
                    tenant,
                    a["subscription_id"],
                    a["delivery_id"],
                    a["attempt"],
                    at,
                    a["status_code"],
                    a["latency_ms"],
                    a["error"],
                    outcome.value,
                    position,
                )
            )
            retry_at = a.get("retry_at")
            state = {
                AttemptOutcome.DELIVERED: DELIVERED,
                AttemptOutcome.RETRY: PENDING,
                AttemptOutcome.DEAD: DEAD,
                AttemptOutcome.SUPPRESSED: SUPPRESSED,
            }[outcome]
            updates.append(
                (
                    state,
                    a["attempt"],
                    micros(retry_at) if retry_at is not None else None,
                    at,
                    at,
                    a["status_code"],
                    a["error"],
                    None if state == PENDING else at,
                    a.get("reason"),
                    a["delivery_id"],
                )
            )
            if outcome is AttemptOutcome.DELIVERED:
                successes.add(a["subscription_id"])
            elif outcome is not AttemptOutcome.SUPPRESSED:
                failures.add(a["subscription_id"])
        tx.executemany(
            "INSERT INTO rm_webhook_attempts (id, tenant_id, subscription_id, delivery_id,"
            " attempt, at, status_code, latency_ms, error, outcome, position)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            attempts,
        )
        tx.executemany(
            "UPDATE rm_webhook_deliveries SET state = ?, attempts = ?, due_at = ?,"
            " first_attempt_at = COALESCE(first_attempt_at, ?), last_attempt_at = ?,"
            " last_status = ?, last_error = ?, settled_at = ?, reason = ? WHERE id = ?",
            updates,
        )
        for subscription_id in sorted(successes):
            tx.execute(
                "UPDATE rm_webhook_subscriptions SET last_success_at = ?, failing_since = NULL"
                " WHERE id = ?",
                (at, subscription_id),
            )
        for subscription_id in sorted(failures - successes):
            tx.execute(
                "UPDATE rm_webhook_subscriptions SET failing_since = COALESCE(failing_since, ?)"
                " WHERE id = ?",
                (at, subscription_id),
            )

    # -- the log's retention ------------------------------------------------------------
    def apply(self, tx: Tx, event: Any, position: int) -> None:
        if not isinstance(event, Conversation.Event | Contact.Event | DataSubjectRequest.Event):
            self._subscribers = None  # subscription events (and reports) change them
        super().apply(tx, event, position)
        tenant_id = getattr(event, "tenant_id", None)
        at = getattr(event, "at", None)
        if tenant_id is None or not isinstance(at, datetime):
            return
        tenant, now = str(tenant_id), micros(at)
        if now - self._pruned.get(tenant, 0) < _PRUNE_EVERY:
            return
        self._pruned[tenant] = now
        cutoff = now - int(self.log_retention.total_seconds() * 1_000_000)
        tx.execute(
            "DELETE FROM rm_webhook_attempts WHERE tenant_id = ? AND at < ?", (tenant, cutoff)
        )
        tx.execute(
            "DELETE FROM rm_webhook_deliveries WHERE tenant_id = ? AND settled_at < ?",
            (tenant, cutoff),
        )


# -- queries -------------------------------------------------------------------------------
SUBSCRIPTION_KEYS = (
    "id",
    "url",
    "event_types",
    "personal_fields",
    "description",
    "secret",
    "previous_secret",
    "previous_valid_until",
    "status",
    "disabled_reason",
    "disabled_at",
    "failing_since",
    "last_success_at",
    "created_at",
    "updated_at",
)


def subscriptions(
    tx: Tx, tenant_id: str | None = None, ids: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """A tenant's subscriptions (not the deleted ones), or those with the given ids."""
    where, params = ["status != ?"], [SubscriptionStatus.DELETED.value]
    if tenant_id is not None:
        where.append("tenant_id = ?")
        params.append(tenant_id)
    if ids is not None:
        if not ids:
            return []
        where.append(f"id IN ({', '.join('?' * len(ids))})")
        params.extend(ids)
    tx.execute(
        f"SELECT {', '.join(SUBSCRIPTION_KEYS)} FROM rm_webhook_subscriptions"
        f" WHERE {' AND '.join(where)} ORDER BY created_at, id",
        params,
    )
    return [dict(zip(SUBSCRIPTION_KEYS, row, strict=True)) for row in tx.fetchall()]


def delivery_counts(tx: Tx, tenant_id: str) -> dict[str, dict[str, int]]:
    """Per subscription: deliveries by state."""
    tx.execute(
        "SELECT subscription_id, state, COUNT(*) FROM rm_webhook_deliveries WHERE tenant_id = ?"
        " GROUP BY subscription_id, state",
        (tenant_id,),
    )
    counts: dict[str, dict[str, int]] = {}
    for subscription_id, state, n in tx.fetchall():
        counts.setdefault(str(subscription_id), {})[str(state)] = int(n)
    return counts


DUE_KEYS = (
    "id",
    "tenant_id",
    "subscription_id",
    "event_type",
    "order_key",
    "position",
    "contact_id",
    "payload",
    "personal",
    "attempts",
    "first_attempt_at",
)


def due(tx: Tx, now: int, limit: int) -> list[dict[str, Any]]:
    """Pending deliveries whose time has come, in log order, each with every earlier
    pending delivery of its subscription and order key (conversation, contact...): a
    delivery waits while an earlier one of its key waits for a retry."""
    tx.execute(
        f"SELECT {', '.join('d.' + k for k in DUE_KEYS)} FROM rm_webhook_deliveries d"
        " WHERE d.state = ? AND d.due_at <= ? AND NOT EXISTS ("
        " SELECT 1 FROM rm_webhook_deliveries p WHERE p.subscription_id = d.subscription_id"
        " AND p.order_key = d.order_key AND p.state = ? AND p.position < d.position"
        " AND p.due_at > ?) ORDER BY d.position, d.id LIMIT ?",
        (PENDING, now, PENDING, now, limit),
    )
    return [dict(zip(DUE_KEYS, row, strict=True)) for row in tx.fetchall()]


def restricted(tx: Tx, contact_ids: Sequence[str]) -> set[str]:
    if not contact_ids:
        return set()
    tx.execute(
        f"SELECT id FROM rm_webhook_contacts WHERE restricted = 1"
        f" AND id IN ({', '.join('?' * len(contact_ids))})",
        list(contact_ids),
    )
    return {str(row[0]) for row in tx.fetchall()}


DELIVERY_KEYS = (
    "id",
    "subscription_id",
    "event_type",
    "event_ref",
    "order_key",
    "position",
    "occurred_at",
    "payload",
    "state",
    "attempts",
    "due_at",
    "first_attempt_at",
    "last_attempt_at",
    "last_status",
    "last_error",
    "settled_at",
    "reason",
)


def list_deliveries(
    tx: Tx,
    tenant_id: str,
    subscription_id: str,
    *,
    state: str | None = None,
    before: tuple[int, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """Newest first; ``before`` is the (position, id) of the last row seen."""
    where = ["tenant_id = ?", "subscription_id = ?"]
    params: list[Any] = [tenant_id, subscription_id]
    if state is not None:
        where.append("state = ?")
        params.append(state)
    if before is not None:
        where.append("(position < ? OR (position = ? AND id < ?))")
        params.extend([before[0], before[0], before[1]])
    params.append(limit)
    tx.execute(
        f"SELECT {', '.join(DELIVERY_KEYS)} FROM rm_webhook_deliveries"
        f" WHERE {' AND '.join(where)} ORDER BY position DESC, id DESC LIMIT ?",
        params,
    )
    return [dict(zip(DELIVERY_KEYS, row, strict=True)) for row in tx.fetchall()]


def get_delivery(
    tx: Tx, tenant_id: str, subscription_id: str, delivery: str
) -> dict[str, Any] | None:
    tx.execute(
        f"SELECT {', '.join(DELIVERY_KEYS)} FROM rm_webhook_deliveries"
        " WHERE tenant_id = ? AND subscription_id = ? AND id = ?",
        (tenant_id, subscription_id, delivery),
    )
    row = tx.fetchone()
    return None if row is None else dict(zip(DELIVERY_KEYS, row, strict=True))


def count_replayable(
    tx: Tx, tenant_id: str, subscription_id: str, since: int | None, until: int | None
) -> int:
    """How many deliveries a replay would send again: the dead letters, or (with a range)
    every settled delivery of the events that occurred in [since, until)."""
    sql = "SELECT COUNT(*) FROM rm_webhook_deliveries WHERE tenant_id = ? AND subscription_id = ?"
    params: list[Any] = [tenant_id, subscription_id]
    if since is None or until is None:
        sql += " AND state = ?"
        params.append(DEAD)
    else:
        sql += " AND state != ? AND occurred_at >= ? AND occurred_at < ?"
        params.extend([PENDING, since, until])
    tx.execute(sql, params)
    row = tx.fetchone()
    return int(row[0]) if row else 0


ATTEMPT_KEYS = (
    "id",
    "delivery_id",
    "attempt",
    "at",
    "status_code",
    "latency_ms",
    "error",
    "outcome",
    "position",
)


def list_attempts(
    tx: Tx,
    tenant_id: str,
    subscription_id: str,
    *,
    delivery: str | None = None,
    before: tuple[int, str] | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The attempt log, newest first; ``before`` is the (position, id) of the last row."""
    where = ["tenant_id = ?", "subscription_id = ?"]
    params: list[Any] = [tenant_id, subscription_id]
    if delivery is not None:
        where.append("delivery_id = ?")
        params.append(delivery)
    if before is not None:
        where.append("(position < ? OR (position = ? AND id < ?))")
        params.extend([before[0], before[0], before[1]])
    params.append(limit)
    tx.execute(
        f"SELECT {', '.join(ATTEMPT_KEYS)} FROM rm_webhook_attempts"
        f" WHERE {' AND '.join(where)} ORDER BY position DESC, id DESC LIMIT ?",
        params,
    )
    return [dict(zip(ATTEMPT_KEYS, row, strict=True)) for row in tx.fetchall()]


def health(tx: Tx, tenant_id: str) -> dict[str, int]:
    """For the supervisor dashboard: endpoints disabled and failing, and dead letters."""
    tx.execute(
        "SELECT status, failing_since IS NOT NULL, COUNT(*) FROM rm_webhook_subscriptions"
        " WHERE tenant_id = ? AND status != ? GROUP BY status, failing_since IS NOT NULL",
        (tenant_id, SubscriptionStatus.DELETED.value),
    )
    disabled = failing = 0
    for status, is_failing, n in tx.fetchall():
        if status == SubscriptionStatus.DISABLED.value:
            disabled += int(n)
        elif is_failing:
            failing += int(n)
    tx.execute(
        "SELECT COUNT(*) FROM rm_webhook_deliveries WHERE tenant_id = ? AND state = ?",
        (tenant_id, DEAD),
    )
    row = tx.fetchone()
    return {"disabled": disabled, "failing": failing, "dead_letters": int(row[0]) if row else 0}
