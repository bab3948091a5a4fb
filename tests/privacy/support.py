"""A runtime with a manual clock, and the ways the privacy tests drive it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from contact_centre.clock import ManualClock
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.runtime import Runtime

T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)


def months(n: int) -> timedelta:
    """Enough days to be past n calendar months from T0 (for moving the clock)."""
    return timedelta(days=31 * n + 1)


class World:
    """One tenant on a runtime whose clock only moves when told to."""

    def __init__(self, rt: Runtime, clock: ManualClock, name: str = "Acme") -> None:
        self.rt, self.clock, self.app = rt, clock, rt.app
        self.tenant, self.admin = self.app.register_tenant(name)

    def at(self, moment: datetime) -> World:
        self.clock.set(moment)
        return self

    def later(self, delta: timedelta) -> World:
        self.clock.advance(delta)
        return self

    def run(self, command: Any) -> Any:
        result, _ = self.app.run(command)
        self.rt.catch_up()
        return result

    def message(
        self,
        channel: Channel,
        kind: IdentityKind,
        address: str,
        body: str,
        name: str | None = None,
        thread: str | None = None,
    ) -> Any:
        result = self.app.receive(
            Interaction(
                tenant_id=self.tenant,
                channel=channel,
                direction=Direction.INBOUND,
                provider="test",
                provider_message_id=str(uuid4()),
                sender=Identity(kind, address, name),
                body=body,
                occurred_at=self.clock.now(),
                thread_key=thread,
            )
        )
        self.rt.catch_up()
        return result

    def sweep(self, **kw: Any) -> Any:
        report = self.rt.privacy.sweep(self.clock.now(), **kw)
        self.rt.catch_up()
        return report

    def scope_status(self, scope: str) -> str | None:
        with self.rt.readdb.read() as tx:
            tx.execute("SELECT status FROM rm_retention_scopes WHERE scope_id = ?", (scope,))
            row = tx.fetchone()
        return None if row is None else str(row[0])

    def readable(self, scope: str) -> bool:
        return not self.rt.vault.is_destroyed(scope)


def scope(kind: str, subject: UUID) -> str:
    return f"{kind}:{subject}"
