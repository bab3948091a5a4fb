"""The CRM contact view: one row per contact, with everything an integration or an agent
needs at a glance, and a blind search index over names and identities.

Names and addresses stay sealed in the rows. Search works on keyed hashes of word
prefixes (the projection opens the values once, with the vault, to compute them): a
query's words are hashed the same way and matched exactly, so nothing searchable is kept
in clear. Exact lookups by identity use the write-side index, not this view.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation, ConversationStatus
from contact_centre.privacy import Sealed, Sealer
from projections.base import (
    REGISTERED,
    Projection,
    Tx,
    dumps,
    handles,
    handles_run,
    insert_opened,
    insert_rows,
    loads,
    micros,
    one_of,
    registered_rows,
    rows_as,
    sealed_text,
)

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MIN_PREFIX = 2
MAX_PREFIX = 24
_OPEN = (ConversationStatus.OPEN.value, ConversationStatus.PENDING.value)
_OPEN_SQL = "(" + ", ".join(f"'{status}'" for status in _OPEN) + ")"


def search_words(text: str) -> list[str]:
    """Lower-case words of a name or address: 'Ann.Jones@Example.com' → ann, jones, example, com;
    '+447700900123' → 447700900123."""
    return [w.lower() for w in _WORD.findall(text)]


def prefixes(word: str) -> list[str]:
    return [word[:n] for n in range(MIN_PREFIX, min(len(word), MAX_PREFIX) + 1)]


class CrmProjection(Projection):
    name = "crm"
    # 4: contact totals derived from the conversation rows, so events of a contact and of
    # its conversations may arrive in either order (Kafka partitions them apart)
    # 5: merged contacts (rm_crm_merged) and conversations moving between contacts
    # 6: conversation rows stored in their key's order (WITHOUT ROWID on SQLite)
    version = 6
    tables = ("rm_crm_contacts", "rm_crm_search", "rm_crm_conversations", "rm_crm_merged")
    # handlers use rm_crm_search_contact and rm_crm_conversations_contact
    query_indexes = ("rm_crm_contacts_recent",)
    ddl = (
        "CREATE TABLE IF NOT EXISTS rm_crm_contacts ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, display_name TEXT,"
        " identities TEXT NOT NULL, tags TEXT NOT NULL, attributes TEXT,"
        " opted_out TEXT NOT NULL, first_contact_at BIGINT, last_contact_at BIGINT,"
        " open_conversations INTEGER NOT NULL, total_conversations INTEGER NOT NULL,"
        " created_at BIGINT NOT NULL, updated_at BIGINT NOT NULL,"
        " restricted INTEGER NOT NULL DEFAULT 0, notice_delete_after BIGINT,"
        " external_id TEXT)",
        "CREATE INDEX IF NOT EXISTS rm_crm_contacts_recent"
        " ON rm_crm_contacts (tenant_id, last_contact_at, id)",
        "CREATE TABLE IF NOT EXISTS rm_crm_search ("
        " tenant_id TEXT NOT NULL, token TEXT NOT NULL, contact_id TEXT NOT NULL,"
        " source TEXT NOT NULL, PRIMARY KEY (tenant_id, token, contact_id, source))",
        "CREATE INDEX IF NOT EXISTS rm_crm_search_contact ON rm_crm_search (contact_id)",
        "CREATE TABLE IF NOT EXISTS rm_crm_conversations ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, contact_id TEXT NOT NULL,"
        " status TEXT NOT NULL, first_at BIGINT, last_at BIGINT) WITHOUT ROWID",
        "CREATE INDEX IF NOT EXISTS rm_crm_conversations_contact"
        " ON rm_crm_conversations (contact_id)",
        # contacts merged into another: where to find them now
        "CREATE TABLE IF NOT EXISTS rm_crm_merged ("
        " id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, merged_into TEXT NOT NULL)",
        # a merge repoints the contacts merged into the one it merges away
        "CREATE INDEX IF NOT EXISTS rm_crm_merged_into ON rm_crm_merged (merged_into)",
    )

    def __init__(self, sealer: Sealer) -> None:
        self.sealer = sealer

    # -- search tokens -----------------------------------------------------------------
    def _index(
        self, tx: Tx, tenant_id: str, contact_id: str, source: str, value: Sealed | None
    ) -> None:
        self._index_many(tx, [(tenant_id, contact_id, source, value)])

    def _index_many(self, tx: Tx, values: Sequence[tuple[str, str, str, Sealed | None]]) -> None:
        """Search tokens of (tenant, contact, source, value)s, in one statement."""
        rows = []
        for tenant_id, contact_id, source, value in values:
            text = None if value is None else self.sealer.open(value)
            if not isinstance(text, str):
                continue  # none, or erased: nothing to find it by
            tokens = set(
                self.sealer.blind_indexes(
                    UUID(tenant_id),
                    "search",
                    {prefix for word in search_words(text) for prefix in prefixes(word)},
                )
            )
            rows += [(tenant_id, token, contact_id, source) for token in sorted(tokens)]
        if not rows:
            return
        if tx.dialect == "postgres":  # one statement, not one a token (~20 a name)
            insert_rows(
                tx,
                "rm_crm_search",
                (
                    ("tenant_id", "text"),
                    ("token", "text"),
                    ("contact_id", "text"),
                    ("source", "text"),
                ),
                rows,
                key="tenant_id, token, contact_id, source",
            )
            return
        tx.executemany(
            "INSERT INTO rm_crm_search (tenant_id, token, contact_id, source)"
            " VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
            rows,
        )

    # -- contacts ----------------------------------------------------------------------
    @handles_run(Contact.Registered)
    def _registered_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_rows(
            tx,
            "rm_crm_contacts",
            REGISTERED,
            registered_rows(run),
            key="id",
            also={
                "tags": "'[]'",
                "attributes": "NULL",
                "opted_out": "'[]'",
                "first_contact_at": "NULL",
                "last_contact_at": "NULL",
                "open_conversations": "0",
                "total_conversations": "0",
                "updated_at": "v.created_at",
            },
        )
        self._index_many(
            tx,
            [
                (str(e.tenant_id), str(e.originator_id), source, value)
                for e, _ in run
                for source, value in (("name", e.display_name), ("identity", e.identity_address))
            ],
        )
        self._totals(tx, [str(e.originator_id) for e, _ in run])

    def _row(self, tx: Tx, contact_id: str, column: str) -> Any:
        tx.execute(f"SELECT {column} FROM rm_crm_contacts WHERE id = ?", (contact_id,))
        row = tx.fetchone()
        return None if row is None else row[0]

    @handles(Contact.IdentityLinked)
    def _identity_linked(self, tx: Tx, e: Contact.IdentityLinked, position: int) -> None:
        contact_id = str(e.originator_id)
        current = self._row(tx, contact_id, "identities")
        if current is None:
            return
        identities = loads(current)
        identities.append([e.kind, e.address])
        tx.execute(
            "UPDATE rm_crm_contacts SET identities = ?, updated_at = ? WHERE id = ?",
            (dumps(identities), micros(e.at), contact_id),
        )
        self._index(tx, str(e.tenant_id), contact_id, "identity", e.address)

    @handles(Contact.DetailsCorrected)
    def _details_corrected(self, tx: Tx, e: Contact.DetailsCorrected, position: int) -> None:
        contact_id = str(e.originator_id)
        tx.execute(
            "UPDATE rm_crm_contacts SET display_name = ?, updated_at = ? WHERE id = ?",
            (sealed_text(e.display_name), micros(e.at), contact_id),
        )
        tx.execute(
            "DELETE FROM rm_crm_search WHERE contact_id = ? AND source = 'name'", (contact_id,)
        )
        self._index(tx, str(e.tenant_id), contact_id, "name", e.display_name)

    @handles(Contact.Tagged)
    def _tagged(self, tx: Tx, e: Contact.Tagged, position: int) -> None:
        contact_id = str(e.originator_id)
        current = self._row(tx, contact_id, "tags")
        if current is None:
            return
        tags = (set(loads(current)) | set(e.added)) - set(e.removed)
        tx.execute(
            "UPDATE rm_crm_contacts SET tags = ?, updated_at = ? WHERE id = ?",
            (dumps(sorted(tags)), micros(e.at), contact_id),
        )

    @handles(Contact.AttributesChanged)
    def _attributes(self, tx: Tx, e: Contact.AttributesChanged, position: int) -> None:
        tx.execute(
            "UPDATE rm_crm_contacts SET attributes = ?, updated_at = ? WHERE id = ?",
            (sealed_text(e.attributes), micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.Restricted)
    def _restricted(self, tx: Tx, e: Contact.Restricted, position: int) -> None:
        tx.execute(
            "UPDATE rm_crm_contacts SET restricted = 1, updated_at = ? WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.RestrictionLifted)
    def _restriction_lifted(self, tx: Tx, e: Contact.RestrictionLifted, position: int) -> None:
        tx.execute(
            "UPDATE rm_crm_contacts SET restricted = 0, updated_at = ? WHERE id = ?",
            (micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.InactivityNoticeIssued)
    def _noticed(self, tx: Tx, e: Contact.InactivityNoticeIssued, position: int) -> None:
        tx.execute(
            "UPDATE rm_crm_contacts SET notice_delete_after = ? WHERE id = ?",
            (micros(e.delete_after), str(e.originator_id)),
        )

    @handles(Contact.OptedOut, Contact.OptedIn)
    def _consent(self, tx: Tx, e: Any, position: int) -> None:
        contact_id = str(e.originator_id)
        current = self._row(tx, contact_id, "opted_out")
        if current is None:
            return
        channels = set(loads(current))
        if isinstance(e, Contact.OptedOut):
            channels.add(e.channel)
        else:
            channels.discard(e.channel)
        tx.execute(
            "UPDATE rm_crm_contacts SET opted_out = ?, updated_at = ? WHERE id = ?",
            (dumps(sorted(channels)), micros(e.at), contact_id),
        )

    @handles(Contact.Erased)
    def _erased(self, tx: Tx, e: Contact.Erased, position: int) -> None:
        """The contact's row and its search tokens go: it is found no more."""
        contact_id = str(e.originator_id)
        tx.execute("DELETE FROM rm_crm_search WHERE contact_id = ?", (contact_id,))
        tx.execute("DELETE FROM rm_crm_contacts WHERE id = ?", (contact_id,))

    @handles(Contact.ExternalIdSet)
    def _external_id(self, tx: Tx, e: Contact.ExternalIdSet, position: int) -> None:
        tx.execute(
            "UPDATE rm_crm_contacts SET external_id = ?, updated_at = ? WHERE id = ?",
            (sealed_text(e.external_id), micros(e.at), str(e.originator_id)),
        )

    @handles(Contact.MergedInto)
    def _merged_into(self, tx: Tx, e: Contact.MergedInto, position: int) -> None:
        """The merged-away contact's row goes (its key is destroyed) and its id points at
        the survivor. Its conversations move by their own ContactChanged events, and the
        survivor's totals follow from its conversation rows whichever comes first."""
        merged, survivor = str(e.originator_id), str(e.survivor_id)
        tx.execute("DELETE FROM rm_crm_search WHERE contact_id = ?", (merged,))
        tx.execute("DELETE FROM rm_crm_contacts WHERE id = ?", (merged,))
        tx.execute(
            "INSERT INTO rm_crm_merged (id, tenant_id, merged_into) VALUES (?, ?, ?)"
            " ON CONFLICT (id) DO NOTHING",
            (merged, str(e.tenant_id), survivor),
        )
        # a contact merged earlier into this one now points at the survivor too
        tx.execute(
            "UPDATE rm_crm_merged SET merged_into = ? WHERE merged_into = ?", (survivor, merged)
        )

    # -- conversations -----------------------------------------------------------------
    @handles_run(Conversation.Opened)
    def _opened_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        insert_opened(
            tx,
            "rm_crm_conversations",
            run,
            ("id", "tenant_id", "contact_id"),
            also={"status": f"'{ConversationStatus.OPEN.value}'"},
        )
        self._totals(tx, sorted({str(e.contact_id) for e, _ in run}))

    def _totals(self, tx: Tx, contact_id: str | list[str]) -> None:
        """Contacts' conversation counts and first/last contact, from their conversation
        rows: the same whichever of the contact's and its conversations' events came first."""
        if isinstance(contact_id, str):
            ids, params = "= ?", [contact_id]
        else:
            ids, params = one_of(tx, contact_id)
        tx.execute(
            "UPDATE rm_crm_contacts SET (total_conversations, open_conversations,"
            " first_contact_at, last_contact_at) = (SELECT COUNT(*),"
            f" COUNT(CASE WHEN c.status IN {_OPEN_SQL} THEN 1 END), MIN(c.first_at),"
            " MAX(c.last_at) FROM rm_crm_conversations c WHERE c.contact_id = rm_crm_contacts.id)"
            f" WHERE id {ids}",
            params,
        )

    def _contact_of(self, tx: Tx, conversation_id: str) -> tuple[str, str] | None:
        tx.execute(
            "SELECT contact_id, status FROM rm_crm_conversations WHERE id = ?", (conversation_id,)
        )
        row = tx.fetchone()
        return None if row is None else (str(row[0]), str(row[1]))

    def _contacted(self, tx: Tx, moments: list[tuple[str, int]]) -> None:
        """Messages at (conversation, moment)s, one a conversation: each conversation's
        first/last contact widen to include its moment, and so do its contact's (the
        MIN/MAX of its conversations' that :meth:`_totals` computes: widening one of them
        widens the MIN/MAX by the same), without reading anything back: two statements,
        whichever rows are missing."""
        columns = (("conversation_id", "text"), ("at", "bigint"))
        prefix, source, params = rows_as(tx, "v", columns, moments)
        tx.execute(
            prefix + "UPDATE rm_crm_contacts SET"
            " first_contact_at = CASE WHEN first_contact_at IS NULL OR first_contact_at > m.lo"
            " THEN m.lo ELSE first_contact_at END,"
            " last_contact_at = CASE WHEN last_contact_at IS NULL OR last_contact_at < m.hi"
            " THEN m.hi ELSE last_contact_at END"
            " FROM (SELECT c.contact_id, MIN(v.at) AS lo, MAX(v.at) AS hi"
            f" FROM {source} JOIN rm_crm_conversations c ON c.id = v.conversation_id"
            " GROUP BY c.contact_id) AS m WHERE rm_crm_contacts.id = m.contact_id",
            params,
        )
        prefix, source, params = rows_as(tx, "v", columns, moments)
        tx.execute(
            prefix + "UPDATE rm_crm_conversations SET"
            " first_at = CASE WHEN first_at IS NULL OR first_at > v.at THEN v.at ELSE first_at END,"
            " last_at = CASE WHEN last_at IS NULL OR last_at < v.at THEN v.at ELSE last_at END"
            f" FROM {source} WHERE rm_crm_conversations.id = v.conversation_id",
            params,
        )

    @handles_run(Conversation.MessageReceived)
    def _received_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self._contacted(tx, [(str(e.originator_id), micros(e.occurred_at)) for e, _ in run])

    @handles(Conversation.MessageSent)
    def _sent(self, tx: Tx, e: Conversation.MessageSent, position: int) -> None:
        self._contacted(tx, [(str(e.originator_id), micros(e.at))])

    def _status(self, tx: Tx, conversation_id: str | list[str], status: ConversationStatus) -> None:
        """The conversations' status, and their contacts' totals where a conversation goes
        from open to not open or back: nothing read back (no round trip on PostgreSQL).
        The totals are counted first, with the new status in place of the old, from the
        contacts of those that change sides; then the status is written."""
        if isinstance(conversation_id, str):
            ids, params = "= ?", [conversation_id]
        else:
            ids, params = one_of(tx, conversation_id)
        other_side = "NOT IN" if status.value in _OPEN else "IN"
        tx.execute(
            "UPDATE rm_crm_contacts SET (total_conversations, open_conversations,"
            " first_contact_at, last_contact_at) = (SELECT COUNT(*),"
            f" COUNT(CASE WHEN (CASE WHEN c.id {ids} THEN ? ELSE c.status END)"
            f" IN {_OPEN_SQL} THEN 1 END), MIN(c.first_at), MAX(c.last_at)"
            " FROM rm_crm_conversations c WHERE c.contact_id = rm_crm_contacts.id)"
            " WHERE id IN (SELECT contact_id FROM rm_crm_conversations"
            f" WHERE id {ids} AND status {other_side} {_OPEN_SQL})",
            (*params, status.value, *params),
        )
        tx.execute(
            f"UPDATE rm_crm_conversations SET status = ? WHERE id {ids}", (status.value, *params)
        )

    @handles(Conversation.ContactChanged)
    def _contact_changed(self, tx: Tx, e: Conversation.ContactChanged, position: int) -> None:
        if self._contact_of(tx, str(e.originator_id)) is None:
            return
        tx.execute(
            "UPDATE rm_crm_conversations SET contact_id = ? WHERE id = ?",
            (str(e.contact_id), str(e.originator_id)),
        )
        for contact_id in (str(e.previous_contact_id), str(e.contact_id)):
            self._totals(tx, contact_id)

    @handles(Conversation.MarkedPending)
    def _pending(self, tx: Tx, e: Any, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.PENDING)

    @handles(Conversation.Resolved)
    def _resolved(self, tx: Tx, e: Any, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.RESOLVED)

    @handles(Conversation.Reopened)
    def _reopened(self, tx: Tx, e: Any, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.OPEN)

    @handles(Conversation.Closed)
    def _closed(self, tx: Tx, e: Any, position: int) -> None:
        self._status(tx, str(e.originator_id), ConversationStatus.CLOSED)

    @handles_run(Conversation.Closed)
    def _closed_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        self._status(tx, [str(e.originator_id) for e, _ in run], ConversationStatus.CLOSED)


