"""A routing desk driven command by command with a manual clock (no threads running):
the test moves time, feeds the workflows (``catch_up``) and ticks the router itself."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

from contact_centre.application import UnitOfWork
from contact_centre.clock import ManualClock
from contact_centre.conversations import Conversation
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from contact_centre.staff import Agent, AgentPresence
from infra.runtime import Runtime

T0 = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)  # a Monday


class Desk:
    def __init__(self, rt: Runtime, clock: ManualClock, tenant_id: UUID | None = None) -> None:
        self.rt, self.clock, self.app = rt, clock, rt.app
        if tenant_id is None:
            tenant_id, _ = self.app.register_tenant(f"Desk {uuid4().hex[:6]}")
        self.tenant = tenant_id
        self._numbers = 0

    @property
    def now(self) -> datetime:
        return self.clock.now()

    def at(self, seconds: float) -> None:
        self.clock.set(T0 + timedelta(seconds=seconds))

    def later(self, seconds: float) -> None:
        self.clock.advance(timedelta(seconds=seconds))

    def do(self, command: Callable[[UnitOfWork], Any]) -> Any:
        result, _ = self.app.run(command)
        self.rt.catch_up()
        return result

    def tick(self) -> int:
        assert self.rt.router is not None
        done = 0
        for _ in range(10):  # timers' and offers' events can make more work due
            self.rt.catch_up()
            step = self.rt.router.tick(self.clock.now())
            done += step
            if step == 0:
                break
        self.rt.catch_up()
        return done

    # -- set-up --------------------------------------------------------------------------
    def queue(self, name: str, channels: list[Channel] | None = None, **settings: Any) -> UUID:
        t = self.tenant
        queue_id: UUID = self.do(lambda u: self.app.create_queue_in(u, t, name, channels or []))
        if settings:
            self.do(lambda u: self.app.configure_queue_in(u, t, queue_id, settings))
        return queue_id

    def agent(
        self,
        name: str,
        skills: list[str] | None = None,
        capacity: dict[str, int] | None = None,
        available: bool = True,
    ) -> UUID:
        t = self.tenant
        agent_id: UUID = self.do(lambda u: self.app.create_agent_in(u, t, name, None, skills or []))
        if capacity:
            self.do(lambda u: self.app.set_capacity_in(u, t, agent_id, capacity))
        if available:
            self.presence(agent_id, AgentPresence.AVAILABLE)
        return agent_id

    def presence(self, agent_id: UUID, presence: AgentPresence, reason: str | None = None) -> None:
        self.do(lambda u: self.app.set_presence_in(u, self.tenant, agent_id, presence, reason))

    def arrive(
        self,
        channel: Channel = Channel.WEBCHAT,
        body: str = "Hello",
        to: str | None = None,
        sender: str | None = None,
    ) -> UUID:
        self._numbers += 1
        kind = IdentityKind.EMAIL if channel is Channel.EMAIL else IdentityKind.PHONE
        if sender is None:
            sender = (
                f"c{uuid4().hex[:8]}@example.com"
                if kind is IdentityKind.EMAIL
                else f"+44770090{self._numbers % 10000:04d}"
            )
        result = self.app.receive(
            Interaction(
                tenant_id=self.tenant,
                channel=channel,
                direction=Direction.INBOUND,
                provider="test",
                provider_message_id=str(uuid4()),
                sender=Identity(kind, sender),
                recipient=Identity(kind, to) if to else None,
                body=body,
                occurred_at=self.clock.now(),
            )
        )
        self.rt.catch_up()
        return result.conversation_id

    # -- reading -------------------------------------------------------------------------
    def conversation(self, conversation_id: UUID) -> Conversation:
        return self.app.repository.get(conversation_id)  # type: ignore[no-any-return]

    def agent_state(self, agent_id: UUID) -> Agent:
        return self.app.repository.get(agent_id)  # type: ignore[no-any-return]

    def offered_to(self, conversation_id: UUID) -> UUID | None:
        return self.conversation(conversation_id).offered_to
