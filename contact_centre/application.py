"""The application service: one method per use case, each load → decide → save.

Commands run inside a :class:`UnitOfWork` so that a writer can put many of them into one
transaction (the main lever for ingest throughput) and fall back to one transaction per
command when anything in the batch fails. Every personal value is sealed through the
:class:`~contact_centre.privacy.Sealer` port before it becomes part of an event.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import random
import secrets
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, cast
from uuid import UUID, SafeUUID

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    ApplicationRecorder,
    IntegrityError,
    JSONTranscoder,
    Tracking,
    TrackingRecorder,
    Transcoding,
    UUIDAsHex,
)
from eventsourcing.utils import Environment, EnvType

from contact_centre.channel_service import ChannelCommands
from contact_centre.clock import Clock, SystemClock
from contact_centre.compliance import DataSubjectRequest, HoldTarget, LegalHold, RequestKind
from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation, ConversationStatus, MessageContent
from contact_centre.crm_service import NS_EXTERNAL_ID, NS_UPSERT, CrmCommands, Upsert
from contact_centre.errors import (
    ConflictError,
    DomainError,
    NotFoundError,
    TenantInactiveError,
    ValidationError,
)
from contact_centre.ids import new_id
from contact_centre.interaction import (
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
    natural_thread_key,
)
from contact_centre.ports import IdentityNormaliser, IndexOp, IndexOpKind, WriteIndex
from contact_centre.privacy import Scope, ScopeKind, Sealed, Sealer
from contact_centre.retention import RetentionPolicy
from contact_centre.routing import RoutingCommands
from contact_centre.staff import Agent, AgentPresence, Queue
from contact_centre.tenancy import ApiToken, Role, Tenant, TenantStatus
from contact_centre.webhook_service import WebhookCommands

log = logging.getLogger(__name__)

T = TypeVar("T")
A = TypeVar("A", bound=Aggregate)

# Namespaces of the write-side index (see ports.WriteIndex).
NS_TENANT = "tenant"  # tenant id -> {"status", "phone_region"}
NS_TOKEN = "token"  # noqa: S105  (sha256(token) -> principal)
NS_RECEIPT = "receipt"  # blind(provider, provider message id) -> ids of what it created
NS_IDENTITY = "identity"  # blind(kind:address) -> contact id
NS_THREAD = "thread"  # blind(channel, thread key) -> current conversation id
# Every index key of a tenant's data begins with "<tenant id>:" (see purge_tenant_in).
NS_CONTACT_CONVERSATION = "contact-conversation"  # "<contact>:<conversation>" -> ""
NS_HOLD = "hold"  # "<target kind>:<target id>:<hold id>" -> "" while the hold is placed
NS_SUPPRESSION = "suppression"  # blind(kind, address) -> channels opted out of (P12)
NS_AGENT_TOKEN = "agent-token"  # noqa: S105  ("<agent>:<token id>" -> token hash)

TENANT_PREFIXED = (
    NS_RECEIPT,
    NS_IDENTITY,
    NS_THREAD,
    NS_CONTACT_CONVERSATION,
    NS_HOLD,
    NS_AGENT_TOKEN,
    NS_SUPPRESSION,
    # CRM sync (contact_centre/crm_service.py)
    NS_EXTERNAL_ID,
    NS_UPSERT,
    # the channels' (contact_centre/channel_service.py), keyed by blind index too
    "once",
    "block",
    "delivery-ref",
    "email-ref",
    "email-subject",
)
NS_CLAIM = "claim"  # widget keys and mailboxes -> tenant id (released on purge)

TOKEN_PREFIX = "cc_"  # noqa: S105  (a prefix, not a secret)


class SealedAsList(Transcoding):
    type = Sealed
    name = "sealed"

    def encode(self, obj: Sealed) -> list[str]:
        return [obj.scope, obj.token]

    def decode(self, data: list[str]) -> Sealed:
        scope, token = data
        return Sealed(scope, token)


_new_object = object.__new__
_set_slot = object.__setattr__
_UNKNOWN_SAFETY = SafeUUID.unknown


class FastUUIDAsHex(UUIDAsHex):
    """The library's ``uuid_hex``, decoded without ``UUID.__init__``'s parsing of every
    accepted spelling: what ``encode`` wrote (``UUID.hex``, 32 hex digits) is an int in
    base 16. The same object as ``UUID(hex)``; several per event, and replays and
    rebuilds decode every event."""

    def decode(self, data: str) -> UUID:
        if len(data) != 32:
            return UUID(data)
        value = _new_object(UUID)
        _set_slot(value, "int", int(data, 16))
        _set_slot(value, "is_safe", _UNKNOWN_SAFETY)
        return value


MAX_ATTRIBUTES = 200
ATTRIBUTE_KEY_CHARS = 64


def check_attributes(changes: dict[str, Any]) -> dict[str, Any]:
    """CRM attributes are typed custom fields: string, integer or boolean (null removes
    one). Floats are refused: decimals travel as strings, money in minor units."""
    checked: dict[str, Any] = {}
    for key, value in changes.items():
        if not isinstance(key, str) or not key or len(key) > ATTRIBUTE_KEY_CHARS:
            raise ValidationError(f"attribute names are 1-{ATTRIBUTE_KEY_CHARS} characters")
        if isinstance(value, float):
            raise ValidationError(
                f"attribute {key!r}: no floats (send decimals as strings, money in minor units)"
            )
        if value is not None and not isinstance(value, str | int | bool):
            raise ValidationError(f"attribute {key!r} must be a string, integer, boolean or null")
        if isinstance(value, str) and len(value) > 2_000:
            raise ValidationError(f"attribute {key!r} is longer than 2000 characters")
        checked[key] = value
    return checked


class AlreadyTrackedError(IntegrityError):
    """A workflow's position is already at or past the event it was about to record."""


class AfterCommitError(Exception):
    """An action run after a unit committed failed (its cause is chained): what the unit
    recorded stays committed, so the unit must not be run again."""


def _after_commit(actions: Sequence[Callable[[], None]]) -> None:
    try:
        for action in actions:
            action()
    except Exception as error:
        raise AfterCommitError(f"after the commit: {type(error).__name__}") from error


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: resolved from a bearer token."""

    tenant_id: UUID
    token_id: UUID
    role: Role
    agent_id: UUID | None

    @property
    def actor(self) -> str:
        return f"agent:{self.agent_id}" if self.agent_id else f"token:{self.token_id}"


@dataclass(frozen=True, slots=True)
class ReceiveResult:
    conversation_id: UUID
    contact_id: UUID
    message_id: UUID
    duplicate: bool


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token_id: UUID
    token: str
    role: Role


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one command of a batch produced: a result or a domain error, and the position
    (notification id) of the last event it wrote, if any."""

    result: Any = None
    error: BaseException | None = None
    position: int | None = None


def hash_token(token: str) -> str:
    # Tokens are 256 random bits, so a fast hash is a strong hash here (P7).
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class ReceivePlan:
    """An interaction's normalised identities and the index keys it touches."""

    receipt_key: str
    sender: Identity
    recipient: Identity | None
    identity_key: str
    thread_key: str
    thread_hash: str