# -- queries -------------------------------------------------------------------------------
CONTACT_KEYS = (
    "id",
    "display_name",
    "identities",
    "tags",
    "attributes",
    "opted_out",
    "first_contact_at",
    "last_contact_at",
    "open_conversations",
    "total_conversations",
    "created_at",
    "updated_at",
    "restricted",
    "notice_delete_after",
    "external_id",
)


def get_contact(tx: Tx, tenant_id: str, contact_id: str) -> dict[str, Any] | None:
    tx.execute(
        f"SELECT {', '.join(CONTACT_KEYS)} FROM rm_crm_contacts WHERE tenant_id = ? AND id = ?",
        (tenant_id, contact_id),
    )
    row = tx.fetchone()
    return None if row is None else dict(zip(CONTACT_KEYS, row, strict=True))


def merged_into(tx: Tx, tenant_id: str, contact_id: str) -> str | None:
    """The contact a merged-away contact now lives on in, if it was merged. Follows a chain
    (A into B, then B into C gives C) whichever order the merges were projected in."""
    found: str | None = None
    current, seen = contact_id, {contact_id}
    while True:
        tx.execute(
            "SELECT merged_into FROM rm_crm_merged WHERE tenant_id = ? AND id = ?",
            (tenant_id, current),
        )
        row = tx.fetchone()
        if row is None or str(row[0]) in seen:
            return found
        found = current = str(row[0])
        seen.add(current)


