"""Voice routing: when an agent accepts an offered call, the waiting call is connected to
the agent's device (the Twilio adapter redirects it to TwiML that dials the agent)."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any, Protocol
from uuid import UUID

from contact_centre.application import UnitOfWork
from contact_centre.conversations import Conversation, MessageContent
from contact_centre.interaction import Channel
from workflows.base import Policy, reacts_to

log = logging.getLogger(__name__)


class CallConnector(Protocol):
    """Connects a provider's waiting call to an agent; returns whether it was done."""

    def connect(self, tenant_id: UUID, call_sid: str, agent_id: UUID) -> bool: ...


class VoiceConnect(Policy):
    name = "voice-connect"

    def __init__(
        self, connectors: dict[str, CallConnector], max_age: timedelta = timedelta(minutes=2)
    ) -> None:
        self.connectors = connectors
        self.max_age = max_age  # an older assignment is history: that call is long over
        self.connected = 0

    @reacts_to(Conversation.Assigned)
    def _assigned(self, uow: UnitOfWork, e: Any, position: int) -> None:
        if e.agent_id is None or uow.now - e.at > self.max_age:
            return
        conversation = uow.get(e.originator_id, Conversation, e.tenant_id)
        provider = conversation.last_inbound_provider
        connector = self.connectors.get(provider or "")
        if conversation.channel is not Channel.VOICE or connector is None:
            return
        if conversation.last_inbound_content is None:
            return
        opened = uow.app.sealer.open(conversation.last_inbound_content)
        if not isinstance(opened, str):
            return
        call_sid = MessageContent.from_json(opened).provider_message_id
        if call_sid and connector.connect(e.tenant_id, call_sid, e.agent_id):
            self.connected += 1
