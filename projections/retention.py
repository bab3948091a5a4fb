"""The retention ledger: every scope of personal data with its category, anchor date and
status; the legal holds; the tenants' policies and contract ends; the deletion records
(which carry no personal data) — and data-subject requests, for the listings.

Due dates are not stored: they follow from the anchor and the tenant's *current* policy
(see :mod:`contact_centre.retention`), so a policy change applies at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from contact_centre.compliance import DataSubjectRequest, LegalHold
from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel
from contact_centre.privacy import ScopeKind
from contact_centre.retention import Category, RetentionPolicy
from contact_centre.staff import Agent
from contact_centre.tenancy import Tenant
from projections.base import (
    Projection,
    Tx,
    dumps,
    from_micros,
    handles,
    handles_run,
    insert_rows,
    loads,
    micros,
    one_of,
    rows_as,
)

# A new scope's row, as :meth:`RetentionLedgerProjection._scopes` takes it.
_NEW_SCOPE = (
    ("scope_id", "text"),
    ("tenant_id", "text"),
    ("kind", "text"),
    ("subject_id", "text"),
    ("category", "text"),
    ("anchor_at", "bigint"),
    ("contact_id", "text"),
    ("conversation_id", "text"),
)

_SCOPE_KEYS = (
    "scope_id",
    "tenant_id",
    "kind",
    "subject_id",
    "category",
    "anchor_at",
    "contact_id",
    "conversation_id",
    "status",
    "notice_delete_after",
    "erased_at",
)


class RetentionLedgerProjection(Projection):
    """Order of events *across* aggregates does not matter (scaled mode partitions them
    apart): a contact's anchor takes in its conversations' anchors whenever either side
    arrives, and an inactivity notice stands only while no activity is later than it."""

    name = "retention"
    version = 4
    tables = (
        "rm_retention_scopes",
        "rm_retention_holds",
        "rm_retention_tenants",
        "rm_retention_deletions",
        "rm_requests",
    )
    # handlers use rm_retention_scopes_contact (a contact's conversation scopes)
    query_indexes = ("rm_retention_scopes_due", "rm_retention_deletions_at", "rm_requests_due")
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_retention_scopes ("
        " scope_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " subject_id TEXT NOT NULL, category TEXT NOT NULL, anchor_at BIGINT,"
        " contact_id TEXT, conversation_id TEXT, status TEXT NOT NULL,"
        " notice_delete_after BIGINT, erased_at BIGINT, noticed_at BIGINT) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS rm_retention_scopes_due"
        " ON rm_retention_scopes (tenant_id, category, status, anchor_at)",
        # (contact, kind, anchor): a contact's conversation scopes, and the latest of their
        # anchors read from the index alone: every conversation event asks for it, and a
        # contact with many conversations would otherwise read each of their rows.
        "CREATE INDEX IF NOT EXISTS rm_retention_scopes_contact"
        " ON rm_retention_scopes (contact_id, kind, anchor_at)",
        "CREATE TABLE IF NOT EXISTS rm_retention_holds ("
        " hold_id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, target_kind TEXT NOT NULL,"
        " target_id TEXT NOT NULL, placed_by TEXT NOT NULL, placed_at BIGINT NOT NULL,"
        " released_by TEXT, released_at BIGINT)",
        "CREATE TABLE IF NOT EXISTS rm_retention_tenants ("
        " tenant_id TEXT PRIMARY KEY, policy TEXT NOT NULL, status TEXT NOT NULL,"
        " terminated_at BIGINT, purge_after BIGINT, certificate TEXT, purged_at BIGINT)",
        "CREATE TABLE IF NOT EXISTS rm_retention_deletions ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, scope_kind TEXT NOT NULL,"
        " subject_id TEXT NOT NULL, category TEXT NOT NULL, rule TEXT NOT NULL,"
        " request_id TEXT, at BIGINT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS rm_retention_deletions_at"
        " ON rm_retention_deletions (tenant_id, at)",
        "CREATE TABLE IF NOT EXISTS rm_requests ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, kind TEXT NOT NULL,"
        " contact_ids TEXT NOT NULL, identity_kind TEXT, status TEXT NOT NULL,"
        " received_at BIGINT NOT NULL, due_at BIGINT NOT NULL, closed_at BIGINT,"
        " outcome TEXT)",
        "CREATE INDEX IF NOT EXISTS rm_requests_due ON rm_requests (tenant_id, status, due_at)",
    )

    # -- helpers -----------------------------------------------------------------------
    def _scope(
        self,
        tx: Tx,
        scope_id: str,
        tenant: str,
        kind: ScopeKind,
        subject: str,
        category: Category,
        anchor: int | None,
        contact: str | None,
        conversation: str | None,
    ) -> None:
        self._scopes(
            tx,
            [
                (
                    scope_id,
                    tenant,
                    kind.value,
                    subject,
                    category.value,
                    anchor,
                    contact,
                    conversation,
                )
            ],
        )

    def _scopes(self, tx: Tx, rows: list[tuple[Any, ...]]) -> None:
        """Live scopes: (id, tenant, kind, subject, category, anchor, contact, conversation)
        rows, in one statement."""
        insert_rows(
            tx, "rm_retention_scopes", _NEW_SCOPE, rows, key="scope_id", also={"status": "'live'"}
        )

    def _touch(self, tx: Tx, scope_id: str, moment: int, also: str | None = None) -> None:
        """Activity moves the anchor forward (never back) and cancels an inactivity notice
        issued before it (of ``scope_id`` and, in the same statement, of ``also``)."""
        self._touch_many(tx, [scope_id] if also is None else [scope_id, also], moment)

    def _touch_many(self, tx: Tx, scope_ids: list[str], moment: int) -> None:
        """As :meth:`_touch` of each scope (one moment), in one statement."""
        later = "status = 'noticed' AND noticed_at < ?"
        ids, params = one_of(tx, scope_ids)
        tx.execute(
            "UPDATE rm_retention_scopes SET anchor_at = CASE WHEN anchor_at IS NULL"
            " OR anchor_at < ? THEN ? ELSE anchor_at END,"
            f" notice_delete_after = CASE WHEN {later} THEN NULL ELSE notice_delete_after END,"
            f" noticed_at = CASE WHEN {later} THEN NULL ELSE noticed_at END,"
            f" status = CASE WHEN {later} THEN 'live' ELSE status END"
            f" WHERE scope_id {ids} AND status != 'erased'",
            (moment, moment, moment, moment, moment, *params),
        )

    def _touch_each(self, tx: Tx, moments: list[tuple[str, int]]) -> None:
        """As :meth:`_touch` of each (scope, moment), one moment a scope, in one statement."""
        later = "status = 'noticed' AND noticed_at < v.at"
        prefix, source, params = rows_as(tx, "v", (("scope_id", "text"), ("at", "bigint")), moments)
        tx.execute(
            prefix + "UPDATE rm_retention_scopes SET anchor_at = CASE WHEN anchor_at IS NULL"
            " OR anchor_at < v.at THEN v.at ELSE anchor_at END,"
            f" notice_delete_after = CASE WHEN {later} THEN NULL ELSE notice_delete_after END,"
            f" noticed_at = CASE WHEN {later} THEN NULL ELSE noticed_at END,"
            f" status = CASE WHEN {later} THEN 'live' ELSE status END"
            f" FROM {source} WHERE rm_retention_scopes.scope_id = v.scope_id"
            " AND status != 'erased'",
            params,
        )

    def _touch_contact(self, tx: Tx, contact_id: str) -> None:
        """The contact's anchor takes in the latest activity of its conversations."""
        self._touch_contacts(tx, "= ?", [contact_id])

    def _touch_contacts(self, tx: Tx, contacts_sql: str, params: Sequence[Any]) -> None:
        """As :meth:`_touch_contact` for each contact whose id passes ``contact_id
        {contacts_sql}`` (a test, taking ``params``). One statement, no result to wait for:
        on PostgreSQL a projection's transaction then costs one round trip, not one per
        read."""
        later = "status = 'noticed' AND noticed_at < m.v"
        tx.execute(
            "UPDATE rm_retention_scopes SET anchor_at = CASE WHEN anchor_at IS NULL"
            " OR anchor_at < m.v THEN m.v ELSE anchor_at END,"
            f" notice_delete_after = CASE WHEN {later} THEN NULL ELSE notice_delete_after END,"
            f" noticed_at = CASE WHEN {later} THEN NULL ELSE noticed_at END,"
            f" status = CASE WHEN {later} THEN 'live' ELSE status END"
            " FROM (SELECT contact_id, MAX(anchor_at) AS v FROM rm_retention_scopes"
            f" WHERE kind = ? AND contact_id {contacts_sql} GROUP BY contact_id) AS m"
            " WHERE scope_id = 'contact:' || m.contact_id AND status != 'erased'"
            " AND m.v IS NOT NULL",
            (ScopeKind.CONVERSATION.value, *params),
        )

    def _erased(
        self, tx: Tx, event: Any, scope_ids: list[str], rule: str, request_id: UUID | None
    ) -> None:
        at = micros(event.at)
        ids, params = one_of(tx, scope_ids)
        # The deletion records first, from the scopes' rows while they are not yet erased
        # (no row, or already erased: nothing is recorded, nothing changes). One statement
        # for all the event's scopes: an erasure's statements are what it costs.
        tx.execute(
            "INSERT INTO rm_retention_deletions (id, tenant_id, scope_kind, subject_id,"
            " category, rule, request_id, at) SELECT scope_id, ?, kind, subject_id,"
            " category, ?, ?, ? FROM rm_retention_scopes"
            f" WHERE scope_id {ids} AND status != 'erased' ON CONFLICT (id) DO NOTHING",
            (
                str(event.tenant_id),
                rule,
                str(request_id) if request_id else None,
                at,
                *params,
            ),
        )
        # An erased scope's anchor is its erasure: what came before is gone, and what
        # other aggregates report after it (in whatever order) must not move it.
        tx.execute(
            "UPDATE rm_retention_scopes SET status = 'erased', erased_at = ?, anchor_at = ?,"
            " notice_delete_after = NULL, noticed_at = NULL"
            f" WHERE scope_id {ids} AND status != 'erased'",
            (at, at, *params),
        )

    # -- tenants -----------------------------------------------------------------------
    @handles(Tenant.Registered)
    def _tenant(self, tx: Tx, e: Tenant.Registered, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_retention_tenants (tenant_id, policy, status) VALUES (?, ?, 'active')"
            " ON CONFLICT (tenant_id) DO NOTHING",
            (str(e.originator_id), dumps(RetentionPolicy().as_dict())),
        )

    @handles(Tenant.RetentionPolicyChanged)
    def _policy(self, tx: Tx, e: Tenant.RetentionPolicyChanged, position: int) -> None:
        tx.execute(
            "SELECT policy FROM rm_retention_tenants WHERE tenant_id = ?", (str(e.originator_id),)
        )
        row = tx.fetchone()
        if row is None:
            return
        policy = RetentionPolicy.from_dict(loads(row[0])).with_changes(e.changes)
        tx.execute(
            "UPDATE rm_retention_tenants SET policy = ? WHERE tenant_id = ?",
            (dumps(policy.as_dict()), str(e.originator_id)),
        )

    @handles(Tenant.Terminated)
    def _terminated(self, tx: Tx, e: Tenant.Terminated, position: int) -> None:
        tx.execute(
            "UPDATE rm_retention_tenants SET status = 'terminated', terminated_at = ?,"
            " purge_after = ? WHERE tenant_id = ?",
            (micros(e.at), micros(e.purge_after), str(e.originator_id)),
        )

    @handles(Tenant.Reactivated)
    def _reactivated(self, tx: Tx, e: Tenant.Reactivated, position: int) -> None:
        tx.execute(
            "UPDATE rm_retention_tenants SET status = 'active', terminated_at = NULL,"
            " purge_after = NULL WHERE tenant_id = ?",
            (str(e.originator_id),),
        )

    def purge_tenant(self, tx: Tx, tenant_id: str) -> None:
        """Everything of the tenant goes but its row, which keeps the certificate."""
        for table in self.tables:
            if table != "rm_retention_tenants":
                tx.execute(f"DELETE FROM {table} WHERE tenant_id = ?", (tenant_id,))

    def apply(self, tx: Tx, event: Any, position: int) -> None:
        super().apply(tx, event, position)
        if type(event) is Tenant.Purged:
            tx.execute(
                "UPDATE rm_retention_tenants SET status = 'purged', certificate = ?,"
                " purged_at = ?, policy = '{}' WHERE tenant_id = ?",
                (dumps(event.certificate), micros(event.at), str(event.originator_id)),
            )

    # -- contacts ----------------------------------------------------------------------
    @handles_run(Contact.Registered)
    def _contact_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        kind, category = ScopeKind.CONTACT.value, Category.CONTACT.value
        contacts = [(str(e.originator_id), str(e.tenant_id), micros(e.at)) for e, _ in run]
        self._scopes(
            tx,
            [(f"{kind}:{c}", tenant, kind, c, category, at, c, None) for c, tenant, at in contacts],
        )
        # their conversations' events may have come first
        ids, params = one_of(tx, [c for c, _, _ in contacts])
        self._touch_contacts(tx, ids, params)

    @handles(
        Contact.IdentityLinked, Contact.DetailsCorrected, Contact.Tagged, Contact.AttributesChanged
    )
    def _contact_activity(self, tx: Tx, e: Any, position: int) -> None:
        self._touch(tx, f"contact:{e.originator_id}", micros(e.at))

    @handles(Contact.InactivityNoticeIssued)
    def _noticed(self, tx: Tx, e: Contact.InactivityNoticeIssued, position: int) -> None:
        at = micros(e.at)
        tx.execute(
            "UPDATE rm_retention_scopes SET status = 'noticed', notice_delete_after = ?,"
            " noticed_at = ? WHERE scope_id = ? AND status = 'live'"
            " AND (anchor_at IS NULL OR anchor_at <= ?)",
            (micros(e.delete_after), at, f"contact:{e.originator_id}", at),
        )

    @handles(Contact.Erased)
    def _contact_erased(self, tx: Tx, e: Contact.Erased, position: int) -> None:
        self._erased(tx, e, [f"contact:{e.originator_id}"], e.reason, e.request_id)

    @handles(Contact.MergedInto)
    def _contact_merged(self, tx: Tx, e: Contact.MergedInto, position: int) -> None:
        """The merged-away contact's data lives on in the survivor; its own scope key is
        destroyed, which the ledger records like an erasure (rule ``contact_merged``)."""
        self._erased(tx, e, [f"contact:{e.originator_id}"], "contact_merged", None)

    # -- conversations -----------------------------------------------------------------
    @handles_run(Conversation.Opened)
    def _conversation_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        rows: list[tuple[Any, ...]] = []
        for e, _ in run:
            conversation, contact = str(e.originator_id), str(e.contact_id)
            scopes = [(ScopeKind.CONVERSATION, Category.CORRESPONDENCE)]
            if e.channel == Channel.WEBCHAT.value:
                # a chat's content, and the visitor's IP and cookie with it (P1, P4)
                scopes = [
                    (ScopeKind.CONVERSATION, Category.CHAT_VISITOR),
                    (ScopeKind.VISITOR_NETWORK, Category.CHAT_VISITOR),
                ]
            rows += [
                (
                    f"{kind.value}:{conversation}",
                    str(e.tenant_id),
                    kind.value,
                    conversation,
                    category.value,
                    micros(e.at),
                    contact,
                    conversation,
                )
                for kind, category in scopes
            ]
        self._scopes(tx, rows)
        ids, params = one_of(tx, sorted({str(e.contact_id) for e, _ in run}))
        self._touch_contacts(tx, ids, params)

    def _conversation_activity(self, tx: Tx, conversation: str, moment: int) -> None:
        self._conversations_activity(tx, [(conversation, moment)])

    def _conversations_activity(self, tx: Tx, moments: list[tuple[str, int]]) -> None:
        """Activity at (conversation, moment)s, one a conversation: their scopes' anchors,
        then their contacts'."""
        self._touch_each(
            tx,
            [
                (f"{kind.value}:{conversation}", moment)
                for conversation, moment in moments
                for kind in (ScopeKind.CONVERSATION, ScopeKind.VISITOR_NETWORK)
            ],
        )
        ids, params = one_of(tx, [f"conversation:{conversation}" for conversation, _ in moments])
        self._touch_contacts(
            tx, f"IN (SELECT contact_id FROM rm_retention_scopes WHERE scope_id {ids})", params
        )

    @handles(Conversation.ContactChanged)
    def _contact_changed(self, tx: Tx, e: Conversation.ContactChanged, position: int) -> None:
        """The conversation's scopes now belong to the survivor of a merge: its holds and
        its erasure cover them."""
        conversation = str(e.originator_id)
        # By key: no index leads from a conversation to its scopes' rows otherwise.
        tx.execute(
            "UPDATE rm_retention_scopes SET contact_id = ? WHERE scope_id IN (?, ?)",
            (str(e.contact_id), f"conversation:{conversation}", f"visitor-network:{conversation}"),
        )

    @handles_run(Conversation.MessageReceived)
    def _received_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self._conversations_activity(
            tx,
            [(str(e.originator_id), max(micros(e.occurred_at), micros(e.at))) for e, _ in run],
        )

    @handles(
        Conversation.MessageSent,
        Conversation.NoteAdded,
        Conversation.Resolved,
        Conversation.Closed,
        Conversation.Reopened,
    )
    def _activity(self, tx: Tx, e: Any, position: int) -> None:
        self._conversation_activity(tx, str(e.originator_id), micros(e.at))

    @handles_run(Conversation.Closed)
    def _closed_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """As :meth:`_activity` for each (a run's events have one time): the
        conversations' scopes move to it in one statement, then each of their contacts
        takes in the latest of its conversations once. Touches only move anchors forward,
        so the contact's anchor after the last one is what it would be after each."""
        conversations = [str(e.originator_id) for e, _ in run]
        scopes = [f"conversation:{c}" for c in conversations]
        moment = micros(run[0][0].at)
        ids, params = one_of(tx, scopes)
        self._touch_many(tx, [*scopes, *(f"visitor-network:{c}" for c in conversations)], moment)
        # each contact's latest conversation activity, found through the contact index
        # from the contact's own row (a join here makes PostgreSQL scan the table)
        kind = ScopeKind.CONVERSATION.value
        v = (
            "(SELECT MAX(c.anchor_at) FROM rm_retention_scopes c WHERE c.contact_id ="
            f" substr(rm_retention_scopes.scope_id, 9) AND c.kind = '{kind}')"
        )
        later = f"status = 'noticed' AND noticed_at < {v}"
        tx.execute(
            f"UPDATE rm_retention_scopes SET anchor_at = CASE WHEN anchor_at IS NULL"
            f" OR anchor_at < {v} THEN {v} ELSE anchor_at END,"
            f" notice_delete_after = CASE WHEN {later} THEN NULL ELSE notice_delete_after END,"
            f" noticed_at = CASE WHEN {later} THEN NULL ELSE noticed_at END,"
            f" status = CASE WHEN {later} THEN 'live' ELSE status END"
            " WHERE scope_id IN (SELECT 'contact:' || contact_id FROM rm_retention_scopes"
            f" WHERE scope_id {ids}) AND status != 'erased' AND {v} IS NOT NULL",
            params,
        )

    @handles(Conversation.ContentErased)
    def _content_erased(self, tx: Tx, e: Conversation.ContentErased, position: int) -> None:
        conversation = str(e.originator_id)
        self._erased(
            tx,
            e,
            [f"conversation:{conversation}", f"visitor-network:{conversation}"],
            e.reason,
            e.request_id,
        )

    @handles_run(Conversation.ContentErased)
    def _contents_erased(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        """As :meth:`_content_erased` for each: their rows are their own scopes'."""
        by_cause: dict[tuple[str, UUID | None], list[str]] = {}
        for e, _ in run:
            conversation = str(e.originator_id)
            by_cause.setdefault((e.reason, e.request_id), []).extend(
                [f"conversation:{conversation}", f"visitor-network:{conversation}"]
            )
        for (reason, request_id), scope_ids in by_cause.items():
            self._erased(tx, run[0][0], scope_ids, reason, request_id)

    # -- agents ------------------------------------------------------------------------
    @handles(Agent.Created)
    def _agent(self, tx: Tx, e: Agent.Created, position: int) -> None:
        agent = str(e.originator_id)
        self._scope(
            tx,
            f"agent:{agent}",
            str(e.tenant_id),
            ScopeKind.AGENT,
            agent,
            Category.ACCOUNT,
            None,
            None,
            None,
        )

    @handles(Agent.Erased)
    def _agent_erased(self, tx: Tx, e: Agent.Erased, position: int) -> None:
        self._erased(tx, e, [f"agent:{e.originator_id}"], "agent_deleted", None)

    # -- holds -------------------------------------------------------------------------
    @handles(LegalHold.Placed)
    def _hold(self, tx: Tx, e: LegalHold.Placed, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_retention_holds (hold_id, tenant_id, target_kind, target_id,"
            " placed_by, placed_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (hold_id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                e.target_kind,
                str(e.target_id),
                e.placed_by,
                micros(e.at),
            ),
        )

    @handles(LegalHold.Released)
    def _released(self, tx: Tx, e: LegalHold.Released, position: int) -> None:
        tx.execute(
            "UPDATE rm_retention_holds SET released_by = ?, released_at = ? WHERE hold_id = ?",
            (e.released_by, micros(e.at), str(e.originator_id)),
        )

    # -- data-subject requests ---------------------------------------------------------
    @handles(DataSubjectRequest.Received)
    def _request(self, tx: Tx, e: DataSubjectRequest.Received, position: int) -> None:
        tx.execute(
            "INSERT INTO rm_requests (id, tenant_id, kind, contact_ids, identity_kind, status,"
            " received_at, due_at) VALUES (?, ?, ?, ?, ?, 'open', ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (
                str(e.originator_id),
                str(e.tenant_id),
                e.kind,
                dumps([str(c) for c in e.contact_ids]),
                e.identity_kind,
                micros(e.received_at),
                micros(e.due_at),
            ),
        )

    @handles(DataSubjectRequest.DeadlineExtended)
    def _extended(self, tx: Tx, e: DataSubjectRequest.DeadlineExtended, position: int) -> None:
        tx.execute(
            "UPDATE rm_requests SET due_at = ? WHERE id = ?",
            (micros(e.due_at), str(e.originator_id)),
        )

    @handles(DataSubjectRequest.Fulfilled)
    def _fulfilled(self, tx: Tx, e: DataSubjectRequest.Fulfilled, position: int) -> None:
        tx.execute(
            "UPDATE rm_requests SET status = 'fulfilled', closed_at = ?, outcome = ? WHERE id = ?",
            (micros(e.at), dumps(e.outcome), str(e.originator_id)),
        )

    @handles(DataSubjectRequest.Rejected)
    def _rejected(self, tx: Tx, e: DataSubjectRequest.Rejected, position: int) -> None:
        tx.execute(
            "UPDATE rm_requests SET status = 'rejected', closed_at = ? WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )


# -- queries -------------------------------------------------------------------------------
def tenant_state(tx: Tx, tenant_id: str) -> dict[str, Any] | None:
    keys = ("policy", "status", "terminated_at", "purge_after", "certificate", "purged_at")
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_retention_tenants WHERE tenant_id = ?", (tenant_id,)
    )
    row = tx.fetchone()
    return None if row is None else dict(zip(keys, row, strict=True))


