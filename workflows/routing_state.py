"""The routing engine's state: agents, queues and work, in memory, rebuilt from events.

It is a pure function of the event log (no clock, no I/O): feed it every event in log
order (:meth:`RoutingState.apply`) and it knows who is available with free capacity on
which channel, what waits where, which offers are open and which timers run. Replaying
the same log gives the same state (:meth:`snapshot`), so a restart loses nothing.

Decisions (:meth:`RoutingState.decide`) use incremental indexes, so one decision costs a
few heap operations however many agents and conversations there are:

- per (queue, channel), the waiting work not under offer, in the order it is taken:
  highest priority first, then longest waiting (a heap with lazy deletion);
- per (queue, channel), the agents who serve the queue, are available and have free
  capacity on the channel, longest idle first (a heap with lazy deletion).

A decision is tentative until its ``Offered`` event comes back: the state holds it as
pending so the same work or the same slot is not promised twice in the meantime, and
:meth:`cancel` returns it when the write side refused (another process got there first).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel
from contact_centre.staff import (
    DEFAULT_CAPACITY,
    REAL_TIME,
    Agent,
    AgentPresence,
    Queue,
    default_offer_timeout,
    default_sl_threshold,
    is_open,
    skill_levels,
)
from contact_centre.tenancy import Tenant

DECLINE_COOLDOWN = timedelta(seconds=30)  # an agent who declined is passed over this long
RECENT_DECLINES = 20  # kept per agent, for supervisors
Pair = tuple[UUID, str]  # (queue id, channel)


@dataclass
class AgentView:
    id: UUID
    tenant_id: UUID
    levels: dict[str, int]
    capacity: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CAPACITY))
    presence: str = AgentPresence.OFFLINE.value
    presence_reason: str | None = None
    work: dict[UUID, str] = field(default_factory=dict)
    pending: dict[UUID, str] = field(default_factory=dict)  # decided, not yet recorded
    load: dict[str, int] = field(default_factory=dict)  # per channel: work and pending
    idle_since: datetime | None = None
    queues: set[UUID] = field(default_factory=set)
    pairs: list[Pair] = field(default_factory=list)  # (queue, channel) it could take
    declines: deque[tuple[UUID, str, datetime]] = field(
        default_factory=lambda: deque(maxlen=RECENT_DECLINES)
    )
    version: int = 0

    def free(self, channel: str) -> int:
        return self.capacity.get(channel, 0) - self.load.get(channel, 0)

    def hold(self, table: dict[UUID, str], conversation_id: UUID, channel: str) -> None:
        if conversation_id not in table:
            self.load[channel] = self.load.get(channel, 0) + 1
        else:
            old = table[conversation_id]
            self.load[old] -= 1
            self.load[channel] = self.load.get(channel, 0) + 1
        table[conversation_id] = channel

    def drop(self, table: dict[UUID, str], conversation_id: UUID) -> str | None:
        channel = table.pop(conversation_id, None)
        if channel is not None:
            self.load[channel] -= 1
        return channel

    @property
    def available(self) -> bool:
        return self.presence == AgentPresence.AVAILABLE.value


@dataclass
class QueueView:
    id: UUID
    tenant_id: UUID
    name: str
    channels: list[str]
    settings: dict[str, Any] = field(default_factory=dict)
    required: dict[str, int] = field(default_factory=dict)

    @property
    def priority(self) -> int:
        return int(self.settings.get("priority", 0))

    def serves(self, channel: str) -> bool:
        return not self.channels or channel in self.channels

    def sl_threshold(self, channel: str) -> int:
        """The queue's threshold; unset, 20 s to answer voice and webchat, and a first
        response within 4 h for email and 1 h for the other written channels."""
        value = self.settings.get("sl_threshold_seconds")
        if value:
            return int(value)
        if channel in REAL_TIME:
            return default_sl_threshold([Channel(channel)])
        return default_sl_threshold([Channel(channel)]) if channel == "email" else 3600

    def offer_timeout(self, channel: str) -> int:
        value = self.settings.get("offer_timeout_seconds")
        return int(value) if value else default_offer_timeout(channel)


@dataclass
class WorkView:
    id: UUID
    tenant_id: UUID
    channel: str
    queue_id: UUID | None = None
    priority: int = 0
    waiting_since: datetime | None = None  # set while waiting in a queue
    queued_at: datetime | None = None  # when it entered its current queue
    offered_to: UUID | None = None
    offer_expires_at: datetime | None = None
    pending_agent: UUID | None = None
    assignee_id: UUID | None = None
    first_inbound_at: datetime | None = None
    responded: bool = False
    declined_by: dict[UUID, datetime] = field(default_factory=dict)
    breaches: set[str] = field(default_factory=set)
    version: int = 0

    @property
    def waiting(self) -> bool:
        return self.waiting_since is not None and self.queue_id is not None

    def sort_key(self) -> tuple[int, datetime, str]:
        assert self.waiting_since is not None
        return (-self.priority, self.waiting_since, str(self.id))


@dataclass(frozen=True, slots=True)
class Decision:
    tenant_id: UUID
    conversation_id: UUID
    agent_id: UUID
    timeout_seconds: int


@dataclass(frozen=True, slots=True)
class Due:
    """A timer that ran out: ``kind`` is expire (an offer), overflow (max wait or closed),
    or sla (``detail``: answer or first_response)."""

    kind: str
    tenant_id: UUID
    conversation_id: UUID
    agent_id: UUID | None = None
    queue_id: UUID | None = None
    detail: str = ""
    threshold_seconds: int = 0
    started: datetime | None = None


class RoutingState:
    """Everything routing needs to decide, for every tenant, rebuilt from events."""

    def __init__(self) -> None:
        self.agents: dict[UUID, AgentView] = {}
        self.queues: dict[UUID, QueueView] = {}
        self.work: dict[UUID, WorkView] = {}
        self._waiting: dict[Pair, list[tuple[int, datetime, str, int, UUID]]] = {}
        self._free: dict[Pair, list[tuple[datetime, str, int, UUID]]] = {}
        self._dirty: set[Pair] = set()
        self._timers: list[tuple[datetime, int, str, UUID, int]] = []
        self._timer_seq = 0
        self._compact_at: dict[tuple[bool, Pair], int] = {}
        # Resolved conversations, kept small until they come back (a customer reopens one):
        # tenant, channel, queue, assignee, priority. Closed ones are forgotten (final).
        self._dormant: dict[UUID, tuple[UUID, str, UUID | None, UUID | None, int]] = {}
        self.retired: dict[UUID, WorkView] = {}  # this batch's: for live pushes, then cleared
        self.changed_agents: set[UUID] = set()  # for live pushes: drained by the reader
        self.changed_queues: set[UUID] = set()

    # == applying events ================================================================
    def apply(self, event: Any) -> None:
        handler = _HANDLERS.get(type(event))
        if handler is not None:
            handler(self, event)

    def apply_all(self, events: Iterable[Any]) -> None:
        for event in events:
            self.apply(event)

    # -- agents ---------------------------------------------------------------------------
    def _agent_created(self, e: Agent.Created) -> None:
        agent = AgentView(e.originator_id, e.tenant_id, skill_levels(e.skills))
        self.agents[agent.id] = agent
        self._refresh_queues_of(agent)

    def _agent_changed(self, agent: AgentView) -> None:
        """Re-index an agent after anything that changes its eligibility or order."""
        agent.version += 1
        self.changed_agents.add(agent.id)
        if not agent.available:
            return
        idle = agent.idle_since or _EPOCH
        entry = (idle, str(agent.id), agent.version, agent.id)
        for pair in agent.pairs:
            if agent.free(pair[1]) > 0:
                heap = self._free.get(pair)
                if heap is None:
                    heap = self._free[pair] = []
                heapq.heappush(heap, entry)
                if len(heap) >= self._compact_at.get((False, pair), 64):
                    self._compact(self._free, pair)
                if self._waiting.get(pair):
                    self._dirty.add(pair)

    def _repair(self, agent: AgentView) -> None:
        """Recompute the (queue, channel) pairs an agent could take work from."""
        agent.pairs = [
            (queue_id, channel)
            for queue_id in sorted(agent.queues, key=str)
            if (queue := self.queues.get(queue_id)) is not None
            for channel, limit in sorted(agent.capacity.items())
            if limit > 0 and queue.serves(channel)
        ]

    def _presence(self, e: Agent.PresenceChanged) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is None:
            return
        if e.presence == AgentPresence.AVAILABLE.value and not agent.available:
            agent.idle_since = e.at
        agent.presence = e.presence
        agent.presence_reason = e.reason
        self._agent_changed(agent)

    def _skills(self, e: Agent.SkillsChanged) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is not None:
            agent.levels = skill_levels(e.skills)
            self._refresh_queues_of(agent)

    def _capacity(self, e: Agent.CapacityChanged) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is not None:
            agent.capacity = dict(e.capacity)
            self._repair(agent)
            self._agent_changed(agent)

    def _work_offered(self, e: Agent.WorkOffered) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is not None:
            agent.drop(agent.pending, e.conversation_id)
            agent.hold(agent.work, e.conversation_id, e.channel)
            agent.idle_since = e.at
            self._agent_changed(agent)

    def _work_taken(self, e: Agent.WorkTaken) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is not None:
            agent.drop(agent.pending, e.conversation_id)
            agent.hold(agent.work, e.conversation_id, e.channel)
            agent.idle_since = e.at
            self._agent_changed(agent)

    def _work_released(self, e: Agent.WorkReleased) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is None:
            return
        agent.drop(agent.work, e.conversation_id)
        agent.idle_since = e.at
        if e.reason in ("declined", "expired"):
            agent.declines.append((e.conversation_id, e.reason, e.at))
        self._agent_changed(agent)

    def _agent_erased(self, e: Agent.Erased) -> None:
        agent = self.agents.get(e.originator_id)
        if agent is not None:
            agent.presence = AgentPresence.OFFLINE.value
            self._agent_changed(agent)

    def _refresh_queues_of(self, agent: AgentView) -> None:
        agent.queues = {
            q.id
            for q in self.queues.values()
            if q.tenant_id == agent.tenant_id and _satisfies(agent.levels, q.required)
        }
        self._repair(agent)
        self._agent_changed(agent)

    # -- queues ---------------------------------------------------------------------------
    def _queue_created(self, e: Queue.Created) -> None:
        queue = QueueView(e.originator_id, e.tenant_id, e.name, list(e.channels))
        self.queues[queue.id] = queue
        self._queue_changed(queue)

    def _queue_settings(self, e: Queue.SettingsChanged) -> None:
        queue = self.queues.get(e.originator_id)
        if queue is None:
            return
        queue.settings.update(e.changes)
        for key in [k for k, v in queue.settings.items() if v is None]:
            del queue.settings[key]
        queue.required = skill_levels(list(queue.settings.get("required_skills", [])))
        self._queue_changed(queue)

    def _queue_changed(self, queue: QueueView) -> None:
        self.changed_queues.add(queue.id)
        for agent in self.agents.values():
            if agent.tenant_id != queue.tenant_id:
                continue
            eligible = _satisfies(agent.levels, queue.required)
            if eligible:
                agent.queues.add(queue.id)
            else:
                agent.queues.discard(queue.id)
            self._repair(agent)
            self._agent_changed(agent)
        for work in self.work.values():
            if work.queue_id == queue.id and work.waiting:
                self._schedule_queue_timers(work)

    # -- conversations --------------------------------------------------------------------
    def _opened(self, e: Conversation.Opened) -> None:
        self.work[e.originator_id] = WorkView(e.originator_id, e.tenant_id, e.channel)

    def _work(self, conversation_id: UUID) -> WorkView | None:
        """The conversation's view, woken from its dormant record if it was resolved."""
        work = self.work.get(conversation_id)
        if work is None:
            dormant = self._dormant.pop(conversation_id, None)
            if dormant is not None:
                tenant_id, channel, queue_id, assignee_id, priority = dormant
                work = WorkView(
                    conversation_id,
                    tenant_id,
                    channel,
                    queue_id=queue_id,
                    priority=priority,
                    assignee_id=assignee_id,
                )
                self.work[conversation_id] = work
        return work

    def _retire(self, work: WorkView, final: bool) -> None:
        """Keep a resolved conversation as a small record (closed: not at all); its heap
        entries and timers lapse, since they no longer find it."""
        del self.work[work.id]
        self.retired[work.id] = work
        if not final:
            self._dormant[work.id] = (
                work.tenant_id,
                work.channel,
                work.queue_id,
                work.assignee_id,
                work.priority,
            )

    def _received(self, e: Conversation.MessageReceived) -> None:
        work = self._work(e.originator_id)
        if work is not None and work.first_inbound_at is None:
            work.first_inbound_at = e.occurred_at
            self._schedule_first_response(work)

    def _sent(self, e: Conversation.MessageSent) -> None:
        work = self.work.get(e.originator_id)
        if work is not None:
            work.responded = True

    def _queued(self, e: Conversation.Queued) -> None:
        work = self._work(e.originator_id)
        if work is None:
            return
        old = work.queue_id
        work.queue_id = e.queue_id
        work.priority = e.priority
        work.waiting_since = e.waiting_since
        work.queued_at = e.at
        work.assignee_id = None
        work.offered_to = None
        work.offer_expires_at = None
        work.declined_by.clear()
        self._enqueue(work)
        self._schedule_queue_timers(work)
        self.changed_queues.update(q for q in (old, e.queue_id) if q is not None)

    def _enqueue(self, work: WorkView) -> None:
        """Index waiting work that is not under offer."""
        work.version += 1
        if not work.waiting or work.offered_to is not None or work.pending_agent is not None:
            return
        assert work.queue_id is not None
        pair = (work.queue_id, work.channel)
        neg, since, key = work.sort_key()
        heap = self._waiting.setdefault(pair, [])
        heapq.heappush(heap, (neg, since, key, work.version, work.id))
        if len(heap) >= self._compact_at.get((True, pair), 64):
            self._compact(self._waiting, pair)
        if self._free.get(pair):
            self._dirty.add(pair)

    def _offered(self, e: Conversation.Offered) -> None:
        work = self._work(e.originator_id)
        if work is None:
            return
        work.pending_agent = None
        work.offered_to = e.agent_id
        work.offer_expires_at = e.expires_at
        work.version += 1
        self._push_timer(e.expires_at, "expire", work)
        self._touch_queue(work)

    def _offer_declined(self, e: Conversation.OfferDeclined) -> None:
        work = self._work(e.originator_id)
        if work is None:
            return
        work.offered_to = None
        work.offer_expires_at = None
        if e.reason in ("declined", "expired"):
            work.declined_by[e.agent_id] = e.at
            self._push_timer(e.at + DECLINE_COOLDOWN, "retry", work)
        self._enqueue(work)
        self._touch_queue(work)

    def _assigned(self, e: Conversation.Assigned) -> None:
        work = self._work(e.originator_id)
        if work is None:
            return
        work.assignee_id = e.agent_id
        work.offered_to = None
        work.offer_expires_at = None
        if e.agent_id is not None:
            work.waiting_since = None
        work.version += 1
        if work.waiting:
            self._enqueue(work)
        self._touch_queue(work)

    def _left(self, e: Any) -> None:
        """Abandoned, resolved, closed, or overflowed to voicemail or callback."""
        work = self.work.get(e.originator_id)
        if work is None:
            if isinstance(e, Conversation.Closed):
                self._dormant.pop(e.originator_id, None)
            return
        if isinstance(e, Conversation.Overflowed) and e.target == "queue":
            work.offered_to = None
            work.version += 1
            return  # the Queued event that follows places it
        work.waiting_since = None
        work.offered_to = None
        work.offer_expires_at = None
        work.version += 1
        self._touch_queue(work)
        if isinstance(e, Conversation.Resolved | Conversation.Closed):
            self._retire(work, final=isinstance(e, Conversation.Closed))

    def _reopened(self, e: Conversation.Reopened) -> None:
        work = self._work(e.originator_id)
        if work is not None:
            work.responded = False
            work.first_inbound_at = None

    def _breached(self, e: Conversation.SlaBreached) -> None:
        work = self.work.get(e.originator_id)
        if work is not None:
            work.breaches.add(f"{e.kind}:{e.started.isoformat()}")

    def _purged(self, e: Tenant.Purged) -> None:
        tenant = e.originator_id
        for table in (self.agents, self.queues, self.work):
            for key in [k for k, v in table.items() if v.tenant_id == tenant]:
                del table[key]
        for key in [k for k, v in self._dormant.items() if v[0] == tenant]:
            del self._dormant[key]

    def _touch_queue(self, work: WorkView) -> None:
        if work.queue_id is not None:
            self.changed_queues.add(work.queue_id)

    # == timers ==========================================================================
    def _push_timer(self, at: datetime, kind: str, work: WorkView) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (at, self._timer_seq, kind, work.id, work.version))

    def _schedule_queue_timers(self, work: WorkView) -> None:
        queue = self.queues.get(work.queue_id) if work.queue_id else None
        if queue is None or work.queued_at is None:
            return
        max_wait = queue.settings.get("max_wait_seconds")
        if max_wait and queue.settings.get("overflow"):
            self._push_timer(work.queued_at + timedelta(seconds=int(max_wait)), "max_wait", work)
        if work.channel in REAL_TIME:
            threshold = timedelta(seconds=queue.sl_threshold(work.channel))
            self._push_timer(work.queued_at + threshold, "sla_answer", work)
        else:
            self._schedule_first_response(work)

    def _schedule_first_response(self, work: WorkView) -> None:
        queue = self.queues.get(work.queue_id) if work.queue_id else None
        if queue is None or work.first_inbound_at is None or work.channel in REAL_TIME:
            return
        threshold = timedelta(seconds=queue.sl_threshold(work.channel))
        self._push_timer(work.first_inbound_at + threshold, "sla_first_response", work)

    def due(self, now: datetime) -> list[Due]:
        """Timers that ran out by ``now`` and still apply, plus work waiting in a queue
        that is closed now (business hours) and has an overflow target."""
        found: list[Due] = []
        seen: set[tuple[str, UUID]] = set()
        while self._timers and self._timers[0][0] <= now:
            at, _, kind, work_id, _version = heapq.heappop(self._timers)
            work = self.work.get(work_id)
            if work is None or (kind, work_id) in seen:
                continue
            item = self._check_timer(kind, work, at)
            if item is not None:
                seen.add((kind, work_id))
                found.append(item)
        for queue in self.queues.values():
            hours = queue.settings.get("business_hours")
            if not hours or not queue.settings.get("overflow") or is_open(hours, now):
                continue
            for pair in [p for p in self._waiting if p[0] == queue.id]:
                for entry in self._waiting[pair]:
                    work = self.work.get(entry[4])
                    if (
                        work is not None
                        and work.waiting
                        and work.queue_id == queue.id
                        and ("closed", work.id) not in seen
                    ):
                        seen.add(("closed", work.id))
                        found.append(Due("overflow", work.tenant_id, work.id, detail="closed"))
        return found

    def _check_timer(self, kind: str, work: WorkView, at: datetime) -> Due | None:
        queue = self.queues.get(work.queue_id) if work.queue_id else None
        if kind == "expire":
            if work.offered_to is not None and work.offer_expires_at == at:
                return Due("expire", work.tenant_id, work.id, agent_id=work.offered_to)
            return None
        if kind == "retry":
            if work.waiting and work.queue_id is not None:
                self._dirty.add((work.queue_id, work.channel))
            return None
        if queue is None or work.queued_at is None:
            return None
        if kind == "max_wait":
            limit = queue.settings.get("max_wait_seconds")
            if (
                work.waiting
                and limit
                and queue.settings.get("overflow")
                and work.queued_at + timedelta(seconds=int(limit)) <= at
            ):
                return Due("overflow", work.tenant_id, work.id, detail="max_wait")
            return None
        threshold = queue.sl_threshold(work.channel)
        if kind == "sla_answer":
            started = work.queued_at
            if not work.waiting or started + timedelta(seconds=threshold) > at:
                return None
            detail = "answer"
        else:
            started = work.first_inbound_at  # type: ignore[assignment]
            if work.responded or started is None or work.queue_id is None:
                return None
            if started + timedelta(seconds=threshold) > at:
                return None
            detail = "first_response"
        if f"{detail}:{started.isoformat()}" in work.breaches:
            return None
        return Due(
            "sla",
            work.tenant_id,
            work.id,
            queue_id=queue.id,
            detail=detail,
            threshold_seconds=threshold,
            started=started,
        )

    # == deciding ========================================================================
    def has_work(self) -> bool:
        return bool(self._dirty)

    def decide(self, now: datetime, limit: int = 1000) -> list[Decision]:
        """Match waiting work to agents: the best waiting work first (highest priority,
        then longest waiting, across every queue with both waiting work and a free agent),
        each to the longest-idle eligible agent of its queue with free capacity on its
        channel. Decisions are held as pending until recorded or cancelled."""
        decisions: list[Decision] = []
        ready: list[tuple[tuple[int, datetime, str], Pair]] = []
        for pair in self._dirty:
            head = self._head(pair)
            if head is not None:
                ready.append((head.sort_key(), pair))
        self._dirty.clear()
        heapq.heapify(ready)
        skipped: dict[Pair, list[tuple[int, datetime, str, int, UUID]]] = {}
        while ready and len(decisions) < limit:
            _, pair = heapq.heappop(ready)
            work = self._head(pair)
            if work is None:
                continue
            agent = self._best_agent(pair, work, now)
            entry = heapq.heappop(self._waiting[pair])
            if agent is None:
                # nobody free for this one (they declined it lately): try the next in line
                skipped.setdefault(pair, []).append(entry)
            else:
                queue = self.queues[pair[0]]
                work.pending_agent = agent.id
                work.version += 1
                agent.hold(agent.pending, work.id, work.channel)
                self._agent_changed(agent)
                decisions.append(
                    Decision(work.tenant_id, work.id, agent.id, queue.offer_timeout(work.channel))
                )
            nxt = self._head(pair)
            if nxt is not None and self._free.get(pair):
                heapq.heappush(ready, (nxt.sort_key(), pair))
        for pair, entries in skipped.items():
            for entry in entries:
                heapq.heappush(self._waiting[pair], entry)
        self._dirty -= set(skipped)
        return decisions

    def _head(self, pair: Pair) -> WorkView | None:
        heap = self._waiting.get(pair)
        while heap:
            _, _, _, version, work_id = heap[0]
            work = self.work.get(work_id)
            if (
                work is not None
                and work.version == version
                and work.waiting
                and work.offered_to is None
                and work.pending_agent is None
                and (work.queue_id, work.channel) == pair
            ):
                return work
            heapq.heappop(heap)
        return None

    def _best_agent(self, pair: Pair, work: WorkView, now: datetime) -> AgentView | None:
        heap = self._free.get(pair)
        passed: list[tuple[datetime, str, int, UUID]] = []
        found = None
        while heap:
            entry = heap[0]
            agent = self.agents.get(entry[3])
            if (
                agent is None
                or agent.version != entry[2]
                or not agent.available
                or pair[0] not in agent.queues
                or agent.free(pair[1]) <= 0
            ):
                heapq.heappop(heap)
                continue
            declined = work.declined_by.get(agent.id)
            if declined is not None and declined + DECLINE_COOLDOWN > now:
                passed.append(heapq.heappop(heap))
                continue
            found = agent
            break
        for entry in passed:
            heapq.heappush(heap, entry)  # type: ignore[arg-type]
        return found

    def cancel(self, decision: Decision) -> None:
        """The write side refused a decision: forget it and look again."""
        work = self.work.get(decision.conversation_id)
        agent = self.agents.get(decision.agent_id)
        if agent is not None and agent.drop(agent.pending, decision.conversation_id) is not None:
            self._agent_changed(agent)
        if work is not None and work.pending_agent == decision.agent_id:
            work.pending_agent = None
            self._enqueue(work)

    def _compact(self, table: dict[Pair, list[Any]], pair: Pair) -> None:
        """Drop stale heap entries once a heap has doubled since it was last compacted."""
        heap = table[pair]
        tag = (table is self._waiting, pair)
        if len(heap) < self._compact_at.get(tag, 64):
            return
        if table is self._waiting:
            live = [
                e
                for e in heap
                if (w := self.work.get(e[4])) is not None and w.version == e[3] and w.waiting
            ]
        else:
            live = [
                e for e in heap if (a := self.agents.get(e[3])) is not None and a.version == e[2]
            ]
        heapq.heapify(live)
        table[pair] = live
        self._compact_at[tag] = max(64, 2 * len(live))

    # == reading =========================================================================
    def waiting_in(self, queue_id: UUID) -> list[WorkView]:
        return sorted(
            (w for w in self.work.values() if w.waiting and w.queue_id == queue_id),
            key=WorkView.sort_key,
        )

    def eligible_idle(self, work: WorkView) -> list[AgentView]:
        """Agents who could take this work now (for the starvation invariant)."""
        queue = self.queues.get(work.queue_id) if work.queue_id else None
        if queue is None:
            return []
        return [
            a
            for a in self.agents.values()
            if a.tenant_id == work.tenant_id
            and a.available
            and queue.id in a.queues
            and a.free(work.channel) > 0
        ]

    def snapshot(self) -> dict[str, Any]:
        """A plain, ordered picture of the state (restart tests compare two of these)."""
        return {
            "agents": {
                str(a.id): {
                    "presence": a.presence,
                    "capacity": dict(sorted(a.capacity.items())),
                    "work": sorted((str(c), ch) for c, ch in a.work.items()),
                    "idle_since": a.idle_since.isoformat() if a.idle_since else None,
                    "queues": sorted(str(q) for q in a.queues),
                    "declines": [(str(c), r, t.isoformat()) for c, r, t in a.declines],
                }
                for a in sorted(self.agents.values(), key=lambda a: str(a.id))
            },
            "queues": {
                str(q.id): {
                    "settings": q.settings,
                    "waiting": [str(w.id) for w in self.waiting_in(q.id)],
                }
                for q in sorted(self.queues.values(), key=lambda q: str(q.id))
            },
            "work": {
                str(w.id): {
                    "queue": str(w.queue_id) if w.queue_id else None,
                    "priority": w.priority,
                    "waiting_since": w.waiting_since.isoformat() if w.waiting_since else None,
                    "offered_to": str(w.offered_to) if w.offered_to else None,
                    "assignee": str(w.assignee_id) if w.assignee_id else None,
                    "breaches": sorted(w.breaches),
                }
                for w in sorted(self.work.values(), key=lambda w: str(w.id))
            },
            "dormant": {
                str(k): [str(v) if v is not None else None for v in record]
                for k, record in sorted(self._dormant.items(), key=lambda kv: str(kv[0]))
            },
        }


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _satisfies(levels: dict[str, int], required: dict[str, int]) -> bool:
    return all(levels.get(name, -1) >= level for name, level in required.items())