def search_contact_ids(
    tx: Tx, tenant_id: str, tokens: Sequence[str], limit: int = 1000
) -> list[str]:
    """Contacts matching every token (one per query word)."""
    unique = sorted(set(tokens))
    if not unique:
        return []
    tx.execute(
        "SELECT contact_id FROM rm_crm_search WHERE tenant_id = ?"
        f" AND token IN ({', '.join('?' * len(unique))})"
        " GROUP BY contact_id HAVING COUNT(DISTINCT token) = ? LIMIT ?",
        (tenant_id, *unique, len(unique), limit),
    )
    return [str(row[0]) for row in tx.fetchall()]


def list_contacts(
    tx: Tx,
    tenant_id: str,
    *,
    ids: Sequence[str] | None = None,
    tag: str | None = None,
    after: tuple[int, str] | None = None,
    limit: int = 50,
    include_restricted: bool = True,
) -> list[dict[str, Any]]:
    """Most recently in contact first (never-contacted contacts last)."""
    where = ["tenant_id = ?"]
    params: list[Any] = [tenant_id]
    if not include_restricted:
        where.append("restricted = 0")
    if ids is not None:
        if not ids:
            return []
        where.append(f"id IN ({', '.join('?' * len(ids))})")
        params.extend(ids)
    if tag is not None:
        # tags are a JSON list of simple labels: match the quoted label exactly
        where.append("tags LIKE ?")
        params.append(f'%"{tag}"%')
    order_key = "COALESCE(last_contact_at, 0)"
    if after is not None:
        where.append(f"({order_key} < ? OR ({order_key} = ? AND id < ?))")
        params.extend([after[0], after[0], after[1]])
    params.append(limit)
    tx.execute(
        f"SELECT {', '.join(CONTACT_KEYS)} FROM rm_crm_contacts WHERE {' AND '.join(where)}"
        f" ORDER BY {order_key} DESC, id DESC LIMIT ?",
        params,
    )
    return [dict(zip(CONTACT_KEYS, row, strict=True)) for row in tx.fetchall()]