class UnitOfWork:
    """Aggregates and index changes of one transaction."""

    def __init__(self, app: ContactCentre) -> None:
        self.app = app
        self._aggregates: dict[UUID, Aggregate] = {}
        self._ops: list[IndexOp] = []
        self._overlay: dict[tuple[str, str], str | None] = {}
        self._scans: dict[tuple[str, str], dict[str, str]] = {}
        self._cleared: list[tuple[str, str]] = []  # DELETE_PREFIX ops of this unit
        self._after_commit: list[Callable[[], None]] = []
        self._missing: set[UUID] = set()  # asked for and not found: not asked again
        # what a policy reads once for a whole unit (a batch of events), by its own key
        self.memo: dict[Any, Any] = {}
        self.now = app.clock.now()

    def after_commit(self, action: Callable[[], None]) -> None:
        """Run ``action`` once this unit has committed, before the events it recorded are
        handed to the application's listeners (the read models); not run if the unit
        fails, nor by an attempt that is retried."""
        self._after_commit.append(action)

    # -- aggregates --------------------------------------------------------------------
    def get(self, aggregate_id: UUID, cls: type[A], tenant_id: UUID | None = None) -> A:
        agg = self._aggregates.get(aggregate_id)
        if agg is None:
            try:
                if aggregate_id in self._missing:
                    raise AggregateNotFoundError(aggregate_id)
                agg = self.app.repository.get(aggregate_id)
            except AggregateNotFoundError:
                self._missing.add(aggregate_id)
                raise NotFoundError(f"{cls.__name__.lower()} {aggregate_id} not found") from None
            self._aggregates[aggregate_id] = agg
        if not isinstance(agg, cls) or (
            tenant_id is not None and getattr(agg, "tenant_id", tenant_id) != tenant_id
        ):
            # Another tenant's aggregate is reported exactly like a missing one.
            raise NotFoundError(f"{cls.__name__.lower()} {aggregate_id} not found")
        return agg

    def add(self, aggregate: Aggregate) -> None:
        self._aggregates[aggregate.id] = aggregate
        self._missing.discard(aggregate.id)

    def load_many(self, aggregate_ids: Iterable[UUID]) -> None:
        """Load many aggregates with one query, where the event store can (later ``get``
        calls for them cost nothing); otherwise they load one by one when asked for."""
        select_many = getattr(self.app.recorder, "select_events_many", None)
        missing = sorted({i for i in aggregate_ids if i not in self._aggregates})
        if select_many is None or not missing:
            return
        mapper = self.app.mapper
        for aggregate_id, stored in select_many(missing).items():
            # as project_aggregate, without its isinstance check against a runtime
            # Protocol per event (Python 3.11 takes ~20 us for each: 2 ms an erasure)
            aggregate: Any = None
            for stored_event in stored:
                event: Any = mapper.to_domain_event(stored_event)
                aggregate = event.mutate(aggregate)
            if aggregate is not None:
                self._aggregates[aggregate_id] = aggregate

    # -- index -------------------------------------------------------------------------
    def lookup(self, namespace: str, key: str) -> str | None:
        if (namespace, key) in self._overlay:
            return self._overlay[(namespace, key)]
        if any(ns == namespace and key.startswith(p) for ns, p in self._cleared):
            return None
        value = self.app.index.get_many(namespace, [key]).get(key)
        self._overlay[(namespace, key)] = value
        return value

    def preload(self, namespace: str, keys: Iterable[str]) -> None:
        """Look many keys up in one query; later lookups of them cost nothing."""
        self.preload_many({namespace: keys})

    def preload_many(self, wanted: Mapping[str, Iterable[str]]) -> None:
        """As :meth:`preload` for several namespaces, in one query."""
        missing = {
            namespace: sorted({k for k in keys if (namespace, k) not in self._overlay})
            for namespace, keys in wanted.items()
        }
        missing = {namespace: keys for namespace, keys in missing.items() if keys}
        if missing:
            found = self.app.index.get_in(missing)
            for namespace, keys in missing.items():
                for key in keys:
                    self._overlay[(namespace, key)] = found.get((namespace, key))

    @contextlib.contextmanager
    def assuming(self, entries: Mapping[tuple[str, str], str | None]) -> Iterator[None]:
        """Lookups of ``entries`` (by (namespace, key)) answer the given values until the
        block ends, after which they are looked up as before (a guess to plan with)."""
        before = {key: self._overlay[key] for key in entries if key in self._overlay}
        self._overlay.update(entries)
        try:
            yield
        finally:
            for key in entries:
                if key in before:
                    self._overlay[key] = before[key]
                else:
                    self._overlay.pop(key, None)

    def scan(self, namespace: str, prefix: str) -> dict[str, str]:
        """Index entries whose key begins with ``prefix``, including this unit's changes.
        The store is asked once per prefix in a unit of work."""
        stored = self._scans.get((namespace, prefix))
        if stored is None:
            stored = self._scans[(namespace, prefix)] = dict(
                self.app.index.scan_prefix(namespace, prefix)
            )
        found = {
            key: value
            for key, value in stored.items()
            if not any(ns == namespace and key.startswith(p) for ns, p in self._cleared)
        }
        for (ns, key), value in self._overlay.items():
            if ns == namespace and key.startswith(prefix):
                if value is None:
                    found.pop(key, None)
                else:
                    found[key] = value
        return found

    def index(self, op: IndexOp) -> None:
        self._ops.append(op)
        if op.kind is IndexOpKind.DELETE_PREFIX:
            self._cleared.append((op.namespace, op.key))
            for namespace, key in list(self._overlay):
                if namespace == op.namespace and key.startswith(op.key):
                    self._overlay[(namespace, key)] = None
            return
        self._overlay[(op.namespace, op.key)] = None if op.kind is IndexOpKind.DELETE else op.value

    # -- transaction -------------------------------------------------------------------
    def commit(self, tracking: Tracking | None = None) -> int | None:
        if self._aggregates or self._ops or tracking is not None:
            self.app.sealer.flush()  # keys must be durable before events sealed under them
        return self.app.record(
            list(self._aggregates.values()), self._ops, tracking, self._after_commit
        )

    def discard(self) -> None:
        """Forget cached aggregates this unit touched: they may hold unsaved changes."""
        cache = self.app.repository.cache
        if cache is not None:
            for aggregate_id in self._aggregates:
                with contextlib.suppress(KeyError):
                    cache.get(aggregate_id, evict=True)