_HANDLERS: dict[type[Any], Any] = {
    Agent.Created: RoutingState._agent_created,
    Agent.PresenceChanged: RoutingState._presence,
    Agent.SkillsChanged: RoutingState._skills,
    Agent.CapacityChanged: RoutingState._capacity,
    Agent.WorkOffered: RoutingState._work_offered,
    Agent.WorkTaken: RoutingState._work_taken,
    Agent.WorkReleased: RoutingState._work_released,
    Agent.Erased: RoutingState._agent_erased,
    Queue.Created: RoutingState._queue_created,
    Queue.SettingsChanged: RoutingState._queue_settings,
    Conversation.Opened: RoutingState._opened,
    Conversation.MessageReceived: RoutingState._received,
    Conversation.MessageSent: RoutingState._sent,
    Conversation.Queued: RoutingState._queued,
    Conversation.Offered: RoutingState._offered,
    Conversation.OfferDeclined: RoutingState._offer_declined,
    Conversation.Assigned: RoutingState._assigned,
    Conversation.Abandoned: RoutingState._left,
    Conversation.Resolved: RoutingState._left,
    Conversation.Closed: RoutingState._left,
    Conversation.Overflowed: RoutingState._left,
    Conversation.Reopened: RoutingState._reopened,
    Conversation.SlaBreached: RoutingState._breached,
    Tenant.Purged: RoutingState._purged,
}
EVENT_TYPES = frozenset(_HANDLERS)
