"""Use cases of the channel adapters: settings, consent, calls, webchat, email threading,
and the delivery of replies. Mixed into :class:`~contact_centre.application.ContactCentre`.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import TYPE_CHECKING, Any, cast
from uuid import UUID

from contact_centre.blocks import BlockKind, VisitorBlock
from contact_centre.channel_settings import ChannelSettings, Provider, settings_id
from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation, ConversationStatus, MessageContent
from contact_centre.deliveries import (
    Delivery,
    DeliveryStatus,
    OutboundJob,
    Route,
    SendResult,
    delivery_id,
)
from contact_centre.errors import ConflictError, NotFoundError, ValidationError
from contact_centre.ids import new_id
from contact_centre.interaction import Channel, Interaction
from contact_centre.ports import IdentityNormaliser, IndexOp, IndexOpKind, WriteIndex
from contact_centre.privacy import Erased, Scope, ScopeKind, Sealed, Sealer
from contact_centre.tenancy import TenantStatus

if TYPE_CHECKING:
    from datetime import datetime

    from contact_centre.application import ContactCentre, ReceiveResult, UnitOfWork

CALL_ENDED = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})
NS_ONCE = "once"  # blind(what happened) -> "1": callbacks that must be recorded once
NS_CLAIM = "claim"  # sha256(kind, value) -> tenant id: widget keys and mailboxes
NS_BLOCK = "block"  # blind(kind, value) -> visitor block id
NS_DELIVERY_REF = "delivery-ref"  # blind(provider, provider's id) -> delivery id
NS_EMAIL_REF = "email-ref"  # blind(Message-ID) -> conversation id
NS_EMAIL_SUBJECT = "email-subject"  # blind(sender, normalised subject) -> conversation id

# Which settings fields name things that must belong to one tenant only (the SMTP
# listener and the webchat socket find the tenant from them).
CLAIMED_FIELDS = {
    Provider.WEBCHAT: ("widget", "widget_key"),
    Provider.EMAIL: ("mailbox", "addresses"),
}

_REPLY_PREFIX = re.compile(r"^\s*((re|fwd?|aw|sv|vs|antw|tr)\s*(\[\d+\])?\s*:\s*)+", re.IGNORECASE)


def claim_key(kind: str, value: str) -> str:
    """A global (not per-tenant) hash: the lookup happens before the tenant is known."""
    return hashlib.sha256(f"{kind}\x1f{value.strip().lower()}".encode()).hexdigest()


def normalise_subject(subject: str | None) -> str:
    """``Re: Fwd: AW: Invoice  5120`` → ``invoice 5120`` (the subject-threading key)."""
    text = _REPLY_PREFIX.sub("", subject or "")
    return " ".join(text.split()).lower()


def _claimed_values(provider: Provider, settings: dict[str, Any]) -> set[str]:
    spec = CLAIMED_FIELDS.get(provider)
    if spec is None:
        return set()
    kind, name = spec
    raw = settings.get(name)
    values = raw if isinstance(raw, list) else [raw] if isinstance(raw, str) else []
    return {claim_key(kind, str(v)) for v in values if v}


class ChannelCommands:
    """Channel use cases; every method runs inside the caller's unit of work."""

    if TYPE_CHECKING:  # provided by ContactCentre
        sealer: Sealer
        index: WriteIndex
        normaliser: IdentityNormaliser

        def _blind(self, tenant_id: UUID, purpose: str, *parts: str) -> str: ...

        def _seal(self, scope: Scope, value: str) -> Sealed: ...

        def _require_active_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]: ...

        def _tenant_entry(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]: ...

        def abandon_in(
            self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, reason: str
        ) -> None: ...

        def _conversation(
            self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID
        ) -> Conversation: ...

    # -- helpers ------------------------------------------------------------------------
    def _once(self, uow: UnitOfWork, tenant_id: UUID, *parts: str) -> bool:
        """Claim a one-time key; False when it was claimed before (a provider's retry)."""
        key = self._blind(tenant_id, "once", *parts)
        if uow.lookup(NS_ONCE, key) is not None:
            return False
        uow.index(IndexOp(IndexOpKind.INSERT, NS_ONCE, key, "1"))
        return True

    def _receipt(
        self, uow: UnitOfWork, tenant_id: UUID, provider: str, provider_id: str
    ) -> dict[str, str] | None:
        from contact_centre.application import NS_RECEIPT

        raw = uow.lookup(NS_RECEIPT, self._blind(tenant_id, "receipt", provider, provider_id))
        return None if raw is None else dict(json.loads(raw))

    def _open(self, sealed: Sealed | None) -> str | None:
        if sealed is None:
            return None
        value = self.sealer.open(sealed)
        return None if isinstance(value, Erased) else value

    # -- channel settings -----------------------------------------------------------------
    def configure_channel_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: Provider,
        settings: dict[str, Any],
        secret_changes: dict[str, str | None],
        required_secrets: tuple[str, ...] = (),
    ) -> list[str]:
        """Replace a provider's settings. Secrets change only where ``secret_changes`` names
        them (None removes one), so an admin can edit settings without re-sending tokens.
        Returns the names of the secrets now set."""
        self._require_active_tenant(uow, tenant_id)
        scope = Scope(tenant_id, ScopeKind.TENANT_SECRETS, tenant_id)
        try:
            current = uow.get(settings_id(tenant_id, provider), ChannelSettings, tenant_id)
        except NotFoundError:
            current = ChannelSettings.create(tenant_id, provider, uow.now)
            uow.add(current)
        secrets: dict[str, str] = {}
        opened = self._open(current.secrets)
        if opened:
            secrets = dict(json.loads(opened))
        for name, value in secret_changes.items():
            if value is None:
                secrets.pop(name, None)
            else:
                secrets[name] = value
        missing = [name for name in required_secrets if not secrets.get(name)]
        if missing:
            raise ValidationError(f"{', '.join(missing)} required (write-only: send it once)")
        old_claims = _claimed_values(provider, current.settings)
        new_claims = _claimed_values(provider, settings)
        for key in sorted(new_claims - old_claims):
            owner = uow.lookup(NS_CLAIM, key)
            if owner is not None and owner != str(tenant_id):
                spec = CLAIMED_FIELDS[provider]
                raise ConflictError(f"a {spec[1]} value is already used by another tenant")
            if owner is None:
                uow.index(IndexOp(IndexOpKind.INSERT, NS_CLAIM, key, str(tenant_id)))
        for key in sorted(old_claims - new_claims):
            uow.index(IndexOp(IndexOpKind.DELETE, NS_CLAIM, key))
        sealed = self._seal(scope, json.dumps(secrets, sort_keys=True)) if secrets else None
        current.configure(
            settings=settings, secrets=sealed, secret_fields=sorted(secrets), at=uow.now
        )
        return sorted(secrets)

    def claimed_tenant(self, kind: str, value: str) -> UUID | None:
        """The tenant that configured this widget key or mailbox address, if any."""
        key = claim_key(kind, value)
        raw = self.index.get_many(NS_CLAIM, [key]).get(key)
        return None if raw is None else UUID(raw)

    def find_thread(self, tenant_id: UUID, channel: Channel, thread_key: str) -> UUID | None:
        """The current conversation of a thread, if any (e.g. a webchat visitor's)."""
        from contact_centre.application import NS_THREAD

        key = self._blind(tenant_id, "thread", channel.value, thread_key)
        raw = self.index.get_many(NS_THREAD, [key]).get(key)
        return None if raw is None else UUID(raw)

    # -- consent ------------------------------------------------------------------------
    def record_consent_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        contact_id: UUID,
        channel: Channel,
        keyword: str,
        *,
        opted_out: bool,
    ) -> bool:
        contact = uow.get(contact_id, Contact, tenant_id)
        if opted_out:
            return contact.opt_out(channel.value, keyword, uow.now)
        return contact.opt_in(channel.value, keyword, uow.now)

    def receive_with_consent_in(
        self,
        uow: UnitOfWork,
        interaction: Interaction,
        keyword: str | None,
        opted_out: bool | None,
    ) -> ReceiveResult:
        """Record a message and, if it was a consent keyword (STOP/START), the change."""
        from contact_centre.application import Receive

        app = cast("ContactCentre", self)
        receive = Receive(app, interaction)
        result = receive(uow)
        if not result.duplicate and keyword is not None and opted_out is not None:
            self.record_consent_in(
                uow,
                interaction.tenant_id,
                result.contact_id,
                interaction.channel,
                keyword,
                opted_out=opted_out,
            )
            app.update_suppression(
                uow,
                interaction.tenant_id,
                receive.plan(uow).sender,
                interaction.channel.value,
                opted_out,
            )
        return result

    # -- calls --------------------------------------------------------------------------
    def _call(
        self, uow: UnitOfWork, tenant_id: UUID, provider: str, call_id: str
    ) -> tuple[Conversation, UUID]:
        self._require_active_tenant(uow, tenant_id)
        receipt = self._receipt(uow, tenant_id, provider, call_id)
        if receipt is None:
            raise NotFoundError("no such call")
        conversation = uow.get(UUID(receipt["conversation_id"]), Conversation, tenant_id)
        return conversation, UUID(receipt["message_id"])

    def record_call_status_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: str,
        call_id: str,
        status: str,
        duration_seconds: int | None,
    ) -> bool:
        conversation, call_ref = self._call(uow, tenant_id, provider, call_id)
        if not self._once(uow, tenant_id, "call-status", provider, call_id, status):
            return False
        conversation.record_call_status(call_ref, status, duration_seconds, uow.now)
        if status in CALL_ENDED and conversation.waiting_since is not None:
            # the caller hung up while waiting for an agent
            self.abandon_in(uow, tenant_id, conversation.id, "caller_hung_up")
        return True

    def attach_recording_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: str,
        call_id: str,
        recording_id: str,
        url: str,
        duration_seconds: int | None,
    ) -> bool:
        conversation, call_ref = self._call(uow, tenant_id, provider, call_id)
        if not self._once(uow, tenant_id, "recording", provider, recording_id):
            return False
        scope = Scope.conversation(tenant_id, conversation.id)
        sealed = self._seal(scope, json.dumps({"sid": recording_id, "url": url}))
        conversation.attach_recording(call_ref, sealed, duration_seconds, uow.now)
        return True

    def attach_transcript_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: str,
        call_id: str,
        transcript_id: str,
        text: str,
    ) -> bool:
        conversation, call_ref = self._call(uow, tenant_id, provider, call_id)
        if not self._once(uow, tenant_id, "transcript", provider, transcript_id):
            return False
        scope = Scope.conversation(tenant_id, conversation.id)
        conversation.attach_transcript(call_ref, self._seal(scope, text), uow.now)
        return True

    # -- webchat ------------------------------------------------------------------------
    def capture_visitor_network_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        ip: str | None,
        visitor_id: str,
    ) -> bool:
        """Keep the visitor's IP and cookie with the conversation, once per value pair."""
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if not self._once(
            uow, tenant_id, "visitor-network", str(conversation_id), ip or "", visitor_id
        ):
            return False
        scope = Scope(tenant_id, ScopeKind.VISITOR_NETWORK, conversation_id)
        doc = json.dumps({"ip": ip, "visitor_id": visitor_id})
        conversation.capture_visitor_network(self._seal(scope, doc), uow.now)
        return True

    def _block_key(self, tenant_id: UUID, kind: BlockKind, value: str) -> str:
        return self._blind(tenant_id, "block", kind.value, value.strip().lower())

    def block_visitor_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        kind: BlockKind,
        value: str,
        reason: str,
        by: str,
    ) -> UUID:
        self._require_active_tenant(uow, tenant_id)
        if not value.strip() or len(value) > 200:
            raise ValidationError("value must be 1-200 characters")
        if len(reason) > 500:
            raise ValidationError("reason must be at most 500 characters")
        key = self._block_key(tenant_id, kind, value)
        existing = uow.lookup(NS_BLOCK, key)
        if existing is not None:
            return UUID(existing)
        block_id = new_id()
        scope = Scope(tenant_id, ScopeKind.VISITOR_NETWORK, block_id)
        self.sealer.new_scope(scope)
        block = VisitorBlock.create(
            block_id, tenant_id, kind, self._seal(scope, value.strip()), reason, by, uow.now
        )
        uow.add(block)
        uow.index(IndexOp(IndexOpKind.INSERT, NS_BLOCK, key, str(block_id)))
        return block_id

    def lift_block_in(self, uow: UnitOfWork, tenant_id: UUID, block_id: UUID, by: str) -> None:
        self._require_active_tenant(uow, tenant_id)
        block = uow.get(block_id, VisitorBlock, tenant_id)
        value = self._open(block.value)
        block.lift(by, uow.now)
        if value is not None:
            uow.index(
                IndexOp(IndexOpKind.DELETE, NS_BLOCK, self._block_key(tenant_id, block.kind, value))
            )

    def is_blocked(self, tenant_id: UUID, ip: str | None, visitor_id: str | None) -> bool:
        keys = []
        if ip:
            keys.append(self._block_key(tenant_id, BlockKind.IP, ip))
        if visitor_id:
            keys.append(self._block_key(tenant_id, BlockKind.VISITOR, visitor_id))
        return bool(keys) and bool(self.index.get_many(NS_BLOCK, keys))

    # -- email threading ------------------------------------------------------------------
    def receive_email_in(
        self,
        uow: UnitOfWork,
        interaction: Interaction,
        references: list[str],
    ) -> ReceiveResult:
        """Thread an email: by the Message-IDs it refers to (newest first), else by its
        sender and normalised subject, else it starts a thread of its own."""
        from contact_centre.application import Receive

        tenant_id = interaction.tenant_id
        self._require_active_tenant(uow, tenant_id)
        thread_key: str | None = None
        for ref in reversed(references):
            found = uow.lookup(NS_EMAIL_REF, self._blind(tenant_id, "email-ref", ref))
            thread_key = self._thread_of(uow, tenant_id, found)
            if thread_key is not None:
                break
        subject = normalise_subject(interaction.subject)
        sender = self.normaliser.normalise(interaction.sender).address
        subject_key = self._blind(tenant_id, "email-subject", sender, subject)
        if thread_key is None and len(subject) >= 3:
            thread_key = self._thread_of(uow, tenant_id, uow.lookup(NS_EMAIL_SUBJECT, subject_key))
        if thread_key is None:
            thread_key = interaction.provider_message_id
        threaded = Interaction(
            tenant_id=tenant_id,
            channel=interaction.channel,
            direction=interaction.direction,
            provider=interaction.provider,
            provider_message_id=interaction.provider_message_id,
            sender=interaction.sender,
            occurred_at=interaction.occurred_at,
            body=interaction.body,
            recipient=interaction.recipient,
            thread_key=thread_key,
            subject=interaction.subject,
            attachments=interaction.attachments,
        )
        result = Receive(cast("ContactCentre", self), threaded)(uow)
        if not result.duplicate:
            conversation = str(result.conversation_id)
            ref_key = self._blind(tenant_id, "email-ref", interaction.provider_message_id)
            uow.index(IndexOp(IndexOpKind.UPSERT, NS_EMAIL_REF, ref_key, conversation))
            if len(subject) >= 3:
                uow.index(IndexOp(IndexOpKind.UPSERT, NS_EMAIL_SUBJECT, subject_key, conversation))
        return result

    def _thread_of(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: str | None
    ) -> str | None:
        """The thread key of a conversation that can still take messages."""
        if conversation_id is None:
            return None
        try:
            conversation = uow.get(UUID(conversation_id), Conversation, tenant_id)
        except NotFoundError:
            return None
        if conversation.status is ConversationStatus.CLOSED:
            return None
        return self._open(conversation.thread)

    # -- deliveries ---------------------------------------------------------------------
    def request_delivery_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        message_id: UUID,
        author: str,
        body: Sealed,
    ) -> UUID | None:
        """Plan the delivery of an outbound message: which provider, to whom, in which
        thread. Idempotent: a delivery exists at most once per message."""
        did = delivery_id(message_id)
        try:
            uow.get(did, Delivery, tenant_id)
        except NotFoundError:
            pass
        else:
            return did
        conversation = self._conversation(uow, tenant_id, conversation_id)
        provider = conversation.last_inbound_provider
        content_text = self._open(conversation.last_inbound_content)
        if provider is None or content_text is None:
            raise ConflictError("the conversation has no inbound message to reply to")
        content = MessageContent.from_json(content_text)
        thread = self._open(conversation.thread)
        channel = conversation.channel
        route = Route(to=content.sender, sender=content.recipient, thread=thread)
        if channel is Channel.EMAIL:
            domain = (content.recipient or "contact-centre.invalid").rpartition("@")[2]
            refs = [r for r in (thread, content.provider_message_id) if r and r.startswith("<")]
            subject = content.subject or ""
            route = Route(
                to=content.sender,
                sender=content.recipient,
                thread=thread,
                subject=subject if subject.lower().startswith("re:") else f"Re: {subject}".strip(),
                in_reply_to=content.provider_message_id,
                references=tuple(dict.fromkeys(refs)),
                message_ref=f"<{did}@{domain}>",
            )
            # The customer's reply to our message threads back here by its Message-ID.
            ref_key = self._blind(tenant_id, "email-ref", route.message_ref or "")
            uow.index(IndexOp(IndexOpKind.UPSERT, NS_EMAIL_REF, ref_key, str(conversation_id)))
            self._index_delivery_ref(uow, tenant_id, provider, route.message_ref or "", did)
        scope = Scope.conversation(tenant_id, conversation_id)
        delivery = Delivery.request(
            tenant_id,
            conversation_id,
            message_id,
            channel.value,
            provider,
            author,
            body,
            self._seal(scope, route.to_json()),
            uow.now,
        )
        uow.add(delivery)
        return did

    def _index_delivery_ref(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: str,
        provider_ref: str,
        did: UUID,
    ) -> None:
        key = self._blind(tenant_id, "delivery-ref", provider, provider_ref)
        uow.index(IndexOp(IndexOpKind.UPSERT, NS_DELIVERY_REF, key, str(did)))

    def start_delivery_in(
        self, uow: UnitOfWork, did: UUID, now: datetime | None = None
    ) -> OutboundJob | None:
        """Record the intent of the next attempt and return what the sender needs, or
        None when there is nothing to send (not due, already under way, or refused)."""
        delivery = uow.get(did, Delivery)
        tenant_id = delivery.tenant_id
        if delivery.status is not DeliveryStatus.PENDING:
            return None
        at = now or uow.now
        if delivery.due_at is not None and delivery.due_at > at:
            return None
        attempt = delivery.start_attempt(at)
        if self._tenant_entry(uow, tenant_id)["status"] != TenantStatus.ACTIVE:
            # Settled for good, so a terminated tenant's replies never clog the queue.
            delivery.fail_attempt(attempt, "tenant_inactive", False, uow.now)
            return None
        body = self._open(delivery.body)
        route_text = self._open(delivery.route)
        if body is None or route_text is None:
            delivery.fail_attempt(attempt, "erased", False, uow.now)
            return None
        conversation = uow.get(delivery.conversation_id, Conversation, tenant_id)
        contact = uow.get(conversation.contact_id, Contact, tenant_id)
        consent_channel = "sms" if delivery.channel == "voice" else delivery.channel
        if consent_channel in contact.opted_out:
            delivery.fail_attempt(attempt, "opted_out", False, uow.now)
            return None
        return OutboundJob(
            delivery_id=did,
            tenant_id=tenant_id,
            conversation_id=delivery.conversation_id,
            message_id=delivery.message_id,
            channel=delivery.channel,
            provider=delivery.provider,
            attempt=attempt,
            body=body,
            route=Route.from_json(route_text),
            author=delivery.author,
        )

    def record_send_result_in(self, uow: UnitOfWork, job: OutboundJob, result: SendResult) -> bool:
        delivery = uow.get(job.delivery_id, Delivery, job.tenant_id)
        if result.ok and result.provider_ref is not None:
            scope = Scope.conversation(job.tenant_id, job.conversation_id)
            sealed = self._seal(scope, result.provider_ref)
            self._index_delivery_ref(
                uow, job.tenant_id, job.provider, result.provider_ref, job.delivery_id
            )
            if result.provider_status in ("delivered", "read"):
                done = delivery.accept(job.attempt, sealed, "sent", uow.now)
                delivery.report_status(
                    DeliveryStatus(result.provider_status),
                    result.provider_status,
                    None,
                    None,
                    uow.now,
                )
                return done
            return delivery.accept(job.attempt, sealed, result.provider_status or "sent", uow.now)
        if result.in_doubt:
            return False  # left to the provider's status callback
        return delivery.fail_attempt(
            job.attempt, result.error_code or "error", result.transient, uow.now
        )

    def find_delivery(
        self, uow: UnitOfWork, tenant_id: UUID, provider: str, provider_ref: str
    ) -> UUID | None:
        key = self._blind(tenant_id, "delivery-ref", provider, provider_ref)
        found = uow.lookup(NS_DELIVERY_REF, key)
        return None if found is None else UUID(found)

    def report_delivery_status_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        provider: str,
        provider_ref: str | None,
        status: DeliveryStatus,
        provider_status: str,
        error_code: str | None,
        did: UUID | None = None,
    ) -> bool:
        """A provider's report about one of our messages, found by its reference there
        or (a status callback URL that names it) by the delivery id. Unknown references
        are ignored: False."""
        self._require_active_tenant(uow, tenant_id)
        if did is None and provider_ref:
            did = self.find_delivery(uow, tenant_id, provider, provider_ref)
        if did is None:
            return False
        try:
            delivery = uow.get(did, Delivery, tenant_id)
        except NotFoundError:
            return False
        if delivery.provider != provider:
            return False
        sealed = None
        if provider_ref and delivery.provider_ref is None:
            sealed = self._seal(
                Scope.conversation(tenant_id, delivery.conversation_id), provider_ref
            )
            self._index_delivery_ref(uow, tenant_id, provider, provider_ref, did)
        return delivery.report_status(status, provider_status, error_code, sealed, uow.now)