class ContactCentre(
    ChannelCommands, RoutingCommands, CrmCommands, WebhookCommands, Application[UUID]
):
    """The contact-centre application service (channel use cases: :mod:`channel_service`,
    routing: :mod:`routing`, CRM sync: :mod:`crm_service`, webhooks: :mod:`webhook_service`)."""

    name = "contact_centre"
    TENANTS_SEEN_MAX = 10_000  # tenant entries kept to plan batches with (then cleared)
    # The writer owns the cached aggregates and evicts what a failed unit touched, so the
    # cache can hand out the cached object itself instead of a deep copy.
    # Nor does the cache fast-forward on every read: a stale cached aggregate (another
    # process appended to it) fails its save with a version conflict and is reloaded.
    env = {
        "AGGREGATE_CACHE_MAXSIZE": "20000",
        "DEEPCOPY_FROM_AGGREGATE_CACHE": "n",
        "AGGREGATE_CACHE_FASTFORWARD": "n",
    }

    def __init__(
        self,
        *,
        recorder: ApplicationRecorder,
        index: WriteIndex,
        sealer: Sealer,
        normaliser: IdentityNormaliser,
        clock: Clock | None = None,
        env: EnvType | None = None,
        max_attempts: int = 12,
    ) -> None:
        self._injected_recorder = recorder
        self.index = index
        self.sealer = sealer
        self.normaliser = normaliser
        self.clock: Clock = clock or SystemClock()
        self.max_attempts = max_attempts
        # Called with [(notification id, event), ...] after every successful save, in the
        # saving thread (the embedded feed applies projections from here).
        self.listeners: list[Callable[[Sequence[tuple[int, Any]]], None]] = []
        # Tenants' index entries as the writer's last batch read them: the guess a batch
        # plans its keys with (:meth:`_prefetch`), checked in the same query.
        self._tenants_seen: dict[str, str | None] = {}
        super().__init__(env)

    # eventsourcing reads os.environ here by default; configuration is infra's job.
    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        merged = dict(type(self).env)
        merged.update(env or {})
        return Environment(name, merged)

    def construct_recorder(self) -> ApplicationRecorder:
        return self._injected_recorder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(FastUUIDAsHex())  # replaces UUIDAsHex (same name and type)
        transcoder.register(SealedAsList())

    def record(
        self,
        aggregates: Sequence[Aggregate],
        index_ops: Sequence[IndexOp],
        tracking: Tracking | None = None,
        after_commit: Sequence[Callable[[], None]] = (),
    ) -> int | None:
        """Save the aggregates' pending events, the index changes and (for a workflow) the
        position of the event it reacted to, in one transaction; then run ``after_commit``
        and hand what was recorded to the listeners (they hear of it even if an action
        fails, since it is committed; the failure is raised as :class:`AfterCommitError`).

        ``Application.save`` does the same, but checks every object against runtime
        protocols first, which costs more than the rest of the save on the ingest path.
        """
        events = [event for aggregate in aggregates for event in aggregate.collect_events()]
        if not events and not index_ops and tracking is None:
            _after_commit(after_commit)
            return None
        recordings = self.events.put(events, index_ops=index_ops, tracking=tracking)
        cache = self.repository.cache
        if cache is not None:
            for aggregate in aggregates:
                cache.put(aggregate.id, aggregate)
        try:
            _after_commit(after_commit)
        finally:
            if recordings:
                recorded = [(r.notification.id, r.domain_event) for r in recordings]
                for listener in self.listeners:
                    listener(recorded)
        return max((r.notification.id for r in recordings), default=None)

    def _is_tracked(self, tracking: Tracking) -> bool:
        recorder = self.recorder
        if not isinstance(recorder, TrackingRecorder):
            return False
        latest = recorder.max_tracking_id(tracking.application_name)
        return latest is not None and latest >= tracking.notification_id

    def tracked_position(self, name: str) -> int | None:
        """Where the workflow ``name`` has got to in the log (kept with the events)."""
        recorder = self.recorder
        assert isinstance(recorder, TrackingRecorder)
        return recorder.max_tracking_id(name)

    # == running commands ==============================================================
    def run(
        self, command: Callable[[UnitOfWork], T], tracking: Tracking | None = None
    ) -> tuple[T, int | None]:
        """Run one command in its own transaction, retrying on concurrent writes.

        A version conflict (another process appended to the same aggregate) or a lost race
        for a unique index key raises IntegrityError at commit; the command is then run
        again on fresh state, so concurrent deliveries never lose a message. With
        ``tracking`` (a workflow reacting to an event), a position already recorded
        raises :class:`AlreadyTrackedError` instead of retrying.
        """
        for attempt in range(1, self.max_attempts + 1):
            uow = UnitOfWork(self)
            try:
                result = command(uow)
                position = uow.commit(tracking)
            except IntegrityError:
                uow.discard()
                if tracking is not None and self._is_tracked(tracking):
                    raise AlreadyTrackedError(
                        f"{tracking.application_name} already at {tracking.notification_id}"
                    ) from None
                if attempt == self.max_attempts:
                    raise
                log.info("write conflict, retrying (attempt %d)", attempt)
                # Jittered exponential backoff, so racing writers stop colliding.
                time.sleep(random.uniform(0, 0.002 * 2 ** min(attempt, 6)))
                continue
            except BaseException:
                uow.discard()
                raise
            return result, position
        raise AssertionError("unreachable")  # pragma: no cover

    def run_batch(self, commands: Sequence[Callable[[UnitOfWork], Any]]) -> list[Outcome]:
        """Run many commands in one transaction; if any fails, run each on its own."""
        if len(commands) > 1:
            uow = UnitOfWork(self)
            try:
                self._prefetch(uow, commands)
                results = [command(uow) for command in commands]
                position = uow.commit()
            except AfterCommitError:
                raise  # the batch is recorded: running its commands again would repeat them
            except Exception:
                uow.discard()
            else:
                return [Outcome(result=r, position=position) for r in results]
        outcomes = []
        for command in commands:
            try:
                result, position = self.run(command)
            except Exception as error:  # reported to the caller of that command only
                outcomes.append(Outcome(error=error))
            else:
                outcomes.append(Outcome(result=result, position=position))
        return outcomes

    def _prefetch(self, uow: UnitOfWork, commands: Sequence[Callable[[UnitOfWork], Any]]) -> None:
        """Look up the keys of the whole batch together, in one query where it can.

        The keys depend on the tenants' index entries (their phone region), so the batch
        is planned with the entries the last batch found, and the same query reads them
        again: only when one has changed since (or is new) are the keys planned again and
        the rest looked up in a second query."""
        tenants = {str(c.tenant_id) for c in commands if isinstance(c, Receive | Upsert)}
        seen = self._tenants_seen
        if not tenants or not tenants <= seen.keys():
            uow.preload(NS_TENANT, tenants)
            uow.preload_many(self._batch_keys(uow, commands))
        else:
            guessed = {(NS_TENANT, t): seen[t] for t in tenants}
            with uow.assuming(guessed):
                wanted = self._batch_keys(uow, commands)
            wanted[NS_TENANT] = tenants
            uow.preload_many(wanted)
            if any(uow.lookup(NS_TENANT, t) != seen[t] for t in tenants):
                for command in commands:
                    if isinstance(command, Receive):
                        command.forget_plan()
                uow.preload_many(self._batch_keys(uow, commands))
        if len(seen) > self.TENANTS_SEEN_MAX:
            seen.clear()
        for tenant in tenants:
            seen[tenant] = uow.lookup(NS_TENANT, tenant)

    def _batch_keys(
        self, uow: UnitOfWork, commands: Sequence[Callable[[UnitOfWork], Any]]
    ) -> dict[str, set[str]]:
        """The index keys the batch's receives and upserts will read, by namespace."""
        wanted: dict[str, set[str]] = defaultdict(set)
        for command in commands:
            if isinstance(command, Upsert):
                try:
                    for namespace, keys in command.index_keys(uow).items():
                        wanted[namespace] |= keys
                except DomainError:
                    continue  # the command itself will report it
            if isinstance(command, Receive):
                try:
                    plan = command.plan(uow)
                except DomainError:
                    continue  # the command itself will report it
                wanted[NS_RECEIPT].add(plan.receipt_key)
                wanted[NS_IDENTITY].add(plan.identity_key)
                wanted[NS_THREAD].add(plan.thread_hash)
                # read when the sender is new (a contact is registered)
                wanted[NS_SUPPRESSION].add(self.suppression_key(command.tenant_id, plan.sender))
        return wanted

    # == helpers =======================================================================
    def _tenant_entry(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]:
        """The tenant's index entry (status, name, phone region), parsed once per unit of
        work for each value it has there: callers must not change it."""
        raw = uow.lookup(NS_TENANT, str(tenant_id))
        if raw is None:
            raise NotFoundError(f"tenant {tenant_id} not found")
        memo_key = ("tenant entry", raw)
        entry = uow.memo.get(memo_key)
        if entry is None:
            entry = uow.memo[memo_key] = json.loads(raw)
        return cast(dict[str, Any], entry)

    def _require_active_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]:
        entry = self._tenant_entry(uow, tenant_id)
        if entry["status"] != TenantStatus.ACTIVE:
            raise TenantInactiveError(f"tenant {tenant_id} is {entry['status']}")
        return entry

    def _require_unpurged_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]:
        """Active or terminated (in or past its grace): legal holds can still be placed
        and released on a terminated tenant, by the operator, until it is purged."""
        entry = self._tenant_entry(uow, tenant_id)
        if entry["status"] == TenantStatus.PURGED:
            raise TenantInactiveError(f"tenant {tenant_id} is {entry['status']}")
        return entry

    def _tenant_index_op(self, tenant: Tenant, kind: IndexOpKind) -> IndexOp:
        value = json.dumps(
            {
                "status": tenant.status.value,
                "name": tenant.name,
                "phone_region": tenant.settings.get("phone_region"),
            }
        )
        return IndexOp(kind, NS_TENANT, str(tenant.id), value)

    def _seal(self, scope: Scope, value: str) -> Sealed:
        return self.sealer.seal(scope, value)

    def _seal_opt(self, scope: Scope, value: str | None) -> Sealed | None:
        return None if value is None else self.sealer.seal(scope, value)

    def _blind(self, tenant_id: UUID, purpose: str, *parts: str) -> str:
        """An index key: the tenant id (so a tenant's entries can be purged together) and a
        keyed hash of the personal value."""
        return f"{tenant_id}:{self.sealer.blind_index(tenant_id, purpose, chr(0x1F).join(parts))}"

    # == tenants and tokens ============================================================
    def register_tenant_in(
        self, uow: UnitOfWork, name: str, region: str = "eu"
    ) -> tuple[UUID, IssuedToken]:
        tenant = Tenant.register(new_id(), name, region, uow.now)
        uow.add(tenant)
        uow.index(self._tenant_index_op(tenant, IndexOpKind.INSERT))
        issued = self._issue_token(uow, tenant.id, Role.ADMIN, "initial admin token", None)
        return tenant.id, issued

    def register_tenant(self, name: str, region: str = "eu") -> tuple[UUID, IssuedToken]:
        result, _ = self.run(lambda uow: self.register_tenant_in(uow, name, region))
        return result

    def change_tenant_settings_in(
        self, uow: UnitOfWork, tenant_id: UUID, changes: dict[str, Any]
    ) -> None:
        self._require_active_tenant(uow, tenant_id)
        tenant = uow.get(tenant_id, Tenant)
        tenant.change_settings(changes=changes, at=uow.now)
        uow.index(self._tenant_index_op(tenant, IndexOpKind.UPSERT))

    def terminate_tenant_in(self, uow: UnitOfWork, tenant_id: UUID, grace_days: int) -> None:
        tenant = uow.get(tenant_id, Tenant)
        tenant.terminate(grace_days, uow.now)
        uow.index(self._tenant_index_op(tenant, IndexOpKind.UPSERT))

    def reactivate_tenant_in(self, uow: UnitOfWork, tenant_id: UUID) -> None:
        tenant = uow.get(tenant_id, Tenant)
        tenant.reactivate(uow.now)
        uow.index(self._tenant_index_op(tenant, IndexOpKind.UPSERT))

    def _issue_token(
        self, uow: UnitOfWork, tenant_id: UUID, role: Role, label: str, agent_id: UUID | None
    ) -> IssuedToken:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        token_hash = hash_token(token)
        api_token = ApiToken.issue(new_id(), tenant_id, role, token_hash, label, agent_id, uow.now)
        uow.add(api_token)
        principal = {
            "tenant_id": str(tenant_id),
            "token_id": str(api_token.id),
            "role": role.value,
            "agent_id": str(agent_id) if agent_id else None,
        }
        uow.index(IndexOp(IndexOpKind.INSERT, NS_TOKEN, token_hash, json.dumps(principal)))
        if agent_id is not None:
            uow.index(
                IndexOp(
                    IndexOpKind.INSERT,
                    NS_AGENT_TOKEN,
                    f"{tenant_id}:{agent_id}:{api_token.id}",
                    token_hash,
                )
            )
        return IssuedToken(api_token.id, token, role)

    def issue_token_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        role: Role,
        label: str = "",
        agent_id: UUID | None = None,
    ) -> IssuedToken:
        self._require_active_tenant(uow, tenant_id)
        if role is Role.AGENT and agent_id is None:
            raise ValidationError("an agent token needs the agent_id it acts as")
        if agent_id is not None:
            if role is not Role.AGENT:
                raise ValidationError("only agent tokens act as an agent")
            uow.get(agent_id, Agent, tenant_id)
        return self._issue_token(uow, tenant_id, role, label, agent_id)

    def revoke_token_in(self, uow: UnitOfWork, tenant_id: UUID, token_id: UUID) -> None:
        token = uow.get(token_id, ApiToken, tenant_id)
        token.revoke(uow.now)
        uow.index(IndexOp(IndexOpKind.DELETE, NS_TOKEN, token.token_hash))
        if token.agent_id is not None:
            uow.index(
                IndexOp(
                    IndexOpKind.DELETE, NS_AGENT_TOKEN, f"{tenant_id}:{token.agent_id}:{token.id}"
                )
            )

    def authenticate(self, token: str) -> Principal | None:
        """Resolve a bearer token; None when unknown, revoked, or its tenant is inactive."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        token_hash = hash_token(token)
        raw = self.index.get_many(NS_TOKEN, [token_hash]).get(token_hash)
        if raw is None:
            return None
        doc = json.loads(raw)
        tenant_raw = self.index.get_many(NS_TENANT, [doc["tenant_id"]]).get(doc["tenant_id"])
        if tenant_raw is None or json.loads(tenant_raw)["status"] != TenantStatus.ACTIVE:
            return None
        return Principal(
            tenant_id=UUID(doc["tenant_id"]),
            token_id=UUID(doc["token_id"]),
            role=Role(doc["role"]),
            agent_id=UUID(doc["agent_id"]) if doc["agent_id"] else None,
        )

    def tenant_summary(self, tenant_id: UUID) -> dict[str, Any] | None:
        raw = self.index.get_many(NS_TENANT, [str(tenant_id)]).get(str(tenant_id))
        return None if raw is None else cast(dict[str, Any], json.loads(raw))

    # == inbound interactions ==========================================================
    def plan_receive(self, uow: UnitOfWork, interaction: Interaction) -> ReceivePlan:
        """Validate and normalise an interaction and work out the index keys it touches."""
        tenant_id = interaction.tenant_id
        entry = self._require_active_tenant(uow, tenant_id)
        if interaction.direction is not Direction.INBOUND:
            raise ValidationError(
                "only inbound interactions are recorded here; agents reply through "
                "POST /v1/conversations/{id}/replies"
            )
        receipt_key = self._blind(
            tenant_id, "receipt", interaction.provider, interaction.provider_message_id
        )
        region = entry.get("phone_region")
        sender = self.normaliser.normalise(interaction.sender, region)
        recipient = (
            self.normaliser.normalise(interaction.recipient, region)
            if interaction.recipient
            else None
        )
        identity_key = self._blind(tenant_id, "identity", sender.kind.value, sender.address)
        thread_key = natural_thread_key(interaction.thread_key, sender, recipient)
        thread_hash = self._blind(tenant_id, "thread", interaction.channel.value, thread_key)
        return ReceivePlan(receipt_key, sender, recipient, identity_key, thread_key, thread_hash)

    def receive_in(
        self, uow: UnitOfWork, interaction: Interaction, plan: ReceivePlan | None = None
    ) -> ReceiveResult:
        """Record an inbound interaction: find or create the contact and the conversation.

        Idempotent on (tenant, provider, provider message id): a repeat returns the ids of
        the first delivery and writes nothing.
        """
        tenant_id = interaction.tenant_id
        self._require_active_tenant(uow, tenant_id)
        plan = plan or self.plan_receive(uow, interaction)
        sender, recipient, receipt_key = plan.sender, plan.recipient, plan.receipt_key
        existing = uow.lookup(NS_RECEIPT, receipt_key)
        if existing is not None:
            doc = json.loads(existing)
            return ReceiveResult(
                conversation_id=UUID(doc["conversation_id"]),
                contact_id=UUID(doc["contact_id"]),
                message_id=UUID(doc["message_id"]),
                duplicate=True,
            )

        contact = self._find_or_create_contact(uow, tenant_id, sender, plan.identity_key)
        conversation = self._find_or_open_conversation(uow, interaction, plan, contact.id)
        content = Scope.conversation(tenant_id, conversation.id)
        message_id = new_id()
        conversation.reopen_for_customer(uow.now)
        message = MessageContent(
            body=interaction.body,
            sender=sender.address,
            sender_name=sender.display_name,
            recipient=recipient.address if recipient else None,
            subject=interaction.subject,
            provider_message_id=interaction.provider_message_id,
            attachments=tuple((a.name, a.url) for a in interaction.attachments),
        )
        conversation.receive_message(
            message_id=message_id,
            provider=interaction.provider,
            sender_kind=sender.kind.value,
            content=self._seal(content, message.to_json()),
            attachments=[
                {"content_type": a.content_type, "size": a.size, "sha256": a.sha256}
                for a in interaction.attachments
            ],
            occurred_at=interaction.occurred_at,
            at=uow.now,
        )
        receipt = {
            "conversation_id": str(conversation.id),
            "contact_id": str(contact.id),
            "message_id": str(message_id),
        }
        uow.index(IndexOp(IndexOpKind.INSERT, NS_RECEIPT, receipt_key, json.dumps(receipt)))
        return ReceiveResult(conversation.id, contact.id, message_id, duplicate=False)

    def receive(self, interaction: Interaction) -> ReceiveResult:
        result, _ = self.run(Receive(self, interaction))
        return result

    def _find_or_create_contact(
        self, uow: UnitOfWork, tenant_id: UUID, identity: Identity, identity_key: str
    ) -> Contact:
        found = uow.lookup(NS_IDENTITY, identity_key)
        if found is not None:
            contact = uow.get(UUID(found), Contact, tenant_id)
            if contact.display_name is None and identity.display_name:
                contact.correct_details(
                    display_name=self._seal(
                        Scope.contact(tenant_id, contact.id), identity.display_name
                    ),
                    source="channel",
                    at=uow.now,
                )
            return contact
        contact_id = new_id()
        scope = Scope.contact(tenant_id, contact_id)
        self.sealer.new_scope(scope)
        contact = Contact.register(
            contact_id,
            tenant_id,
            identity.kind,
            self._seal(scope, identity.address),
            self._seal_opt(scope, identity.display_name or None),
            uow.now,
        )
        uow.add(contact)
        uow.index(IndexOp(IndexOpKind.INSERT, NS_IDENTITY, identity_key, str(contact_id)))
        # An address on the suppression list (P12) keeps its opt-outs, even though the
        # contact who opted out was erased since.
        suppressed = uow.lookup(NS_SUPPRESSION, self.suppression_key(tenant_id, identity))
        for channel in json.loads(suppressed) if suppressed else []:
            contact.opt_out(channel, "suppression-list", uow.now)
        return contact

    def suppression_key(self, tenant_id: UUID, identity: Identity) -> str:
        return self._blind(tenant_id, "suppression", identity.kind.value, identity.address)

    def update_suppression(
        self, uow: UnitOfWork, tenant_id: UUID, identity: Identity, channel: str, opted_out: bool
    ) -> None:
        """Keep the suppression entry of an address: a keyed hash of it and the channels
        it opted out of, nothing else; it outlives the contact's erasure (P12)."""
        key = self.suppression_key(tenant_id, identity)
        current = uow.lookup(NS_SUPPRESSION, key)
        channels = set(json.loads(current)) if current else set()
        channels = channels | {channel} if opted_out else channels - {channel}
        if channels:
            uow.index(
                IndexOp(IndexOpKind.UPSERT, NS_SUPPRESSION, key, json.dumps(sorted(channels)))
            )
        elif current is not None:
            uow.index(IndexOp(IndexOpKind.DELETE, NS_SUPPRESSION, key))

    def _find_or_open_conversation(
        self, uow: UnitOfWork, interaction: Interaction, plan: ReceivePlan, contact_id: UUID
    ) -> Conversation:
        tenant_id = interaction.tenant_id
        thread_key, thread_hash = plan.thread_key, plan.thread_hash
        current = uow.lookup(NS_THREAD, thread_hash)
        if current is not None:
            conversation = uow.get(UUID(current), Conversation, tenant_id)
            if conversation.status is not ConversationStatus.CLOSED:
                return conversation
        conversation_id = new_id()
        scope = Scope.conversation(tenant_id, conversation_id)
        self.sealer.new_scope(scope)
        conversation = Conversation.open(
            conversation_id,
            tenant_id,
            interaction.channel,
            contact_id,
            self._seal(scope, thread_key),
            uow.now,
        )
        uow.add(conversation)
        uow.index(
            IndexOp(
                IndexOpKind.INSERT,
                NS_CONTACT_CONVERSATION,
                f"{tenant_id}:{contact_id}:{conversation_id}",
                "",
            )
        )
        if current is None:
            uow.index(IndexOp(IndexOpKind.INSERT, NS_THREAD, thread_hash, str(conversation_id)))
        else:
            uow.index(
                IndexOp(IndexOpKind.CAS, NS_THREAD, thread_hash, str(conversation_id), current)
            )
        return conversation

    # == agent work on conversations ===================================================
    def _conversation(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID
    ) -> Conversation:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(conversation_id, Conversation, tenant_id)

    def reply_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        author: str,
        body: str,
        idempotency_key: str | None = None,
    ) -> tuple[UUID, bool]:
        """Record an outbound message; returns (message id, was it a repeat)."""
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if not body.strip():
            raise ValidationError("body must not be empty")
        receipt_key = None
        if idempotency_key is not None:
            receipt_key = self._blind(
                tenant_id, "reply", str(conversation_id), author, idempotency_key
            )
            existing = uow.lookup(NS_RECEIPT, receipt_key)
            if existing is not None:
                return UUID(json.loads(existing)["message_id"]), True
        message_id = new_id()
        conversation.send_message(
            message_id,
            author,
            self._seal(Scope.conversation(tenant_id, conversation_id), body),
            uow.now,
        )
        if receipt_key is not None:
            doc = json.dumps({"message_id": str(message_id)})
            uow.index(IndexOp(IndexOpKind.INSERT, NS_RECEIPT, receipt_key, doc))
        return message_id, False

    def reply(self, tenant_id: UUID, conversation_id: UUID, author: str, body: str) -> UUID:
        (message_id, _), _ = self.run(
            lambda uow: self.reply_in(uow, tenant_id, conversation_id, author, body)
        )
        return message_id

    def add_note_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, author: str, body: str
    ) -> UUID:
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if not body.strip():
            raise ValidationError("body must not be empty")
        note_id = new_id()
        conversation.add_note(
            note_id,
            author,
            self._seal(Scope.conversation(tenant_id, conversation_id), body),
            uow.now,
        )
        return note_id

    def change_status_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        status: ConversationStatus,
        actor: str,
    ) -> bool:
        conversation = self._conversation(uow, tenant_id, conversation_id)
        changed = conversation.change_status(status, actor, uow.now)
        if changed and status in (ConversationStatus.RESOLVED, ConversationStatus.CLOSED):
            # the agent's slot on this channel is free again
            self._release(uow, tenant_id, conversation.assignee_id, conversation_id, status.value)
        return changed

    def assign_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        agent_id: UUID | None,
        actor: str,
    ) -> None:
        """Assign directly (or unassign): an open offer to another agent is withdrawn and
        the previous assignee's slot freed; the new assignee must have free capacity on
        the conversation's channel (an offer to that agent turns into the assignment)."""
        conversation = self._conversation(uow, tenant_id, conversation_id)
        agent = uow.get(agent_id, Agent, tenant_id) if agent_id is not None else None
        previous = conversation.assignee_id
        if previous == agent_id:
            return
        if conversation.offered_to is not None and conversation.offered_to != agent_id:
            self._withdraw_offer(uow, conversation, "withdrawn")
        conversation.assign(agent_id, actor, uow.now)
        if agent is not None:
            agent.take_work(conversation_id, conversation.channel.value, uow.now)
        self._release(uow, tenant_id, previous, conversation_id, "reassigned")

    # == contacts ======================================================================
    def correct_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        display_name: str | None,
        source: str,
    ) -> None:
        self._require_active_tenant(uow, tenant_id)
        contact = uow.get(contact_id, Contact, tenant_id)
        scope = Scope.contact(tenant_id, contact_id)
        contact.correct_details(
            display_name=self._seal_opt(scope, display_name), source=source, at=uow.now
        )

    def link_identity_in(
        self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID, identity: Identity
    ) -> None:
        entry = self._require_active_tenant(uow, tenant_id)
        contact = uow.get(contact_id, Contact, tenant_id)
        identity = self.normaliser.normalise(identity, entry.get("phone_region"))
        key = self._blind(tenant_id, "identity", identity.kind.value, identity.address)
        owner = uow.lookup(NS_IDENTITY, key)
        if owner == str(contact_id):
            return
        if owner is not None:
            raise ConflictError("that identity belongs to another contact")
        contact.link_identity(
            kind=identity.kind.value,
            address=self._seal(Scope.contact(tenant_id, contact_id), identity.address),
            at=uow.now,
        )
        uow.index(IndexOp(IndexOpKind.INSERT, NS_IDENTITY, key, str(contact_id)))

    def tag_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        add: list[str],
        remove: list[str],
    ) -> list[str]:
        self._require_active_tenant(uow, tenant_id)
        contact = uow.get(contact_id, Contact, tenant_id)
        contact.tag(add, remove, uow.now)
        return sorted(contact.tags)

    def contact_attributes(self, contact: Contact) -> dict[str, Any]:
        if contact.attributes is None:
            return {}
        opened = self.sealer.open(contact.attributes)
        if not isinstance(opened, str):
            raise ConflictError("this contact's data has been erased")
        return cast(dict[str, Any], json.loads(opened))

    def set_contact_attributes_in(
        self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID, changes: dict[str, Any]
    ) -> dict[str, Any]:
        """Merge typed CRM attributes into the contact's; a value of None removes the key."""
        self._require_active_tenant(uow, tenant_id)
        contact = uow.get(contact_id, Contact, tenant_id)
        attributes = self.contact_attributes(contact)
        for key, value in check_attributes(changes).items():
            if value is None:
                attributes.pop(key, None)
            else:
                attributes[key] = value
        if len(attributes) > MAX_ATTRIBUTES:
            raise ValidationError(f"a contact has at most {MAX_ATTRIBUTES} attributes")
        contact.change_attributes(
            attributes=self._seal(
                Scope.contact(tenant_id, contact_id), json.dumps(attributes, sort_keys=True)
            ),
            at=uow.now,
        )
        return attributes

    # == queues and presence ===========================================================
    def queue_conversation_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        queue_id: UUID,
        priority: int | None,
        reason: str,
        keep_waiting_since: bool = False,
    ) -> None:
        """Place a conversation in a queue (``priority`` defaults to the queue's)."""
        conversation = self._conversation(uow, tenant_id, conversation_id)
        queue = uow.get(queue_id, Queue, tenant_id)
        previous = conversation.assignee_id
        self._withdraw_offer(uow, conversation, "withdrawn")
        conversation.queue(
            queue.id,
            queue.priority if priority is None else priority,
            reason,
            uow.now,
            waiting_since=conversation.waiting_since if keep_waiting_since else None,
        )
        self._release(uow, tenant_id, previous, conversation_id, "requeued")

    def abandon_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, reason: str
    ) -> None:
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if conversation.waiting_since is not None:
            self._withdraw_offer(uow, conversation, "withdrawn")
        conversation.abandon(reason, uow.now)

    def set_presence_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        agent_id: UUID,
        presence: AgentPresence,
        reason: str | None = None,
    ) -> bool:
        """Change presence. Going offline returns the agent's work to its queues at its
        original wait time; busy or away withdraws open offers (work in hand stays)."""
        self._require_active_tenant(uow, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        changed = agent.change_presence(presence, reason, uow.now)
        if presence is AgentPresence.OFFLINE:
            self.return_work_in(uow, tenant_id, agent, "agent_offline")
        elif presence is not AgentPresence.AVAILABLE:
            self.withdraw_offers_in(uow, tenant_id, agent)
        return changed

    def configure_queue_in(
        self, uow: UnitOfWork, tenant_id: UUID, queue_id: UUID, changes: dict[str, Any]
    ) -> dict[str, Any]:
        self._require_active_tenant(uow, tenant_id)
        queue = uow.get(queue_id, Queue, tenant_id)
        queue.change_settings(changes, uow.now)
        return dict(queue.settings)

    # == staff =========================================================================
    def create_agent_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        name: str,
        email: str | None,
        skills: list[str],
    ) -> UUID:
        self._require_active_tenant(uow, tenant_id)
        if not name.strip() or len(name) > 200:
            raise ValidationError("agent name must be 1-200 characters")
        agent_id = new_id()
        scope = Scope.agent(tenant_id, agent_id)
        self.sealer.new_scope(scope)
        if email is not None:
            email = self.normaliser.normalise(Identity(IdentityKind.EMAIL, email)).address
        agent = Agent.create(
            agent_id,
            tenant_id,
            self._seal(scope, name),
            self._seal_opt(scope, email),
            skills,
            uow.now,
        )
        uow.add(agent)
        return agent_id

    def create_queue_in(
        self, uow: UnitOfWork, tenant_id: UUID, name: str, channels: list[Channel]
    ) -> UUID:
        self._require_active_tenant(uow, tenant_id)
        queue = Queue.create(new_id(), tenant_id, name, channels, uow.now)
        uow.add(queue)
        return queue.id

    # == privacy: holds, erasure, restriction, requests, retention =====================
    def scope_of(self, kind: ScopeKind, tenant_id: UUID, subject_id: UUID) -> Scope:
        return Scope(tenant_id, kind, subject_id)

    def is_held(self, uow: UnitOfWork, tenant_id: UUID, *targets: tuple[HoldTarget, UUID]) -> bool:
        """Whether a placed legal hold covers the tenant or any of the targets."""
        holds = uow.scan(NS_HOLD, f"{tenant_id}:")  # a tenant's holds are few: one query
        for kind, target_id in [(HoldTarget.TENANT, tenant_id), *targets]:
            prefix = f"{tenant_id}:{kind.value}:{target_id}:"
            if any(key.startswith(prefix) for key in holds):
                return True
        return False

    def place_hold_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        target: HoldTarget,
        target_id: UUID,
        reason: str,
        actor: str,
    ) -> UUID:
        self._require_unpurged_tenant(uow, tenant_id)
        if not reason.strip():
            raise ValidationError("a legal hold needs a reason")
        if target is HoldTarget.TENANT and target_id != tenant_id:
            raise NotFoundError(f"tenant {target_id} not found")
        if target is HoldTarget.CONTACT:
            uow.get(target_id, Contact, tenant_id)
        if target is HoldTarget.CONVERSATION:
            uow.get(target_id, Conversation, tenant_id)
        hold_id = new_id()
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        hold = LegalHold.place(
            hold_id, tenant_id, target, target_id, self._seal(records, reason), actor, uow.now
        )
        uow.add(hold)
        uow.index(
            IndexOp(IndexOpKind.INSERT, NS_HOLD, f"{tenant_id}:{hold.index_key}:{hold_id}", "")
        )
        return hold_id

    def release_hold_in(self, uow: UnitOfWork, tenant_id: UUID, hold_id: UUID, actor: str) -> None:
        self._require_unpurged_tenant(uow, tenant_id)
        hold = uow.get(hold_id, LegalHold, tenant_id)
        hold.release(actor, uow.now)
        uow.index(IndexOp(IndexOpKind.DELETE, NS_HOLD, f"{tenant_id}:{hold.index_key}:{hold_id}"))

    def _open_text(self, sealed: Sealed | None) -> str | None:
        if sealed is None:
            return None
        opened = self.sealer.open(sealed)
        return opened if isinstance(opened, str) else None

    def erase_conversation_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        reason: str,
        request_id: UUID | None = None,
    ) -> ErasureOutcome:
        """Erase one conversation's content (unless held); returns the scopes to shred."""
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        outcome = ErasureOutcome()
        if conversation.content_erased:
            outcome.note("conversation", conversation_id, "already_erased")
            return outcome
        if self.is_held(
            uow,
            tenant_id,
            (HoldTarget.CONVERSATION, conversation_id),
            (HoldTarget.CONTACT, conversation.contact_id),
        ):
            outcome.note("conversation", conversation_id, "held")
            return outcome
        thread_key = self._open_text(conversation.thread)
        if thread_key is not None:
            thread_hash = self._blind(tenant_id, "thread", conversation.channel.value, thread_key)
            if uow.lookup(NS_THREAD, thread_hash) == str(conversation_id):
                uow.index(IndexOp(IndexOpKind.DELETE, NS_THREAD, thread_hash))
        assignee, offered = conversation.assignee_id, conversation.offered_to
        conversation.erase_content(reason, request_id, uow.now)
        for agent_id in {a for a in (assignee, offered) if a is not None}:
            self._release(uow, tenant_id, agent_id, conversation_id, "closed")
        outcome.note("conversation", conversation_id, "erased")
        outcome.scopes += [
            Scope.conversation(tenant_id, conversation_id).id,
            Scope(tenant_id, ScopeKind.VISITOR_NETWORK, conversation_id).id,
        ]
        return outcome

    def erase_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        reason: str,
        request_id: UUID | None = None,
        with_conversations: bool = True,
    ) -> ErasureOutcome:
        """Erase a contact and (by default) all its conversations, except what a legal hold
        covers; while any of its conversations is held, the contact itself is kept too.
        Retention of an inactive contact erases its identity data only: its conversations
        follow their own category's period.

        Records the erasure events and removes the contact's blind-index entries; the
        caller then destroys the returned scopes' keys. A marketing suppression entry, kept
        apart under its own keyed hash, survives (P12).
        """
        contact = uow.get(contact_id, Contact, tenant_id)
        outcome = ErasureOutcome()
        if contact.erased:
            outcome.note("contact", contact_id, "already_erased")
            return outcome
        if self.is_held(uow, tenant_id, (HoldTarget.CONTACT, contact_id)):
            outcome.note("contact", contact_id, "held")
            return outcome
        conversations = uow.scan(NS_CONTACT_CONVERSATION, f"{tenant_id}:{contact_id}:")
        if with_conversations:  # load them, and their thread entries, in one query each
            uow.load_many(UUID(key.rsplit(":", 1)[1]) for key in conversations)
            loaded_all = [
                uow.get(UUID(key.rsplit(":", 1)[1]), Conversation, tenant_id)
                for key in conversations
            ]
            # their keys in one query, not one each
            self.sealer.preload(c.thread.scope for c in loaded_all if c.thread is not None)
            threads = []
            for loaded in loaded_all:
                thread_key = self._open_text(loaded.thread)
                if thread_key is not None:
                    threads.append(
                        self._blind(tenant_id, "thread", loaded.channel.value, thread_key)
                    )
            uow.preload(NS_THREAD, threads)
        for key in sorted(conversations) if with_conversations else []:
            conversation_id = UUID(key.rsplit(":", 1)[1])
            outcome.merge(
                self.erase_conversation_in(uow, tenant_id, conversation_id, reason, request_id)
            )
        if any(s["status"] == "held" for s in outcome.subjects):
            # A held conversation keeps its party: the contact stays until the hold is
            # released and the erasure is asked for again (P11).
            outcome.note("contact", contact_id, "held")
            return outcome
        for kind, sealed in contact.identities:
            address = self._open_text(sealed)
            if address is None:
                continue
            key = self._blind(tenant_id, "identity", kind.value, address)
            if uow.lookup(NS_IDENTITY, key) == str(contact_id):
                uow.index(IndexOp(IndexOpKind.DELETE, NS_IDENTITY, key))
        external = self._open_text(contact.external_id)
        if external is not None:
            key = self._blind(tenant_id, "external-id", external)
            if uow.lookup(NS_EXTERNAL_ID, key) == str(contact_id):
                uow.index(IndexOp(IndexOpKind.DELETE, NS_EXTERNAL_ID, key))
        contact.erase(reason, request_id, uow.now)
        outcome.note("contact", contact_id, "erased")
        outcome.scopes.append(Scope.contact(tenant_id, contact_id).id)
        return outcome

    def notice_inactive_contact_in(
        self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID, delete_after: datetime
    ) -> None:
        contact = uow.get(contact_id, Contact, tenant_id)
        if not contact.erased:
            contact.issue_inactivity_notice(delete_after=delete_after, at=uow.now)

    def erase_agent_in(self, uow: UnitOfWork, tenant_id: UUID, agent_id: UUID) -> ErasureOutcome:
        """Delete an agent (P2): its name and email go, its work history stays by id; its
        tokens are revoked."""
        self._require_active_tenant(uow, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        self.return_work_in(uow, tenant_id, agent, "agent_deleted")
        agent.erase(uow.now)
        for key in uow.scan(NS_AGENT_TOKEN, f"{tenant_id}:{agent_id}:"):
            self.revoke_token_in(uow, tenant_id, UUID(key.rsplit(":", 1)[1]))
        outcome = ErasureOutcome()
        outcome.note("agent", agent_id, "erased")
        outcome.scopes.append(Scope.agent(tenant_id, agent_id).id)
        return outcome

    def restrict_contact_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        reason: str,
        request_id: UUID | None = None,
    ) -> bool:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(contact_id, Contact, tenant_id).restrict(reason, request_id, uow.now)

    def lift_restriction_in(self, uow: UnitOfWork, tenant_id: UUID, contact_id: UUID) -> bool:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(contact_id, Contact, tenant_id).lift_restriction(uow.now)

    def change_retention_policy_in(
        self, uow: UnitOfWork, tenant_id: UUID, changes: dict[str, Any]
    ) -> RetentionPolicy:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(tenant_id, Tenant).change_retention_policy(changes, uow.now)

    def resolve_subject(self, uow: UnitOfWork, tenant_id: UUID, identity: Identity) -> list[UUID]:
        """The contacts an identity belongs to (at most one), for a data-subject request."""
        entry = self._tenant_entry(uow, tenant_id)
        normal = self.normaliser.normalise(identity, entry.get("phone_region"))
        key = self._blind(tenant_id, "identity", normal.kind.value, normal.address)
        found = uow.lookup(NS_IDENTITY, key)
        return [UUID(found)] if found else []

    def receive_request_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        kind: RequestKind,
        identity: Identity | None,
        contact_id: UUID | None,
        note: str | None,
        received_at: datetime | None,
    ) -> UUID:
        self._require_active_tenant(uow, tenant_id)
        if contact_id is not None:
            uow.get(contact_id, Contact, tenant_id)
            contact_ids = [contact_id]
        elif identity is not None:
            contact_ids = self.resolve_subject(uow, tenant_id, identity)
        else:
            raise ValidationError("name the subject by an identity or a contact id")
        request_id = new_id()
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        request = DataSubjectRequest.receive(
            request_id,
            tenant_id,
            kind,
            contact_ids,
            identity.kind.value if identity else None,
            self._seal_opt(records, note),
            received_at or uow.now,
            uow.now,
        )
        uow.add(request)
        return request_id

    def extend_request_in(
        self, uow: UnitOfWork, tenant_id: UUID, request_id: UUID, days: int, reason: str
    ) -> datetime:
        self._require_active_tenant(uow, tenant_id)
        if not reason.strip():
            raise ValidationError("an extension needs a reason")
        request = uow.get(request_id, DataSubjectRequest, tenant_id)
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        return request.extend(days, self._seal(records, reason), uow.now)

    def reject_request_in(
        self, uow: UnitOfWork, tenant_id: UUID, request_id: UUID, reason: str
    ) -> None:
        self._require_active_tenant(uow, tenant_id)
        if not reason.strip():
            raise ValidationError("a rejection needs a reason")
        request = uow.get(request_id, DataSubjectRequest, tenant_id)
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        request.reject(self._seal(records, reason), uow.now)

    def fulfil_request_in(
        self, uow: UnitOfWork, tenant_id: UUID, request_id: UUID, outcome: dict[str, Any]
    ) -> None:
        request = uow.get(request_id, DataSubjectRequest, tenant_id)
        request.fulfil(outcome, uow.now)

    def configure_export_key_in(
        self, uow: UnitOfWork, tenant_id: UUID, public_key: str | None, fingerprint: str | None
    ) -> None:
        self._require_active_tenant(uow, tenant_id)
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        uow.get(tenant_id, Tenant).configure_export_key(
            public_key=self._seal_opt(records, public_key), fingerprint=fingerprint, at=uow.now
        )

    def open_text(self, sealed: Sealed | None) -> str | None:
        """A sealed value in clear, or None when absent or erased."""
        return self._open_text(sealed)

    def require_purgeable_in(self, uow: UnitOfWork, tenant_id: UUID) -> Tenant:
        """The tenant, if it may be purged now: terminated, its grace over, and no legal
        hold on it or on any of its contacts or conversations (a purge takes everything,
        so a hold anywhere in the tenant postpones it; the sweep still expires what is due
        around the held data). Checked before any key is destroyed."""
        tenant = uow.get(tenant_id, Tenant)
        if tenant.status is not TenantStatus.TERMINATED:
            raise ConflictError("only a terminated tenant is purged")
        if tenant.purge_after is not None and uow.now < tenant.purge_after:
            raise ConflictError("the grace period has not ended")
        if uow.scan(NS_HOLD, f"{tenant_id}:"):
            raise ConflictError("a legal hold covers data of this tenant")
        return tenant

    def purge_tenant_in(
        self, uow: UnitOfWork, tenant_id: UUID, certificate: dict[str, Any]
    ) -> None:
        tenant = self.require_purgeable_in(uow, tenant_id)
        tenant.purge(certificate, uow.now)
        uow.index(self._tenant_index_op(tenant, IndexOpKind.UPSERT))
        for namespace in TENANT_PREFIXED:
            uow.index(IndexOp(IndexOpKind.DELETE_PREFIX, namespace, f"{tenant_id}:"))
        for token_hash, value in self.index.scan_prefix(NS_TOKEN, ""):
            if json.loads(value)["tenant_id"] == str(tenant_id):
                uow.index(IndexOp(IndexOpKind.DELETE, NS_TOKEN, token_hash))
        for claim, owner in self.index.scan_prefix(NS_CLAIM, ""):
            if owner == str(tenant_id):
                uow.index(IndexOp(IndexOpKind.DELETE, NS_CLAIM, claim))