def tenants(tx: Tx) -> list[dict[str, Any]]:
    keys = ("tenant_id", "policy", "status", "terminated_at", "purge_after")
    tx.execute(f"SELECT {', '.join(keys)} FROM rm_retention_tenants ORDER BY tenant_id")
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


def held_targets(tx: Tx, tenant_id: str) -> set[tuple[str, str]]:
    tx.execute(
        "SELECT target_kind, target_id FROM rm_retention_holds"
        " WHERE tenant_id = ? AND released_at IS NULL",
        (tenant_id,),
    )
    return {(str(k), str(t)) for k, t in tx.fetchall()}


def is_held(scope: dict[str, Any], held: set[tuple[str, str]]) -> bool:
    if ("tenant", str(scope["tenant_id"])) in held:
        return True
    if scope["contact_id"] and ("contact", str(scope["contact_id"])) in held:
        return True
    return (
        bool(scope["conversation_id"]) and ("conversation", str(scope["conversation_id"])) in held
    )


def scopes(
    tx: Tx,
    tenant_id: str,
    *,
    category: str | None = None,
    status: str | None = None,
    anchored_before: int | None = None,
    contact_id: str | None = None,
    limit: int = 1000,
    after: str | None = None,
) -> list[dict[str, Any]]:
    where = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    for column, value in (("category", category), ("status", status), ("contact_id", contact_id)):
        if value is not None:
            where.append(f"{column} = ?")
            params.append(value)
    if anchored_before is not None:
        where.append("anchor_at IS NOT NULL AND anchor_at <= ?")
        params.append(anchored_before)
    if after is not None:
        where.append("scope_id > ?")
        params.append(after)
    params.append(limit)
    tx.execute(
        f"SELECT {', '.join(_SCOPE_KEYS)} FROM rm_retention_scopes WHERE {' AND '.join(where)}"
        " ORDER BY scope_id LIMIT ?",
        params,
    )
    return [dict(zip(_SCOPE_KEYS, row, strict=True)) for row in tx.fetchall()]


