"""Privacy operations that span commands and the key vault: erasure, agent deletion,
data-subject requests, tenant purge, and the retention sweep (a ticker and a command).

Every erasure first records its events (and drops the subject's blind-index entries) in
one transaction, then destroys the scope keys. If the process stops in between, the
ledger still shows the scopes erased and the next sweep destroys any key left behind, so
an erasure is never half done for long, and never undone.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.application import AggregateNotFoundError

from contact_centre.application import ContactCentre, ErasureOutcome, UnitOfWork
from contact_centre.compliance import DUE_SOON, DataSubjectRequest, RequestKind
from contact_centre.errors import ConflictError, DomainError, NotFoundError, ValidationError
from contact_centre.retention import Category, RetentionPolicy
from contact_centre.tenancy import Tenant, TenantStatus
from projections import retention as ledger
from projections.base import Tx, from_micros, loads, micros
from workflows.base import Ticker

log = logging.getLogger(__name__)

ERASE_CHUNK = 200  # scopes erased per transaction by the sweep


class KeyShredder(Protocol):
    """The part of the key vault erasure needs."""

    def destroy(self, scope_ids: Any) -> int: ...

    def destroy_tenant(self, tenant_id: UUID) -> int: ...

    def is_destroyed(self, scope_id: str) -> bool: ...


class UsageStore(Protocol):
    """Records of use kept by infrastructure (the audit log): pruned by age."""

    def prune(self, tenant_id: UUID, before: datetime) -> int: ...

    def purge_tenant(self, tenant_id: UUID) -> int: ...


@dataclass
class SweepAction:
    tenant_id: str
    scope_id: str
    category: str
    action: str  # erase | notice | purge-tenant | prune-usage
    rule: str
    anchor_at: str | None = None
    due_at: str | None = None
    count: int = 1


@dataclass
class SweepReport:
    now: datetime
    dry_run: bool
    actions: list[SweepAction] = field(default_factory=list)
    held: int = 0
    keys_destroyed: int = 0

    def summary(self) -> dict[str, Any]:
        counts: Counter[str] = Counter()
        for action in self.actions:
            counts[f"{action.action}:{action.category}"] += action.count
        return {
            "at": self.now.isoformat(),
            "dry_run": self.dry_run,
            "actions": dict(sorted(counts.items())),
            "held_scopes_kept": self.held,
            "keys_destroyed": self.keys_destroyed,
        }


class PrivacyService:
    """Runs privacy operations with an application instance of its own (one at a time)."""

    def __init__(
        self,
        app: ContactCentre,
        vault: KeyShredder,
        read: Callable[[], Any],
        usage: list[UsageStore] | None = None,
    ) -> None:
        self.app = app
        self.vault = vault
        self._read = read  # opens a read transaction on the read models
        self.usage = usage or []
        self._lock = threading.RLock()

    def _run(self, command: Callable[[UnitOfWork], Any]) -> Any:
        result, _ = self.app.run(command)
        return result

    def _shred(self, outcome: ErasureOutcome) -> int:
        return self.vault.destroy(outcome.scopes) if outcome.scopes else 0

    def _erase(self, command: Callable[[UnitOfWork], ErasureOutcome]) -> tuple[ErasureOutcome, int]:
        """Run an erasure command; returns its outcome and the number of keys destroyed.

        The keys go as soon as the erasure's events are committed, before the read
        models take those events: the personal data is unreadable from that moment, and
        the destruction's commit does not wait behind the read models' write-ahead log.
        (An erasure interrupted between the two is finished by :meth:`finish_interrupted`.)
        """
        destroyed = 0

        def erasing(uow: UnitOfWork) -> ErasureOutcome:
            outcome = command(uow)

            def shred() -> None:
                nonlocal destroyed
                destroyed = self._shred(outcome)

            uow.after_commit(shred)
            return outcome

        outcome: ErasureOutcome = self._run(erasing)
        return outcome, destroyed

    # -- single subjects ---------------------------------------------------------------
    def erase_contact(
        self, tenant_id: UUID, contact_id: UUID, reason: str, request_id: UUID | None = None
    ) -> ErasureOutcome:
        with self._lock:
            outcome, _ = self._erase(
                lambda uow: self.app.erase_contact_in(
                    uow, tenant_id, contact_id, reason, request_id
                )
            )
            return outcome

    def erase_conversation(
        self, tenant_id: UUID, conversation_id: UUID, reason: str
    ) -> ErasureOutcome:
        with self._lock:
            outcome, _ = self._erase(
                lambda uow: self.app.erase_conversation_in(uow, tenant_id, conversation_id, reason)
            )
            return outcome

    def delete_agent(self, tenant_id: UUID, agent_id: UUID) -> ErasureOutcome:
        with self._lock:
            outcome, _ = self._erase(lambda uow: self.app.erase_agent_in(uow, tenant_id, agent_id))
            return outcome

    # -- data-subject requests ---------------------------------------------------------
    def fulfil_request(
        self, tenant_id: UUID, request_id: UUID, details: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Carry out a request and record its outcome (no personal data in it)."""
        details = details or {}
        with self._lock:
            try:
                request: Any = self.app.repository.get(request_id)
            except AggregateNotFoundError:
                request = None
            if not isinstance(request, DataSubjectRequest) or request.tenant_id != tenant_id:
                raise NotFoundError(f"request {request_id} not found")
            kind = request.kind
            contacts: list[UUID] = list(request.contact_ids)
            outcome: dict[str, Any] = {"kind": kind.value, "contacts": [str(c) for c in contacts]}
            if not contacts:
                outcome["result"] = "no_data"
            elif kind in (RequestKind.ACCESS, RequestKind.PORTABILITY):
                outcome["result"] = "export_available"
            elif kind is RequestKind.ERASURE:
                subjects: list[dict[str, str]] = []
                for contact_id in contacts:
                    erased = self.erase_contact(
                        tenant_id, contact_id, "request:erasure", request_id
                    )
                    subjects += erased.subjects
                outcome["subjects"] = subjects
                outcome["result"] = (
                    "partly_held" if any(s["status"] == "held" for s in subjects) else "erased"
                )
            elif kind in (RequestKind.RESTRICTION, RequestKind.OBJECTION):
                for contact_id in contacts:
                    self._run(
                        partial(
                            self.app.restrict_contact_in,
                            tenant_id=tenant_id,
                            contact_id=contact_id,
                            reason=kind.value,
                            request_id=request_id,
                        )
                    )
                outcome["result"] = "restricted"
            elif kind is RequestKind.RECTIFICATION:
                name = details.get("display_name")
                if not isinstance(name, str) or not name.strip():
                    raise ValidationError("rectification needs the corrected display_name")
                for contact_id in contacts:
                    self._run(
                        partial(
                            self.app.correct_contact_in,
                            tenant_id=tenant_id,
                            contact_id=contact_id,
                            display_name=name.strip(),
                            source="subject",
                        )
                    )
                outcome["result"] = "rectified"
            else:  # consent withdrawal: stop processing, as a restriction does
                for contact_id in contacts:
                    self._run(
                        partial(
                            self.app.restrict_contact_in,
                            tenant_id=tenant_id,
                            contact_id=contact_id,
                            reason="consent_withdrawn",
                            request_id=request_id,
                        )
                    )
                outcome["result"] = "consent_withdrawn"
            self._run(lambda uow: self.app.fulfil_request_in(uow, tenant_id, request_id, outcome))
            return outcome

    def export_key(self, tenant_id: UUID) -> str | None:
        """The tenant's OpenPGP public key for exports, if it configured one."""
        with self._lock:
            tenant: Any = self.app.repository.get(tenant_id)
            return self.app.open_text(tenant.export_key)

    # -- tenants -----------------------------------------------------------------------
    def purge_tenant(self, tenant_id: UUID, now: datetime) -> dict[str, Any]:
        """Destroy everything of a terminated tenant past its grace; returns the
        deletion certificate (counts and dates, no personal data)."""
        with self._lock:
            with self._read() as tx:
                state = ledger.tenant_state(tx, str(tenant_id))
                counts = _category_counts(tx, str(tenant_id))
            if state is None:
                raise NotFoundError(f"tenant {tenant_id} not found")
            tenant: Any = self.app.repository.get(tenant_id)
            if not isinstance(tenant, Tenant):
                raise NotFoundError(f"tenant {tenant_id} not found")
            if tenant.status is TenantStatus.PURGED:
                raise ConflictError("the tenant has already been purged")
            # refuse before anything is destroyed (a terminated tenant takes no new holds)
            self._run(lambda uow: self.app.require_purgeable_in(uow, tenant_id))
            destroyed = self.vault.destroy_tenant(tenant_id)
            usage_deleted = sum(store.purge_tenant(tenant_id) for store in self.usage)
            certificate = {
                "tenant_id": str(tenant_id),
                "rule": "tenant_terminated",
                "terminated_at": _iso(state["terminated_at"]),
                "grace_ended_at": _iso(state["purge_after"]),
                "purged_at": now.isoformat(),
                "keys_destroyed": destroyed,
                "scopes_by_category": counts,
                "usage_records_deleted": usage_deleted,
            }
            self._run(lambda uow: self.app.purge_tenant_in(uow, tenant_id, certificate))
            return certificate

    # -- the retention sweep -----------------------------------------------------------
    def sweep(
        self,
        now: datetime,
        *,
        tenant: UUID | None = None,
        dry_run: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> SweepReport:
        report = SweepReport(now=now, dry_run=dry_run)
        with self._lock:
            with self._read() as tx:
                states = [
                    s for s in ledger.tenants(tx) if tenant is None or s["tenant_id"] == str(tenant)
                ]
            for state in states:
                if state["status"] == "purged":
                    continue
                self._sweep_tenant(state, now, report, progress)
        return report

    def _sweep_tenant(
        self,
        state: dict[str, Any],
        now: datetime,
        report: SweepReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        tenant_id = UUID(state["tenant_id"])
        with self._read() as tx:
            held = ledger.held_targets(tx, str(tenant_id))
        tenant_held = ("tenant", str(tenant_id)) in held
        policy = RetentionPolicy.from_dict(loads(state["policy"]))
        grace_over = state["purge_after"] is not None and state["purge_after"] <= micros(now)
        # a hold anywhere in the tenant postpones its purge; what is due around it still goes
        if state["status"] == "terminated" and grace_over and not held:
            report.actions.append(
                SweepAction(
                    str(tenant_id),
                    f"tenant:{tenant_id}",
                    "tenant",
                    "purge-tenant",
                    "tenant_terminated",
                    due_at=_iso(state["purge_after"]),
                )
            )
            if report.dry_run:
                return
            try:
                self.purge_tenant(tenant_id, now)
                return
            except ConflictError as error:  # a hold the ledger did not show yet
                report.actions.pop()
                log.info("purge of tenant %s postponed: %s", tenant_id, error.detail)
        if tenant_held:
            with self._read() as tx:
                report.held += len(ledger.scopes(tx, str(tenant_id), status="live", limit=100_000))
            return
        ended = state["terminated_at"]
        # chat visitor data: 6 months from the conversation's end (its last activity)
        self._expire_conversations(
            tenant_id, Category.CHAT_VISITOR, policy, now, held, report, None, progress
        )
        # correspondence: from the later of the message date and the contract's end
        if ended is not None and ended <= micros(policy.cutoff(Category.CORRESPONDENCE, now)):
            self._expire_conversations(
                tenant_id, Category.CORRESPONDENCE, policy, now, held, report, None, progress
            )
        # account data (agents): from the contract's end
        if ended is not None and ended <= micros(policy.cutoff(Category.ACCOUNT, now)):
            self._expire_agents(tenant_id, held, report)
        # inactive contacts: notice first, deletion after the notice period
        self._expire_contacts(tenant_id, policy, now, held, report, progress)
        # usage records
        cutoff = policy.cutoff(Category.USAGE, now)
        for store in self.usage:
            pruned = 0 if report.dry_run else store.prune(tenant_id, cutoff)
            if pruned or report.dry_run:
                report.actions.append(
                    SweepAction(
                        str(tenant_id),
                        f"usage:{type(store).__name__}",
                        Category.USAGE.value,
                        "prune-usage",
                        "retention:usage",
                        due_at=cutoff.isoformat(),
                        count=pruned,
                    )
                )

    def _due_scopes(
        self, tenant_id: UUID, category: Category, anchored_before: int
    ) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            with self._read() as tx:
                page = ledger.scopes(
                    tx,
                    str(tenant_id),
                    category=category.value,
                    status="live",
                    anchored_before=anchored_before,
                    after=after,
                    limit=1000,
                )
            if not page:
                return
            yield from page
            after = page[-1]["scope_id"]

    def _expire_conversations(
        self,
        tenant_id: UUID,
        category: Category,
        policy: RetentionPolicy,
        now: datetime,
        held: set[tuple[str, str]],
        report: SweepReport,
        _: Any,
        progress: Callable[[int], None] | None,
    ) -> None:
        cutoff = micros(policy.cutoff(category, now))
        chunk: list[UUID] = []
        for scope in self._due_scopes(tenant_id, category, cutoff):
            if scope["kind"] != "conversation":
                continue  # visitor network data goes with its conversation
            if ledger.is_held(scope, held):
                report.held += 1
                continue
            report.actions.append(
                SweepAction(
                    str(tenant_id),
                    scope["scope_id"],
                    category.value,
                    "erase",
                    f"retention:{category.value}",
                    anchor_at=_iso(scope["anchor_at"]),
                    due_at=policy.due(category, from_micros(scope["anchor_at"])).isoformat(),
                )
            )
            chunk.append(UUID(scope["subject_id"]))
            if len(chunk) >= ERASE_CHUNK:
                self._erase_conversations(tenant_id, chunk, category, report, progress)
                chunk = []
        self._erase_conversations(tenant_id, chunk, category, report, progress)

    def _erase_conversations(
        self,
        tenant_id: UUID,
        ids: list[UUID],
        category: Category,
        report: SweepReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        if report.dry_run or not ids:
            return
        rule = f"retention:{category.value}"

        def command(uow: UnitOfWork) -> ErasureOutcome:
            outcome = ErasureOutcome()
            for conversation_id in ids:
                outcome.merge(self.app.erase_conversation_in(uow, tenant_id, conversation_id, rule))
            return outcome

        report.keys_destroyed += self._erase(command)[1]
        if progress is not None:
            progress(len(ids))

    def _expire_agents(
        self, tenant_id: UUID, held: set[tuple[str, str]], report: SweepReport
    ) -> None:
        with self._read() as tx:
            agents = ledger.scopes(
                tx, str(tenant_id), category=Category.ACCOUNT.value, status="live", limit=100_000
            )
        for scope in agents:
            report.actions.append(
                SweepAction(
                    str(tenant_id),
                    scope["scope_id"],
                    Category.ACCOUNT.value,
                    "erase",
                    "retention:account",
                )
            )
            if not report.dry_run:
                command = partial(
                    self.app.erase_agent_in, tenant_id=tenant_id, agent_id=UUID(scope["subject_id"])
                )
                try:
                    report.keys_destroyed += self._erase(command)[1]
                except ConflictError:
                    continue

    def _expire_contacts(
        self,
        tenant_id: UUID,
        policy: RetentionPolicy,
        now: datetime,
        held: set[tuple[str, str]],
        report: SweepReport,
        progress: Callable[[int], None] | None,
    ) -> None:
        cutoff = micros(policy.cutoff(Category.CONTACT, now))
        delete_after = now + policy.notice_period()
        for scope in self._due_scopes(tenant_id, Category.CONTACT, cutoff):
            if ledger.is_held(scope, held):
                report.held += 1
                continue
            contact_id = UUID(scope["subject_id"])
            immediate = policy.contact_notice_days == 0
            report.actions.append(
                SweepAction(
                    str(tenant_id),
                    scope["scope_id"],
                    Category.CONTACT.value,
                    "erase" if immediate else "notice",
                    "retention:contact_inactive",
                    anchor_at=_iso(scope["anchor_at"]),
                    due_at=policy.due(
                        Category.CONTACT, from_micros(scope["anchor_at"])
                    ).isoformat(),
                )
            )
            if report.dry_run:
                continue
            if immediate:
                self._erase_inactive(tenant_id, contact_id, report)
            else:
                self._run(
                    partial(
                        self.app.notice_inactive_contact_in,
                        tenant_id=tenant_id,
                        contact_id=contact_id,
                        delete_after=delete_after,
                    )
                )
        with self._read() as tx:
            noticed = ledger.noticed_due(tx, str(tenant_id), micros(now))
        for scope in noticed:
            if ledger.is_held(scope, held):
                report.held += 1
                continue
            report.actions.append(
                SweepAction(
                    str(tenant_id),
                    scope["scope_id"],
                    Category.CONTACT.value,
                    "erase",
                    "retention:contact_inactive",
                    due_at=_iso(scope["notice_delete_after"]),
                )
            )
            if not report.dry_run:
                self._erase_inactive(tenant_id, UUID(scope["subject_id"]), report)
            if progress is not None:
                progress(1)

    def _erase_inactive(self, tenant_id: UUID, contact_id: UUID, report: SweepReport) -> None:
        try:
            _, destroyed = self._erase(
                lambda uow: self.app.erase_contact_in(
                    uow,
                    tenant_id,
                    contact_id,
                    "retention:contact_inactive",
                    None,
                    with_conversations=False,
                )
            )
        except DomainError:
            return
        report.keys_destroyed += destroyed

    def finish_interrupted(self, tenant: UUID | None = None) -> int:
        """Destroy any key an interrupted erasure left behind (the ledger says erased)."""
        destroyed = 0
        with self._read() as tx:
            states = [
                s for s in ledger.tenants(tx) if tenant is None or s["tenant_id"] == str(tenant)
            ]
            erased = [
                s["scope_id"]
                for state in states
                for s in ledger.scopes(tx, state["tenant_id"], status="erased", limit=1_000_000)
            ]
        leftover = [scope for scope in erased if not self.vault.is_destroyed(scope)]
        if leftover:
            destroyed = self.vault.destroy(leftover)
        return destroyed


def _category_counts(tx: Tx, tenant_id: str) -> dict[str, dict[str, int]]:
    tx.execute(
        "SELECT category, status, COUNT(*) FROM rm_retention_scopes WHERE tenant_id = ?"
        " GROUP BY category, status",
        (tenant_id,),
    )
    counts: dict[str, dict[str, int]] = {}
    for category, status, n in tx.fetchall():
        counts.setdefault(str(category), {})[str(status)] = int(n)
    return counts


def _iso(value: int | None) -> str | None:
    return None if value is None else from_micros(value).isoformat()


class RequestDueTicker(Ticker):
    """Announces open data-subject requests that fall due within a week
    (``DataSubjectRequest.DueSoon``, the ``request.due`` webhook), once per due date."""

    name = "requests-due"

    def __init__(self, app: ContactCentre, read: Callable[[], Any], interval: float = 60.0) -> None:
        self.app = app
        self._read = read
        self.interval = interval
        self._done: set[tuple[str, int]] = set()  # (request, due date) announced already

    def tick(self, now: datetime) -> int:
        horizon = micros(now + DUE_SOON)
        with self._read() as tx:
            due = [
                (UUID(state["tenant_id"]), row)
                for state in ledger.tenants(tx)
                if state["status"] == "active"
                for row in ledger.requests(
                    tx, state["tenant_id"], status="open", due_before=horizon
                )
            ]
        done = 0
        for tenant_id, row in due:
            key = (str(row["id"]), int(row["due_at"]))
            if key in self._done:
                continue
            request_id = UUID(row["id"])
            try:
                announced, _ = self.app.run(
                    partial(
                        self.app.remind_request_due_in, tenant_id=tenant_id, request_id=request_id
                    )
                )
            except DomainError as error:
                log.warning("request %s not announced (%s)", request_id, error.code)
                continue
            self._done.add(key)
            done += int(bool(announced))
        return done


class RetentionTicker(Ticker):
    """The scheduled sweep inside ``serve``."""

    name = "retention"

    def __init__(self, service: PrivacyService, interval: float) -> None:
        self.service = service
        self.interval = interval

    def tick(self, now: datetime) -> int:
        report = self.service.sweep(now)
        self.service.finish_interrupted()
        done = sum(a.count for a in report.actions)
        if done:
            log.info("retention sweep: %s", report.summary()["actions"])
        return 0  # the next sweep waits for the interval either way
