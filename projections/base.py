"""The projection contract shared by the embedded feed and the Kafka workers.

A projection turns events into rows. The runner hands it a batch of (position, event)
inside one transaction on the read-model database and records the projection's tracking
position in that same transaction, so a restart neither skips nor repeats an event.
"""

from __future__ import annotations

import json
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Protocol, TypeVar

from contact_centre.privacy import Sealed
from contact_centre.tenancy import Tenant

_TENANT_PURGED = Tenant.Purged


class Tx(Protocol):
    """The cursor projections write through (``?`` placeholders, portable SQL)."""

    dialect: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> None: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def fetchone(self) -> tuple[Any, ...] | None: ...

    def fetchall(self) -> list[tuple[Any, ...]]: ...

    @property
    def rowcount(self) -> int: ...


E = TypeVar("E")
Handler = Callable[[Any, Tx, Any, int], None]
RunHandler = Callable[[Any, Tx, list[tuple[Any, int]]], None]


def handles(*event_types: type[Any]) -> Callable[[Handler], Handler]:
    """Mark a projection method as the handler of the given event classes."""

    def mark(fn: Handler) -> Handler:
        fn.__handles__ = event_types  # type: ignore[attr-defined]
        return fn

    return mark


def handles_run(*event_types: type[Any]) -> Callable[[RunHandler], RunHandler]:
    """Mark a projection method as taking, in one go (a few set-based statements), the
    (event, position) pairs of one of the given classes that :meth:`Projection.apply_all`
    found in one run (see there). A class with no single-event handler (:func:`handles`)
    takes each lone event through its run handler too, as a run of one. Where a class has
    both, the run handler must leave the rows as the single-event handler applied to each
    in turn would."""

    def mark(fn: RunHandler) -> RunHandler:
        fn.__handles_run__ = event_types  # type: ignore[attr-defined]
        return fn

    return mark