def noticed_due(tx: Tx, tenant_id: str, now: int) -> list[dict[str, Any]]:
    tx.execute(
        f"SELECT {', '.join(_SCOPE_KEYS)} FROM rm_retention_scopes WHERE tenant_id = ?"
        " AND status = 'noticed' AND notice_delete_after <= ? ORDER BY scope_id",
        (tenant_id, now),
    )
    return [dict(zip(_SCOPE_KEYS, row, strict=True)) for row in tx.fetchall()]


def holds(tx: Tx, tenant_id: str) -> list[dict[str, Any]]:
    keys = (
        "hold_id",
        "target_kind",
        "target_id",
        "placed_by",
        "placed_at",
        "released_by",
        "released_at",
    )
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_retention_holds WHERE tenant_id = ?"
        " ORDER BY placed_at, hold_id",
        (tenant_id,),
    )
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


def deletions(tx: Tx, tenant_id: str, since: int, limit: int = 500) -> list[dict[str, Any]]:
    keys = ("id", "scope_kind", "subject_id", "category", "rule", "request_id", "at")
    tx.execute(
        f"SELECT {', '.join(keys)} FROM rm_retention_deletions WHERE tenant_id = ?"
        " AND at >= ? ORDER BY at, id LIMIT ?",
        (tenant_id, since, limit),
    )
    return [dict(zip(keys, row, strict=True)) for row in tx.fetchall()]


