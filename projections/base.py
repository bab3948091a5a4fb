"""The projection contract shared by the embedded feed and the Kafka workers.

A projection turns events into rows. The runner hands it a batch of (position, event)
inside one transaction on the read-model database and records the projection's tracking
position in that same transaction, so a restart neither skips nor repeats an event.
"""

from __future__ import annotations

import json
from abc import ABC
from collections.abc import Callable, Sequence
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


def handles(*event_types: type[Any]) -> Callable[[Handler], Handler]:
    """Mark a projection method as the handler of the given event classes."""

    def mark(fn: Handler) -> Handler:
        fn.__handles__ = event_types  # type: ignore[attr-defined]
        return fn

    return mark


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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        handlers: dict[type[Any], str] = {}
        for base in reversed(cls.__mro__):
            for attr, fn in vars(base).items():
                for event_type in getattr(fn, "__handles__", ()):
                    handlers[event_type] = attr
        cls._handlers = handlers

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
        return event_type in self._handlers or event_type is _TENANT_PURGED

    def apply(self, tx: Tx, event: Any, position: int) -> None:
        if type(event) is _TENANT_PURGED:
            self.purge_tenant(tx, str(event.originator_id))
            return
        name = self._handlers.get(type(event))
        if name is not None:
            getattr(self, name)(tx, event, position)


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
