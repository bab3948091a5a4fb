"""SLA alerts: each recorded breach is posted to the tenant's supervisor Slack channel.

The breach itself is recorded by the router (``Conversation.SlaBreached``, once per timer);
this policy reacts to each breach exactly once (its position is tracked with the events),
drops repeats for the same conversation and timer kind, and keeps to a rate per tenant so
a queue melting down sends a handful of alerts, not hundreds. An alert names the queue,
the wait and the threshold, and links to the queue's dashboard: no personal data.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from datetime import datetime, timedelta
from typing import Any, Protocol
from uuid import UUID

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation
from contact_centre.errors import NotFoundError
from contact_centre.staff import Queue
from workflows.base import Policy, reacts_to

log = logging.getLogger(__name__)


class AlertSink(Protocol):
    """Where alerts go (the Slack adapter); returns whether it was delivered."""

    def post(self, tenant_id: UUID, text: str) -> bool: ...


class SlaAlerts(Policy):
    name = "sla-alerts"

    def __init__(
        self,
        sink: AlertSink,
        base_url: str,
        per_minute: int = 6,
        max_age: timedelta = timedelta(minutes=30),
    ) -> None:
        self.sink = sink
        self.base_url = base_url.rstrip("/")
        self.per_minute = per_minute
        self.max_age = max_age  # an older breach (the policy was just installed) is history
        self._recent: dict[UUID, deque[datetime]] = {}
        self._seen: OrderedDict[tuple[UUID, str], None] = OrderedDict()
        self.sent = 0
        self.suppressed = 0

    @reacts_to(Conversation.SlaBreached)
    def _breached(self, uow: UnitOfWork, e: Any, position: int) -> None:
        if uow.now - e.at > self.max_age:
            return
        key = (e.originator_id, e.kind)
        if key in self._seen:
            self.suppressed += 1
            return
        self._seen[key] = None
        if len(self._seen) > 10_000:
            self._seen.popitem(last=False)
        if not self._allow(e.tenant_id, uow.now):
            self.suppressed += 1
            log.info("sla alert for tenant %s rate-limited", e.tenant_id)
            return
        try:
            name = uow.get(e.queue_id, Queue, e.tenant_id).name
        except NotFoundError:
            name = "(deleted queue)"
        what = "waiting for an agent" if e.kind == "answer" else "waiting for a first reply"
        text = (
            f":rotating_light: SLA breach in queue *{name}*: a {what} for "
            f"{_duration(e.waited_seconds)} (threshold {_duration(e.threshold_seconds)}). "
            f"{self.base_url}/v1/queues/state?queue_id={e.queue_id}"
        )
        if self.sink.post(e.tenant_id, text):
            self.sent += 1

    def _allow(self, tenant_id: UUID, now: datetime) -> bool:
        window = self._recent.setdefault(tenant_id, deque())
        while window and now - window[0] >= timedelta(minutes=1):
            window.popleft()
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        return True


def _duration(seconds: int) -> str:
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m {seconds % 60}s"
    return f"{seconds // 3600}h {seconds % 3600 // 60}m"
