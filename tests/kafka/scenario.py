"""A contact-centre day in miniature, written straight through the application service.

Commands go through ``run_batch`` as the HTTP writer sends them (many per transaction),
over two tenants: interactions on four channels from a pool of senders (so conversations
grow), replies, notes, status changes, assignments, corrected names, linked identities,
tokens issued and revoked, agents and queues.
"""

from __future__ import annotations

import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from contact_centre.application import ContactCentre, Receive, ReceiveResult, UnitOfWork
from contact_centre.conversations import ConversationStatus
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from contact_centre.tenancy import Role

Command = Callable[[UnitOfWork], Any]


@dataclass
class TenantState:
    tenant_id: UUID
    agents: list[UUID] = field(default_factory=list)
    conversations: list[UUID] = field(default_factory=list)
    contacts: list[UUID] = field(default_factory=list)
    tokens: list[UUID] = field(default_factory=list)


class Scenario:
    """Deterministic choices (seeded); ids and ciphertexts are random as in production."""

    def __init__(self, app: ContactCentre, seed: int = 4) -> None:
        self.app = app
        self.rng = random.Random(seed)
        self.tenants: list[TenantState] = []
        self.plaintexts: list[str] = []  # personal values written, for plaintext scans
        self.start = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
        self.tick = 0
        self.commands = 0

    def _now(self) -> datetime:
        self.tick += 1
        return self.start + timedelta(seconds=self.tick)

    def setup(self, tenants: int = 2) -> None:
        for t in range(tenants):
            tenant_id, _ = self.app.register_tenant(f"Tenant {t}")
            state = TenantState(tenant_id)
            self.tenants.append(state)
            for a in range(2):
                name, email = f"Agent Quillfeather{t}{a}", f"agent{t}{a}@example.org"
                self.plaintexts += [name, email]
                agent_id, _ = self.app.run(
                    lambda uow, n=name, e=email, tid=tenant_id: self.app.create_agent_in(
                        uow, tid, n, e, ["billing:3", "sms:1"]
                    )
                )
                state.agents.append(agent_id)
            for q, channels in enumerate([[Channel.SMS, Channel.WHATSAPP], [Channel.EMAIL]]):
                self.app.run(
                    lambda uow, q=q, c=channels, tid=tenant_id: self.app.create_queue_in(
                        uow, tid, f"Queue {q}", c
                    )
                )
            issued, _ = self.app.run(
                lambda uow, tid=tenant_id: self.app.issue_token_in(uow, tid, Role.SUPERVISOR, "s")
            )
            state.tokens.append(issued.token_id)

    # -- commands -------------------------------------------------------------------
    def _interaction(self, state: TenantState) -> Receive:
        rng = self.rng
        channel = rng.choice([Channel.SMS, Channel.WHATSAPP, Channel.EMAIL, Channel.WEBCHAT])
        who = rng.randrange(40)
        name = f"Ottoline Brackenbury{who}"
        body = f"kumquat parcel {secrets.token_hex(4)} for {name}"
        if channel in (Channel.SMS, Channel.WHATSAPP):
            sender = Identity(IdentityKind.PHONE, f"+447700900{who:03d}", name)
            recipient: Identity | None = Identity(IdentityKind.PHONE, "+442071838750")
        elif channel is Channel.EMAIL:
            sender = Identity(IdentityKind.EMAIL, f"ottoline{who}@example.net", name)
            recipient = Identity(IdentityKind.EMAIL, "help@example.com")
        else:
            sender = Identity(IdentityKind.VISITOR, f"visitor-{who}", name)
            recipient = None
        self.plaintexts += [name, body, sender.address]
        return Receive(
            self.app,
            Interaction(
                tenant_id=state.tenant_id,
                channel=channel,
                direction=Direction.INBOUND,
                provider="test",
                provider_message_id=f"m-{secrets.token_hex(8)}",
                sender=sender,
                recipient=recipient,
                body=body,
                subject="Order" if channel is Channel.EMAIL else None,
                occurred_at=self._now(),
            ),
        )

    def _other(self, state: TenantState) -> Command | None:
        rng, app = self.rng, self.app
        if not state.conversations:
            return None
        tid = state.tenant_id
        conversation = rng.choice(state.conversations)
        roll = rng.random()
        if roll < 0.25:
            body = f"reply damson {secrets.token_hex(4)}"
            self.plaintexts.append(body)
            return lambda uow: app.reply_in(uow, tid, conversation, "agent:x", body)
        if roll < 0.45:
            body = f"note greengage {secrets.token_hex(4)}"
            self.plaintexts.append(body)
            return lambda uow: app.add_note_in(uow, tid, conversation, "agent:x", body)
        if roll < 0.65:
            status = rng.choice(list(ConversationStatus))
            return lambda uow: app.change_status_in(uow, tid, conversation, status, "agent:x")
        if roll < 0.8:
            agent = rng.choice([*state.agents, None])
            return lambda uow: app.assign_in(uow, tid, conversation, agent, "agent:x")
        if not state.contacts:
            return None
        contact = rng.choice(state.contacts)
        if roll < 0.9:
            name = f"Corrected Pemberton{rng.randrange(1000)}"
            self.plaintexts.append(name)
            return lambda uow: app.correct_contact_in(uow, tid, contact, name, "agent")
        email = f"linked{secrets.token_hex(3)}@example.org"
        self.plaintexts.append(email)
        identity = Identity(IdentityKind.EMAIL, email)
        return lambda uow: app.link_identity_in(uow, tid, contact, identity)

    def step(self, commands: int = 50, batch: int = 25) -> None:
        """Run ``commands`` more commands, ``batch`` per transaction."""
        done = 0
        while done < commands:
            chosen: list[Command] = []
            for _ in range(min(batch, commands - done)):
                state = self.rng.choice(self.tenants)
                other = self._other(state) if self.rng.random() < 0.4 else None
                chosen.append(other or self._interaction(state))
            outcomes = self.app.run_batch(chosen)
            for command, outcome in zip(chosen, outcomes, strict=True):
                if isinstance(command, Receive) and isinstance(outcome.result, ReceiveResult):
                    state = next(s for s in self.tenants if s.tenant_id == command.tenant_id)
                    if outcome.result.conversation_id not in state.conversations:
                        state.conversations.append(outcome.result.conversation_id)
                    if outcome.result.contact_id not in state.contacts:
                        state.contacts.append(outcome.result.contact_id)
            done += len(chosen)
            self.commands += len(chosen)
        if self.rng.random() < 0.2:
            state = self.rng.choice(self.tenants)
            if state.tokens:
                token = state.tokens.pop()
                self.app.run(lambda uow: self.app.revoke_token_in(uow, state.tenant_id, token))