@dataclass
class ErasureOutcome:
    """What an erasure did, per subject, and which scope keys are now to be destroyed."""

    scopes: list[str] = field(default_factory=list)
    subjects: list[dict[str, str]] = field(default_factory=list)

    def note(self, kind: str, subject_id: UUID, status: str) -> None:
        self.subjects.append({"kind": kind, "id": str(subject_id), "status": status})

    def merge(self, other: ErasureOutcome) -> None:
        self.scopes += other.scopes
        self.subjects += other.subjects

    def as_dict(self) -> dict[str, Any]:
        return {"subjects": list(self.subjects)}


class Receive:
    """The receive command; it can plan ahead so a batch looks its keys up together."""

    def __init__(self, app: ContactCentre, interaction: Interaction) -> None:
        self.app = app
        self.interaction = interaction
        self._plan: tuple[UnitOfWork, ReceivePlan] | None = None

    @property
    def tenant_id(self) -> UUID:
        return self.interaction.tenant_id

    def forget_plan(self) -> None:
        """Plan again when next asked (the tenant entry it was made with was stale)."""
        self._plan = None

    def plan(self, uow: UnitOfWork) -> ReceivePlan:
        # A plan holds keyed hashes, which depend on vault state: a retry (a new unit of
        # work, after a lost race for a key) must plan again.
        if self._plan is None or self._plan[0] is not uow:
            self._plan = (uow, self.app.plan_receive(uow, self.interaction))
        return self._plan[1]

    def __call__(self, uow: UnitOfWork) -> ReceiveResult:
        return self.app.receive_in(uow, self.interaction, self.plan(uow))


__all__ = [
    "ContactCentre",
    "DomainError",
    "IssuedToken",
    "Outcome",
    "Principal",
    "Receive",
    "ReceiveResult",
    "UnitOfWork",
]
