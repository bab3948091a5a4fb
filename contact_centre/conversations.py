"""Conversations: one thread with one contact on one channel."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

from eventsourcing.domain import event

from contact_centre.errors import ConflictError, ValidationError
from contact_centre.interaction import Channel
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate


@dataclass(frozen=True, slots=True)
class MessageContent:
    """The personal part of an inbound message, sealed as one value (one encryption per
    message, one scope: the conversation's)."""

    body: str
    sender: str
    sender_name: str | None = None
    recipient: str | None = None
    subject: str | None = None
    provider_message_id: str | None = None
    attachments: tuple[tuple[str, str | None], ...] = ()  # (name, url) per attachment

    def to_json(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "body": self.body,
                "from": self.sender,
                "from_name": self.sender_name,
                "to": self.recipient,
                "subject": self.subject,
                "provider_message_id": self.provider_message_id,
                "attachments": [list(a) for a in self.attachments],
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str) -> MessageContent:
        doc = json.loads(text)
        return cls(
            body=doc["body"],
            sender=doc["from"],
            sender_name=doc.get("from_name"),
            recipient=doc.get("to"),
            subject=doc.get("subject"),
            provider_message_id=doc.get("provider_message_id"),
            attachments=tuple((a[0], a[1]) for a in doc.get("attachments", [])),
        )


class ConversationStatus(StrEnum):
    OPEN = "open"
    PENDING = "pending"  # waiting for the customer
    RESOLVED = "resolved"  # done, but a new message from the customer reopens it
    CLOSED = "closed"  # final: a new message starts a new conversation


class Conversation(TenantAggregate):
    """A thread with one contact; its content is sealed under the conversation's scope."""

    class Opened(TenantAggregate.Created):
        channel: str
        contact_id: UUID
        thread: Sealed
        at: datetime

    def __init__(
        self, tenant_id: UUID, channel: str, contact_id: UUID, thread: Sealed, at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.channel = Channel(channel)
        self.contact_id = contact_id
        self.thread = thread
        self.opened_at = at
        self.status = ConversationStatus.OPEN
        self.assignee_id: UUID | None = None
        self.message_count = 0
        self.last_activity_at = at
        self.queue_id: UUID | None = None
        self.priority = 0
        self.waiting_since: datetime | None = None  # set while queued and unanswered
        # when the current wait in a queue began; kept after an answer, so that work
        # re-queued (its agent went offline) waits from its original time
        self.queued_since: datetime | None = None
        self.offered_to: UUID | None = None  # the one agent an offer is open to
        self.offer_expires_at: datetime | None = None
        self.disposition: str | None = None
        self.sla_breaches: set[str] = set()  # "<kind>:<wait start>" already recorded
        self.content_erased = False
        # What a reply needs to find its way back: the provider and the sealed content
        # (sender, recipient, provider message id, subject) of the latest inbound message.
        self.last_inbound_provider: str | None = None
        self.last_inbound_content: Sealed | None = None

    @classmethod
    def open(
        cls,
        conversation_id: UUID,
        tenant_id: UUID,
        channel: Channel,
        contact_id: UUID,
        thread: Sealed,
        at: datetime,
    ) -> Conversation:
        return cls._create(
            cls.Opened,
            id=conversation_id,
            tenant_id=tenant_id,
            channel=channel.value,
            contact_id=contact_id,
            thread=thread,
            at=at,
        )

    def _require_not_closed(self, action: str) -> None:
        if self.status is ConversationStatus.CLOSED:
            raise ConflictError(f"cannot {action}: the conversation is closed")

    class MessageReceived(TenantAggregate.Event):
        """``content`` is a sealed :class:`MessageContent`; ``attachments`` holds only the
        non-personal metadata of each attachment (content type, size, hash)."""

        message_id: UUID
        provider: str
        sender_kind: str
        content: Sealed
        attachments: list[dict[str, Any]]
        occurred_at: datetime
        at: datetime

    def receive_message(
        self,
        message_id: UUID,
        provider: str,
        sender_kind: str,
        content: Sealed,
        attachments: list[dict[str, Any]],
        occurred_at: datetime,
        at: datetime,
    ) -> None:
        self._require_not_closed("receive a message")
        self._message_received(
            message_id=message_id,
            provider=provider,
            sender_kind=sender_kind,
            content=content,
            attachments=attachments,
            occurred_at=occurred_at,
            at=at,
        )

    @event(MessageReceived)
    def _message_received(
        self,
        message_id: UUID,
        provider: str,
        sender_kind: str,
        content: Sealed,
        attachments: list[dict[str, Any]],
        occurred_at: datetime,
        at: datetime,
    ) -> None:
        self.message_count += 1
        self.last_activity_at = max(self.last_activity_at, occurred_at)
        self.last_inbound_provider = provider
        self.last_inbound_content = content

    class MessageSent(TenantAggregate.Event):
        message_id: UUID
        author: str
        body: Sealed
        at: datetime

    def send_message(self, message_id: UUID, author: str, body: Sealed, at: datetime) -> None:
        self._require_not_closed("reply")
        self._message_sent(message_id=message_id, author=author, body=body, at=at)

    @event(MessageSent)
    def _message_sent(self, message_id: UUID, author: str, body: Sealed, at: datetime) -> None:
        self.message_count += 1
        self.last_activity_at = max(self.last_activity_at, at)

    class NoteAdded(TenantAggregate.Event):
        note_id: UUID
        author: str
        body: Sealed
        at: datetime

    def add_note(self, note_id: UUID, author: str, body: Sealed, at: datetime) -> None:
        self._note_added(note_id=note_id, author=author, body=body, at=at)

    @event(NoteAdded)
    def _note_added(self, note_id: UUID, author: str, body: Sealed, at: datetime) -> None:
        pass

    class Assigned(TenantAggregate.Event):
        agent_id: UUID | None
        by: str
        at: datetime

    def assign(self, agent_id: UUID | None, by: str, at: datetime) -> None:
        self._require_not_closed("assign")
        if agent_id == self.assignee_id:
            return
        self._assigned(agent_id=agent_id, by=by, at=at)

    @event(Assigned)
    def _assigned(self, agent_id: UUID | None, by: str, at: datetime) -> None:
        self.assignee_id = agent_id
        self.offered_to = None
        self.offer_expires_at = None
        if agent_id is not None:
            self.waiting_since = None

    class Queued(TenantAggregate.Event):
        """Placed in a queue to wait for an agent. ``waiting_since`` is when the wait
        began: the time of queueing, or the original time when work is re-queued."""

        queue_id: UUID
        priority: int
        reason: str
        waiting_since: datetime
        at: datetime

    def queue(
        self,
        queue_id: UUID,
        priority: int,
        reason: str,
        at: datetime,
        waiting_since: datetime | None = None,
    ) -> None:
        self._require_not_closed("queue")
        if not 0 <= priority <= 100:
            raise ValidationError("priority must be between 0 and 100")
        self._queued(
            queue_id=queue_id,
            priority=priority,
            reason=reason,
            waiting_since=waiting_since or at,
            at=at,
        )

    @event(Queued)
    def _queued(
        self, queue_id: UUID, priority: int, reason: str, waiting_since: datetime, at: datetime
    ) -> None:
        self.queue_id = queue_id
        self.priority = priority
        self.assignee_id = None
        self.waiting_since = waiting_since
        self.queued_since = waiting_since
        self.offered_to = None
        self.offer_expires_at = None

    class Abandoned(TenantAggregate.Event):
        """The customer left while waiting, before any agent answered."""

        reason: str
        at: datetime

    def abandon(self, reason: str, at: datetime) -> None:
        if self.waiting_since is None:
            raise ConflictError("only a conversation waiting in a queue can be abandoned")
        self._abandoned(reason=reason, at=at)

    @event(Abandoned)
    def _abandoned(self, reason: str, at: datetime) -> None:
        self.waiting_since = None
        self.offered_to = None
        self.offer_expires_at = None

    # -- routing: offers, transfers, wrap-up, overflow, SLA ---------------------------------
    class Offered(TenantAggregate.Event):
        """Offered to one agent while waiting; the offer lapses at ``expires_at``."""

        agent_id: UUID
        expires_at: datetime
        at: datetime

    def offer(self, agent_id: UUID, expires_at: datetime, at: datetime) -> None:
        self._require_not_closed("offer")
        if self.waiting_since is None:
            raise ConflictError("only a conversation waiting in a queue can be offered")
        if self.offered_to is not None:
            raise ConflictError("the conversation is already offered to an agent")
        self._offered(agent_id=agent_id, expires_at=expires_at, at=at)

    @event(Offered)
    def _offered(self, agent_id: UUID, expires_at: datetime, at: datetime) -> None:
        self.offered_to = agent_id
        self.offer_expires_at = expires_at

    class OfferDeclined(TenantAggregate.Event):
        """An offer ended without an answer: ``reason`` is declined (by the agent),
        expired (not accepted in time) or withdrawn (the agent left, or the conversation
        went elsewhere). The conversation waits on."""

        agent_id: UUID
        reason: str
        at: datetime

    def end_offer(self, agent_id: UUID, reason: str, at: datetime) -> None:
        if self.offered_to != agent_id:
            raise ConflictError("there is no open offer of this conversation to that agent")
        self._offer_declined(agent_id=agent_id, reason=reason, at=at)

    @event(OfferDeclined)
    def _offer_declined(self, agent_id: UUID, reason: str, at: datetime) -> None:
        self.offered_to = None
        self.offer_expires_at = None

    class Transferred(TenantAggregate.Event):
        """Handed on by its agent to a queue or to another agent (``target`` is "queue"
        or "agent"); the note, if any, is a NoteAdded event beside this one."""

        from_agent_id: UUID | None
        target: str
        target_id: UUID
        note_id: UUID | None
        at: datetime

    def record_transfer(
        self,
        from_agent_id: UUID | None,
        target: str,
        target_id: UUID,
        note_id: UUID | None,
        at: datetime,
    ) -> None:
        self._require_not_closed("transfer")
        self._transferred(
            from_agent_id=from_agent_id, target=target, target_id=target_id, note_id=note_id, at=at
        )

    @event(Transferred)
    def _transferred(
        self,
        from_agent_id: UUID | None,
        target: str,
        target_id: UUID,
        note_id: UUID | None,
        at: datetime,
    ) -> None:
        pass

    class WrappedUp(TenantAggregate.Event):
        """The agent's after-contact work: a disposition code of the tenant's (a label,
        never personal data)."""

        agent_id: UUID
        disposition: str
        at: datetime

    def wrap_up(self, agent_id: UUID, disposition: str, at: datetime) -> None:
        self._require_not_closed("wrap up")
        if self.assignee_id != agent_id:
            raise ConflictError("only the conversation's agent wraps it up")
        self._wrapped_up(agent_id=agent_id, disposition=disposition, at=at)

    @event(WrappedUp)
    def _wrapped_up(self, agent_id: UUID, disposition: str, at: datetime) -> None:
        self.disposition = disposition

    class Overflowed(TenantAggregate.Event):
        """Left its queue unanswered because it waited longer than the queue's maximum
        or the queue was closed (``reason``: max_wait or closed). ``target`` is queue
        (it is Queued there next), voicemail or callback (the wait ends)."""

        from_queue_id: UUID
        target: str
        target_queue_id: UUID | None
        reason: str
        at: datetime

    def overflow(
        self, target: str, target_queue_id: UUID | None, reason: str, at: datetime
    ) -> None:
        if self.waiting_since is None or self.queue_id is None:
            raise ConflictError("only waiting work overflows")
        self._overflowed(
            from_queue_id=self.queue_id,
            target=target,
            target_queue_id=target_queue_id,
            reason=reason,
            at=at,
        )

    @event(Overflowed)
    def _overflowed(
        self,
        from_queue_id: UUID,
        target: str,
        target_queue_id: UUID | None,
        reason: str,
        at: datetime,
    ) -> None:
        self.offered_to = None
        self.offer_expires_at = None
        if target != "queue":
            self.waiting_since = None

    class SlaBreached(TenantAggregate.Event):
        """A service-level timer ran out: ``kind`` answer (no agent took it within the
        queue's threshold) or first_response (no reply within it). ``started`` is when
        the timer began (one breach per kind and start)."""

        queue_id: UUID
        kind: str
        threshold_seconds: int
        waited_seconds: int
        started: datetime
        at: datetime

    def breach_sla(
        self,
        queue_id: UUID,
        kind: str,
        threshold_seconds: int,
        started: datetime,
        at: datetime,
    ) -> bool:
        key = f"{kind}:{started.isoformat()}"
        if key in self.sla_breaches:
            return False
        self._sla_breached(
            queue_id=queue_id,
            kind=kind,
            threshold_seconds=threshold_seconds,
            waited_seconds=int((at - started).total_seconds()),
            started=started,
            at=at,
        )
        return True

    @event(SlaBreached)
    def _sla_breached(
        self,
        queue_id: UUID,
        kind: str,
        threshold_seconds: int,
        waited_seconds: int,
        started: datetime,
        at: datetime,
    ) -> None:
        self.sla_breaches.add(f"{kind}:{started.isoformat()}")

    class MarkedPending(TenantAggregate.Event):
        by: str
        at: datetime

    @event(MarkedPending)
    def _marked_pending(self, by: str, at: datetime) -> None:
        self.status = ConversationStatus.PENDING

    class Resolved(TenantAggregate.Event):
        by: str
        at: datetime

    @event(Resolved)
    def _resolved(self, by: str, at: datetime) -> None:
        self.status = ConversationStatus.RESOLVED
        self.waiting_since = None
        self.offered_to = None
        self.offer_expires_at = None

    class Reopened(TenantAggregate.Event):
        by: str
        reason: str
        at: datetime

    @event(Reopened)
    def _reopened(self, by: str, reason: str, at: datetime) -> None:
        self.status = ConversationStatus.OPEN

    class Closed(TenantAggregate.Event):
        by: str
        at: datetime

    @event(Closed)
    def _closed(self, by: str, at: datetime) -> None:
        self.status = ConversationStatus.CLOSED
        self.waiting_since = None
        self.offered_to = None
        self.offer_expires_at = None

    def change_status(self, target: ConversationStatus, by: str, at: datetime) -> bool:
        """Move to ``target``; return False when already there. Closed is final."""
        if target is self.status:
            return False
        self._require_not_closed("change the status")
        if target is ConversationStatus.OPEN:
            self._reopened(by=by, reason="manual", at=at)
        elif target is ConversationStatus.PENDING:
            self._marked_pending(by=by, at=at)
        elif target is ConversationStatus.RESOLVED:
            self._resolved(by=by, at=at)
        else:
            self._closed(by=by, at=at)
        return True

    def reopen_for_customer(self, at: datetime) -> None:
        """A customer wrote again on a pending or resolved conversation."""
        if self.status in (ConversationStatus.PENDING, ConversationStatus.RESOLVED):
            self._reopened(by="contact", reason="customer_replied", at=at)

    class ContentErased(TenantAggregate.Event):
        """The conversation's content was destroyed (its scope key shredded). The
        conversation is closed first: new messages on its thread start a new one."""

        reason: str
        request_id: UUID | None
        at: datetime

    def erase_content(self, reason: str, request_id: UUID | None, at: datetime) -> None:
        if self.content_erased:
            raise ConflictError("this conversation's content has already been erased")
        if self.status is not ConversationStatus.CLOSED:
            self._closed(by="system:erasure", at=at)
        self._content_erased(reason=reason, request_id=request_id, at=at)

    @event(ContentErased)
    def _content_erased(self, reason: str, request_id: UUID | None, at: datetime) -> None:
        self.content_erased = True

    class ContactChanged(TenantAggregate.Event):
        """The conversation now belongs to ``contact_id`` (its contact was merged into
        that one); ``previous_contact_id`` is the merged-away contact."""

        contact_id: UUID
        previous_contact_id: UUID
        at: datetime

    def change_contact(self, contact_id: UUID, at: datetime) -> None:
        if contact_id == self.contact_id:
            return
        self._contact_changed(contact_id=contact_id, previous_contact_id=self.contact_id, at=at)

    @event(ContactChanged)
    def _contact_changed(self, contact_id: UUID, previous_contact_id: UUID, at: datetime) -> None:
        self.contact_id = contact_id

    # -- calls (voice) ----------------------------------------------------------------
    class CallStatusChanged(TenantAggregate.Event):
        """A call of this conversation moved on (ringing, answered, completed, no-answer,
        busy, failed, canceled). ``call_ref`` is the message id of the call's inbound
        message; durations are seconds, known once the call ended."""

        call_ref: UUID
        status: str
        duration_seconds: int | None
        at: datetime

    def record_call_status(
        self, call_ref: UUID, status: str, duration_seconds: int | None, at: datetime
    ) -> None:
        self._call_status_changed(
            call_ref=call_ref, status=status, duration_seconds=duration_seconds, at=at
        )

    @event(CallStatusChanged)
    def _call_status_changed(
        self, call_ref: UUID, status: str, duration_seconds: int | None, at: datetime
    ) -> None:
        pass

    class RecordingAttached(TenantAggregate.Event):
        """A call's recording: ``recording`` is the sealed JSON {"sid", "url"}."""

        call_ref: UUID
        recording: Sealed
        duration_seconds: int | None
        at: datetime

    def attach_recording(
        self, call_ref: UUID, recording: Sealed, duration_seconds: int | None, at: datetime
    ) -> None:
        self._recording_attached(
            call_ref=call_ref, recording=recording, duration_seconds=duration_seconds, at=at
        )

    @event(RecordingAttached)
    def _recording_attached(
        self, call_ref: UUID, recording: Sealed, duration_seconds: int | None, at: datetime
    ) -> None:
        self.last_activity_at = max(self.last_activity_at, at)

    class TranscriptAttached(TenantAggregate.Event):
        """The sealed text of a call recording's transcription."""

        call_ref: UUID
        transcript: Sealed
        at: datetime

    def attach_transcript(self, call_ref: UUID, transcript: Sealed, at: datetime) -> None:
        self._transcript_attached(call_ref=call_ref, transcript=transcript, at=at)

    @event(TranscriptAttached)
    def _transcript_attached(self, call_ref: UUID, transcript: Sealed, at: datetime) -> None:
        self.last_activity_at = max(self.last_activity_at, at)

    # -- webchat ----------------------------------------------------------------------
    class VisitorNetworkCaptured(TenantAggregate.Event):
        """A webchat visitor's IP address and cookie, sealed together as JSON under the
        conversation's visitor-network scope (admins only; used to block abuse)."""

        network: Sealed
        at: datetime

    def capture_visitor_network(self, network: Sealed, at: datetime) -> None:
        self._visitor_network_captured(network=network, at=at)

    @event(VisitorNetworkCaptured)
    def _visitor_network_captured(self, network: Sealed, at: datetime) -> None:
        pass