def one_of(tx: Tx, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """The test that a column is one of ``values`` (the part after the column), and its
    parameters: ``IN (?, ...)``, or on PostgreSQL ``= ANY(?)`` with one array parameter
    (psycopg parses a statement of more than 50 parameters anew every time: about 1 ms
    for a hundred)."""
    if tx.dialect == "postgres":
        return "= ANY(?)", [list(values)]
    padded = padded_to_bucket(values)
    return f"IN ({', '.join('?' * len(padded))})", padded


def padded_to_bucket(values: Sequence[Any]) -> list[Any]:
    """``values`` with the last one repeated up to the next power of two (an ``IN`` list
    means the same with repeats): statements of one shape but any number of values then
    share a few texts, which SQLite prepares once per connection and keeps, instead of a
    text per count (parsing and planning one with 50 values takes ~0.3 ms)."""
    padded = list(values)
    if padded:
        size = 1 << (len(padded) - 1).bit_length()
        padded += [padded[-1]] * (size - len(padded))
    return padded


def values_cte(name: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """``WITH name (columns) AS (VALUES (?, ...), ...)``: rows to join with, in one
    statement (SQLite and PostgreSQL alike); the parameters are the rows, flattened."""
    row = f"({', '.join('?' * len(columns))})"
    return f"WITH {name} ({', '.join(columns)}) AS (VALUES {', '.join([row] * len(rows))})"


def rows_as(
    tx: Tx,
    name: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
) -> tuple[str, str, list[Any]]:
    """``rows`` as a relation ``name`` to take in one statement: ``columns`` are (name,
    PostgreSQL type: text or bigint) pairs. Returns (prefix, source, params): the statement
    is ``prefix`` + a statement reading ``FROM source``, and ``params`` are its first ones
    (put no ``?`` before the source). On PostgreSQL the source is ``unnest`` of one typed
    array a column (a few parameters, whatever the number of rows: psycopg parses a
    statement of many parameters anew every time); on SQLite a VALUES table expression.
    """
    names = ", ".join(column for column, _ in columns)
    if tx.dialect == "postgres":
        arrays = ", ".join(f"?::{kind}[]" for _, kind in columns)
        params = [list(values) for values in zip(*rows, strict=True)]
        return "", f"unnest({arrays}) AS {name} ({names})", params
    cte = values_cte(name, [column for column, _ in columns], rows)
    return cte + " ", name, [value for row in rows for value in row]


def insert_rows(
    tx: Tx,
    table: str,
    columns: Sequence[tuple[str, str]],
    rows: Sequence[Sequence[Any]],
    *,
    key: str,
    also: Mapping[str, str] | None = None,
) -> None:
    """Insert ``rows`` (values of ``columns``, as :func:`rows_as` takes them) in one
    statement, skipping those whose ``key`` (the conflict target's columns) is already
    there. ``also`` gives further columns as SQL expressions (literals, or of ``v.``
    columns)."""
    if not rows:
        return
    extra = dict(also or {})
    prefix, source, params = rows_as(tx, "v", columns, rows)
    names = ", ".join([*(column for column, _ in columns), *extra])
    values = ", ".join([*(f"v.{column}" for column, _ in columns), *extra.values()])
    tx.execute(
        prefix + f"INSERT INTO {table} ({names}) SELECT {values} FROM {source}"
        f" WHERE true ON CONFLICT ({key}) DO NOTHING",
        params,
    )


# What a read model can keep of a ``Conversation.Opened``: (type, value) by column name.
_OPENED: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "id": ("text", lambda e: str(e.originator_id)),
    "tenant_id": ("text", lambda e: str(e.tenant_id)),
    "contact_id": ("text", lambda e: str(e.contact_id)),
    "channel": ("text", lambda e: e.channel),
    "opened_at": ("bigint", lambda e: micros(e.at)),
}


def insert_opened(
    tx: Tx,
    table: str,
    run: Sequence[tuple[Any, int]],
    columns: Sequence[str],
    *,
    also: Mapping[str, str] | None = None,
) -> None:
    """A row keyed by ``id`` for each conversation a run of ``Conversation.Opened``
    opens, with ``columns`` (of id, tenant_id, contact_id, channel, opened_at) and
    ``also`` (as :func:`insert_rows`)."""
    kinds = [(column, _OPENED[column][0]) for column in columns]
    values = [_OPENED[column][1] for column in columns]
    rows = [tuple(value(e) for value in values) for e, _ in run]
    insert_rows(tx, table, kinds, rows, key="id", also=also)


# A registered contact's row, as the contact views keep it (:func:`registered_rows`).
REGISTERED = (
    ("id", "text"),
    ("tenant_id", "text"),
    ("display_name", "text"),
    ("identities", "text"),
    ("created_at", "bigint"),
)


def registered_rows(run: Sequence[tuple[Any, int]]) -> list[tuple[Any, ...]]:
    """:data:`REGISTERED` rows of a run of ``Contact.Registered``: the name still sealed,
    the first identity as a [kind, sealed address] list."""
    return [
        (
            str(e.originator_id),
            str(e.tenant_id),
            sealed_text(e.display_name),
            dumps([[e.identity_kind, e.identity_address]]),
            micros(e.at),
        )
        for e, _ in run
    ]


RUN_CHUNK = 500  # events a run handler takes per call (parameters per statement stay low)


class Projection(ABC):
    """Subclasses declare ``name``, ``ddl`` (CREATE statements), ``tables`` and handlers."""

    name: ClassVar[str]
    ddl: ClassVar[Sequence[str]] = ()
    tables: ClassVar[Sequence[str]] = ()
    # Secondary indexes that only queries read (no handler finds its rows through them):
    # a rebuild drops them and builds each once at the end (a sort), instead of updating
    # them row by row. An index a handler's WHERE uses must not be listed here.
    query_indexes: ClassVar[Sequence[str]] = ()
    # Bump when the tables change shape: the runner then drops them and rebuilds the
    # read model from the log (read models are derived data, never migrated by hand).
    version: ClassVar[int] = 1
    _handlers: ClassVar[dict[type[Any], str]]
    _run_handlers: ClassVar[dict[type[Any], str]]
    _interests: ClassVar[frozenset[type[Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Any], str] = {}
        run_handlers: dict[type[Any], str] = {}
        for base in reversed(cls.__mro__):
            for attr, fn in vars(base).items():
                for event_type in getattr(fn, "__handles__", ()):
                    handlers[event_type] = attr
                for event_type in getattr(fn, "__handles_run__", ()):
                    run_handlers[event_type] = attr
        cls._handlers = handlers
        cls._run_handlers = run_handlers
        cls._interests = frozenset(handlers) | frozenset(run_handlers) | {_TENANT_PURGED}

    def setup(self, tx: Tx) -> None:
        for statement in self.ddl:
            tx.execute(portable_ddl(tx, statement))

    def reset(self, tx: Tx) -> None:
        """Delete every row, before a rebuild from the start of the log."""
        for table in self.tables:
            tx.execute(f"DELETE FROM {table}")

    def drop_query_indexes(self, tx: Tx) -> None:
        """Before a rebuild from an empty read model; :meth:`setup` makes them again."""
        for index in self.query_indexes:
            tx.execute(f"DROP INDEX IF EXISTS {index}")

    def drop(self, tx: Tx) -> None:
        for table in self.tables:
            tx.execute(f"DROP TABLE IF EXISTS {table}")

    def purge_tenant(self, tx: Tx, tenant_id: str) -> None:
        """Delete every row of a purged tenant (every table has a tenant_id column)."""
        for table in self.tables:
            tx.execute(f"DELETE FROM {table} WHERE tenant_id = ?", (tenant_id,))

    def interested_in(self, event_type: type[Any]) -> bool:
        return event_type in self._interests

    def apply(self, tx: Tx, event: Any, position: int) -> None:
        if type(event) is _TENANT_PURGED:
            self.purge_tenant(tx, str(event.originator_id))
            return
        name = self._handlers.get(type(event))
        if name is not None:
            getattr(self, name)(tx, event, position)
            return
        name = self._run_handlers.get(type(event))
        if name is not None:  # a run of one
            getattr(self, name)(tx, [(event, position)])

    def apply_all(self, tx: Tx, items: Sequence[tuple[Any, int]]) -> None:
        """Apply (event, position) pairs in order, as :meth:`apply` each would.

        A *run* of consecutive events that all have run handlers (:func:`handles_run`)
        and come from one command (the same tenant and time: an erasure's Closed and
        ContentErased of each conversation, or a write batch's new contacts,
        conversations and messages) is applied a class at a time, each class in a few
        set-based statements, instead of one event at a time (on PostgreSQL each
        statement costs the client and the server, pipelined or not). Each aggregate's
        own order is kept: a run ends before an event that taking classes in their order
        of first appearance would apply before an earlier event of its aggregate (a
        second message to one conversation, say), and the next run starts with it. A
        projection marks only classes whose handlers then leave the same rows.
        """
        if not self._run_handlers:
            for event, position in items:
                self.apply(tx, event, position)
            return
        run: list[tuple[Any, int]] = []
        rank: dict[type[Any], int] = {}  # the run's classes, in order of first appearance
        last: dict[Any, int] = {}  # each aggregate's latest class rank in the run
        for event, position in items:
            event_type = type(event)
            if event_type not in self._run_handlers:
                self._apply_run(tx, run)
                run, rank, last = [], {}, {}
                self.apply(tx, event, position)
                continue
            r = rank.get(event_type, len(rank))
            if run and (
                not _same_command(run[0][0], event) or last.get(event.originator_id, -1) >= r
            ):
                self._apply_run(tx, run)
                run, rank, last = [], {}, {}
                r = 0
            run.append((event, position))
            rank.setdefault(event_type, r)
            last[event.originator_id] = r
        self._apply_run(tx, run)

    def _apply_run(self, tx: Tx, run: list[tuple[Any, int]]) -> None:
        if len(run) == 1:
            self.apply(tx, *run[0])
            return
        by_class: dict[type[Any], list[tuple[Any, int]]] = {}
        for item in run:
            by_class.setdefault(type(item[0]), []).append(item)
        for event_type, items in by_class.items():
            handler = getattr(self, self._run_handlers[event_type])
            for start in range(0, len(items), RUN_CHUNK):
                handler(tx, items[start : start + RUN_CHUNK])


def _same_command(first: Any, event: Any) -> bool:
    return bool(
        getattr(event, "at", None) is not None
        and event.at == getattr(first, "at", None)
        and getattr(event, "tenant_id", None) == getattr(first, "tenant_id", None)
    )


# SQLite stores a WITHOUT ROWID table in its primary key's order: the rows of one
# conversation (a key's leading column) then sit together on a page or two, instead of one
# page each wherever the log's order put them, and there is no separate rowid B-tree to
# keep. PostgreSQL has no such clause (its tables are heaps; the key is an index).
_WITHOUT_ROWID = " WITHOUT ROWID"


def portable_ddl(tx: Tx, statement: str) -> str:
    if tx.dialect != "sqlite" and statement.endswith(_WITHOUT_ROWID):
        return statement[: -len(_WITHOUT_ROWID)]
    return statement


# -- column helpers ------------------------------------------------------------------------
def micros(value: datetime) -> int:
    """Aware datetime → integer microseconds since the epoch (portable, sortable)."""
    return int(value.timestamp() * 1_000_000) if value.tzinfo else _naive(value)


def from_micros(value: int) -> datetime:
    """Integer microseconds since the epoch → aware UTC datetime (exact)."""
    return EPOCH + timedelta(microseconds=value)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _naive(value: datetime) -> int:
    raise ValueError(f"naive datetime {value!r} reached a read model")


def sealed_text(value: Sealed | None) -> str | None:
    """A sealed value as it is kept in read models: still encrypted, scope in clear."""
    return None if value is None else f"{value.scope}|{value.token}"


def sealed_from_text(text: str | None) -> Sealed | None:
    if text is None:
        return None
    scope, _, token = text.partition("|")
    return Sealed(scope, token)


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, Sealed):
        return {"$sealed": sealed_text(value)}
    raise TypeError(f"cannot store {type(value).__name__} in a read model")


def loads(text: str) -> Any:
    return json.loads(text, object_hook=_json_hook)


def _json_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$sealed" in obj:
        return sealed_from_text(obj["$sealed"])
    return obj