REQUEST_KEYS = (
    "id",
    "kind",
    "contact_ids",
    "identity_kind",
    "status",
    "received_at",
    "due_at",
    "closed_at",
    "outcome",
)


def requests(
    tx: Tx, tenant_id: str, *, status: str | None = None, due_before: int | None = None
) -> list[dict[str, Any]]:
    where, params = ["tenant_id = ?"], [tenant_id]
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if due_before is not None:
        where.append("due_at <= ?")
        params.append(due_before)  # type: ignore[arg-type]
    tx.execute(
        f"SELECT {', '.join(REQUEST_KEYS)} FROM rm_requests WHERE {' AND '.join(where)}"
        " ORDER BY due_at, id",
        params,
    )
    return [dict(zip(REQUEST_KEYS, row, strict=True)) for row in tx.fetchall()]


def get_request(tx: Tx, tenant_id: str, request_id: str) -> dict[str, Any] | None:
    tx.execute(
        f"SELECT {', '.join(REQUEST_KEYS)} FROM rm_requests WHERE tenant_id = ? AND id = ?",
        (tenant_id, request_id),
    )
    row = tx.fetchone()
    return None if row is None else dict(zip(REQUEST_KEYS, row, strict=True))


def due_at(
    scope: dict[str, Any], policy: RetentionPolicy, tenant: dict[str, Any]
) -> datetime | None:
    """When a scope falls due under ``policy`` (None: not while the tenant's contract runs,
    or no anchor yet)."""
    category = Category(scope["category"])
    if scope["status"] == "noticed" and scope["notice_delete_after"] is not None:
        return from_micros(scope["notice_delete_after"])
    anchor = scope["anchor_at"]
    ended = tenant.get("terminated_at")
    if category in (Category.CORRESPONDENCE, Category.ACCOUNT):
        if ended is None:
            return None  # runs from the end of the tenant's contract
        anchor = max(anchor or 0, ended)
    if anchor is None:
        return None
    return policy.due(category, from_micros(anchor))
