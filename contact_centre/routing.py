"""Routing use cases: rules that choose a queue, offers, accept and decline, transfers,
wrap-up, overflow and SLA breaches. Mixed into :class:`~contact_centre.application.ContactCentre`.

Two invariants are kept by the aggregates themselves, so they hold across any number of
processes (a stale copy fails its save on the version and the command runs again):

- a conversation is offered to at most one agent at a time (``Conversation.offered_to``);
- an agent never holds more conversations of a channel than its capacity
  (``Agent.work``: offers and assignments both count).

Every command that moves work between agents changes both aggregates in one unit of work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, cast
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import event

from contact_centre.contacts import Contact
from contact_centre.conversations import Conversation, ConversationStatus, MessageContent
from contact_centre.errors import ConflictError, NotFoundError, ValidationError
from contact_centre.interaction import Channel, Identity, IdentityKind
from contact_centre.ports import IdentityNormaliser
from contact_centre.privacy import Scope, ScopeKind, Sealed, Sealer
from contact_centre.staff import Agent, AgentPresence, Queue, default_offer_timeout
from contact_centre.tenanted import TenantAggregate

if TYPE_CHECKING:
    from contact_centre.application import UnitOfWork

MAX_RULES = 200
_DISPOSITION = re.compile(r"^[a-z0-9][a-z0-9_.:-]{0,63}$")
RULE_MATCH_KEYS = frozenset({"channels", "recipients", "keywords", "attributes"})


def routing_rules_id(tenant_id: UUID) -> UUID:
    return uuid5(NAMESPACE_URL, f"contact-centre:routing-rules:{tenant_id}")


@dataclass(frozen=True, slots=True)
class RoutingFacts:
    """What the rules look at for new work. ``attributes`` is None for a restricted
    contact (art. 18/21): no attribute rule may match it."""

    channel: str
    recipient: str | None
    text: str
    attributes: dict[str, Any] | None


def check_rules(doc: Any) -> dict[str, Any]:
    """``{"rules": [{"name", "match": {...}, "queue_id", "priority"?}], "default_queue_id"}``."""
    if not isinstance(doc, dict) or set(doc) - {"rules", "default_queue_id"}:
        raise ValidationError("routing rules are {rules, default_queue_id}")
    rules = doc.get("rules", [])
    if not isinstance(rules, list) or len(rules) > MAX_RULES:
        raise ValidationError(f"rules is a list of at most {MAX_RULES}")
    checked = []
    for n, rule in enumerate(rules):
        where = f"rules[{n}]"
        if not isinstance(rule, dict) or set(rule) - {"name", "match", "queue_id", "priority"}:
            raise ValidationError(f"{where} is {{name, match, queue_id, priority}}")
        name = rule.get("name", f"rule {n + 1}")
        if not isinstance(name, str) or not 1 <= len(name) <= 100:
            raise ValidationError(f"{where}.name is 1-100 characters")
        priority = rule.get("priority")
        if priority is not None and (
            not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= 100
        ):
            raise ValidationError(f"{where}.priority is an integer from 0 to 100")
        match = rule.get("match", {})
        if not isinstance(match, dict) or set(match) - RULE_MATCH_KEYS:
            raise ValidationError(f"{where}.match has only {', '.join(sorted(RULE_MATCH_KEYS))}")
        checked_match: dict[str, Any] = {}
        for key in ("channels", "recipients", "keywords"):
            if key in match:
                values = match[key]
                if (
                    not isinstance(values, list)
                    or not values
                    or len(values) > 100
                    or not all(isinstance(v, str) and 1 <= len(v) <= 200 for v in values)
                ):
                    raise ValidationError(f"{where}.match.{key} is a list of 1-100 strings")
                if key == "channels":
                    try:
                        values = [Channel(v).value for v in values]
                    except ValueError:
                        raise ValidationError(f"{where}.match.channels names channels") from None
                checked_match[key] = [v.strip().lower() for v in values]
        if "attributes" in match:
            attributes = match["attributes"]
            if (
                not isinstance(attributes, dict)
                or not attributes
                or not all(
                    isinstance(v, str | int | bool) and not isinstance(v, float)
                    for v in attributes.values()
                )
            ):
                raise ValidationError(f"{where}.match.attributes maps names to values")
            checked_match["attributes"] = attributes
        try:
            queue_id = str(UUID(str(rule.get("queue_id"))))
        except ValueError:
            raise ValidationError(f"{where}.queue_id is a queue id") from None
        checked.append(
            {"name": name, "match": checked_match, "queue_id": queue_id, "priority": priority}
        )
    default = doc.get("default_queue_id")
    if default is not None:
        try:
            default = str(UUID(str(default)))
        except ValueError:
            raise ValidationError("default_queue_id is a queue id or null") from None
    return {"rules": checked, "default_queue_id": default}


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def rule_matches(rule: dict[str, Any], facts: RoutingFacts) -> bool:
    """Every condition of a rule must hold; a list condition holds when any item does.
    Keywords match whole words (or phrases) of the first message, case-insensitively."""
    match = rule["match"]
    if "channels" in match and facts.channel not in match["channels"]:
        return False
    if "recipients" in match and (facts.recipient or "").lower() not in match["recipients"]:
        return False
    if "keywords" in match:
        words = _words(facts.text)
        if not any(_words(k) in words for k in match["keywords"]):
            return False
    if "attributes" in match:
        if facts.attributes is None:
            return False
        for name, value in match["attributes"].items():
            have = facts.attributes.get(name)
            if isinstance(have, str) and isinstance(value, str):
                if have.strip().lower() != value.strip().lower():
                    return False
            elif have != value or type(have) is not type(value):
                return False
    return True


def choose_queue(config: dict[str, Any], facts: RoutingFacts) -> tuple[UUID, int | None] | None:
    """The first matching rule's queue (and priority), else the default queue, else None."""
    for rule in config["rules"]:
        if rule_matches(rule, facts):
            return UUID(rule["queue_id"]), rule["priority"]
    default = config.get("default_queue_id")
    return (UUID(default), None) if default else None


class RoutingRules(TenantAggregate):
    """A tenant's routing rules, in order. Keywords and attribute values are tenant
    configuration that could still name people, so the whole set is sealed under the
    tenant's records scope."""

    class Created(TenantAggregate.Created):
        at: datetime

    def __init__(self, tenant_id: UUID, at: datetime) -> None:
        self.tenant_id = tenant_id
        self.rules: Sealed | None = None

    class Configured(TenantAggregate.Event):
        rules: Sealed
        at: datetime

    @event(Configured)
    def configure(self, rules: Sealed, at: datetime) -> None:
        self.rules = rules


class RoutingCommands:
    """Routing use cases; every method runs inside the caller's unit of work."""

    if TYPE_CHECKING:  # provided by ContactCentre
        sealer: Sealer
        normaliser: IdentityNormaliser

        def _require_active_tenant(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]: ...

        def _conversation(
            self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID
        ) -> Conversation: ...

        def contact_attributes(self, contact: Contact) -> dict[str, Any]: ...

        def add_note_in(
            self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, author: str, body: str
        ) -> UUID: ...

    # -- rules -----------------------------------------------------------------------------
    def configure_routing_rules_in(
        self, uow: UnitOfWork, tenant_id: UUID, doc: Any
    ) -> dict[str, Any]:
        entry = self._require_active_tenant(uow, tenant_id)
        config = check_rules(doc)
        for rule in config["rules"]:
            if "recipients" in rule["match"]:
                rule["match"]["recipients"] = [
                    self._normal_address(a, entry.get("phone_region"))
                    for a in rule["match"]["recipients"]
                ]
        wanted = {r["queue_id"] for r in config["rules"]}
        if config["default_queue_id"]:
            wanted.add(config["default_queue_id"])
        for queue_id in sorted(wanted):
            try:
                uow.get(UUID(queue_id), Queue, tenant_id)
            except NotFoundError:
                raise ValidationError(f"no queue {queue_id}") from None
        rules_id = routing_rules_id(tenant_id)
        try:
            rules = uow.get(rules_id, RoutingRules, tenant_id)
        except NotFoundError:
            rules = RoutingRules._create(
                RoutingRules.Created, id=rules_id, tenant_id=tenant_id, at=uow.now
            )
            uow.add(rules)
        records = Scope(tenant_id, ScopeKind.TENANT_RECORDS, tenant_id)
        rules.configure(self.sealer.seal(records, json.dumps(config, sort_keys=True)), uow.now)
        return config

    def _normal_address(self, address: str, region: str | None) -> str:
        """A rule's recipient as ingest normalises it (E.164, lower-case email); other
        addresses (handles, widget ids) are compared as given."""
        kind = IdentityKind.EMAIL if "@" in address else IdentityKind.PHONE
        try:
            return self.normaliser.normalise(Identity(kind, address), region).address.lower()
        except ValidationError:
            return address

    def routing_rules(self, uow: UnitOfWork, tenant_id: UUID) -> dict[str, Any]:
        try:
            rules = uow.get(routing_rules_id(tenant_id), RoutingRules, tenant_id)
        except NotFoundError:
            return {"rules": [], "default_queue_id": None}
        opened = self.sealer.open(rules.rules) if rules.rules is not None else None
        if not isinstance(opened, str):
            return {"rules": [], "default_queue_id": None}
        return cast(dict[str, Any], json.loads(opened))

    def routing_facts(self, uow: UnitOfWork, conversation: Conversation) -> RoutingFacts:
        """The channel, the recipient and text of the latest inbound message, and the
        contact's attributes unless its processing is restricted."""
        recipient, text = None, ""
        if conversation.last_inbound_content is not None:
            opened = self.sealer.open(conversation.last_inbound_content)
            if isinstance(opened, str):
                content = MessageContent.from_json(opened)
                recipient = content.recipient
                text = f"{content.subject or ''} {content.body}"
        contact = uow.get(conversation.contact_id, Contact, conversation.tenant_id)
        attributes = None
        if not contact.restricted and not contact.erased:
            try:
                attributes = self.contact_attributes(contact)
            except ConflictError:
                attributes = None
        return RoutingFacts(conversation.channel.value, recipient, text, attributes)

    def route_by_rules_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID
    ) -> tuple[UUID, int | None] | None:
        """The queue the tenant's rules choose for this conversation (None: no rule and no
        default queue matched)."""
        config = self.routing_rules(uow, tenant_id)
        if not config["rules"] and not config.get("default_queue_id"):
            return None
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        return choose_queue(config, self.routing_facts(uow, conversation))

    # -- offers ----------------------------------------------------------------------------
    def offer_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        agent_id: UUID,
        timeout_seconds: int | None = None,
    ) -> datetime:
        """Offer waiting work to an available agent with free capacity on its channel."""
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        channel = conversation.channel.value
        seconds = timeout_seconds or default_offer_timeout(channel)
        expires_at = uow.now + timedelta(seconds=seconds)
        conversation.offer(agent_id, expires_at, uow.now)
        agent.receive_offer(conversation_id, channel, uow.now)
        return expires_at

    def end_offer_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        agent_id: UUID,
        reason: str,
    ) -> None:
        """Decline (by the agent), expire or withdraw an offer; the work waits on."""
        conversation = self._conversation(uow, tenant_id, conversation_id)
        conversation.end_offer(agent_id, reason, uow.now)
        uow.get(agent_id, Agent, tenant_id).release_work(conversation_id, reason, uow.now)

    def expire_offer_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, agent_id: UUID
    ) -> bool:
        """The timer's side: expire the offer if it is still open and due."""
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        expires = conversation.offer_expires_at
        if conversation.offered_to != agent_id or expires is None or expires > uow.now:
            return False
        self.end_offer_in(uow, tenant_id, conversation_id, agent_id, "expired")
        return True

    def accept_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, agent_id: UUID
    ) -> None:
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if conversation.offered_to != agent_id:
            raise ConflictError("this conversation is not offered to you (it may have expired)")
        agent = uow.get(agent_id, Agent, tenant_id)
        conversation.assign(agent_id, f"agent:{agent_id}", uow.now)
        agent.take_work(conversation_id, conversation.channel.value, uow.now)

    # -- moving work between agents -----------------------------------------------------
    def _release(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        agent_id: UUID | None,
        conversation_id: UUID,
        why: str,
    ) -> None:
        if agent_id is None:
            return
        try:
            agent = uow.get(agent_id, Agent, tenant_id)
        except NotFoundError:
            return
        agent.release_work(conversation_id, why, uow.now)

    def _withdraw_offer(self, uow: UnitOfWork, conversation: Conversation, why: str) -> None:
        if conversation.offered_to is not None:
            agent_id = conversation.offered_to
            conversation.end_offer(agent_id, why, uow.now)
            self._release(uow, conversation.tenant_id, agent_id, conversation.id, why)

    def transfer_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        actor: str,
        queue_id: UUID | None,
        agent_id: UUID | None,
        note: str | None,
    ) -> None:
        """Hand a conversation on to a queue or to an agent, with an optional note.

        To a queue: it waits there from now. To an agent: it is queued in its current
        queue and offered to that agent at once (who must be available with free
        capacity); declined or expired, it waits on for the next agent."""
        if (queue_id is None) == (agent_id is None):
            raise ValidationError("transfer to a queue_id or to an agent_id")
        conversation = self._conversation(uow, tenant_id, conversation_id)
        if conversation.status is ConversationStatus.CLOSED:
            raise ConflictError("cannot transfer: the conversation is closed")
        target_queue = queue_id or conversation.queue_id
        if target_queue is None:
            raise ConflictError("the conversation is in no queue: transfer it to a queue")
        queue = uow.get(target_queue, Queue, tenant_id)
        if agent_id is not None:
            target = uow.get(agent_id, Agent, tenant_id)
            if target.presence is not AgentPresence.AVAILABLE:
                raise ConflictError("the agent is not available")
        note_id = self.add_note_in(uow, tenant_id, conversation_id, actor, note) if note else None
        previous = conversation.assignee_id
        conversation.record_transfer(
            previous,
            "agent" if agent_id is not None else "queue",
            agent_id or target_queue,
            note_id,
            uow.now,
        )
        self._withdraw_offer(uow, conversation, "withdrawn")
        if conversation.status is not ConversationStatus.OPEN:
            conversation.change_status(ConversationStatus.OPEN, actor, uow.now)
        conversation.queue(queue.id, conversation.priority or queue.priority, "transfer", uow.now)
        self._release(uow, tenant_id, previous, conversation_id, "transferred")
        if agent_id is not None:
            self.offer_in(
                uow,
                tenant_id,
                conversation_id,
                agent_id,
                queue.settings.get("offer_timeout_seconds"),
            )

    def wrap_up_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        agent_id: UUID,
        disposition: str,
        resolve: bool,
    ) -> None:
        code = disposition.strip().lower() if isinstance(disposition, str) else ""
        if not _DISPOSITION.match(code):
            raise ValidationError("disposition is a code: letters, digits and _.:- (1-64)")
        conversation = self._conversation(uow, tenant_id, conversation_id)
        conversation.wrap_up(agent_id, code, uow.now)
        if resolve:
            conversation.change_status(ConversationStatus.RESOLVED, f"agent:{agent_id}", uow.now)
            self._release(uow, tenant_id, agent_id, conversation_id, "resolved")

    def return_work_in(self, uow: UnitOfWork, tenant_id: UUID, agent: Agent, why: str) -> int:
        """An agent left (offline, deleted): open offers are withdrawn and the work it
        holds is queued again at its original wait time. Returns how many moved."""
        moved = 0
        for conversation_id in sorted(agent.work, key=str):
            conversation = uow.get(conversation_id, Conversation, tenant_id)
            if conversation.offered_to == agent.id:
                conversation.end_offer(agent.id, "withdrawn", uow.now)
                moved += 1
            elif conversation.assignee_id == agent.id and conversation.status not in (
                ConversationStatus.RESOLVED,
                ConversationStatus.CLOSED,
            ):
                if conversation.queue_id is not None:
                    conversation.queue(
                        conversation.queue_id,
                        conversation.priority,
                        why,
                        uow.now,
                        waiting_since=conversation.queued_since or uow.now,
                    )
                else:
                    conversation.assign(None, "system:routing", uow.now)
                moved += 1
            agent.release_work(conversation_id, why, uow.now)
        return moved

    def withdraw_offers_in(self, uow: UnitOfWork, tenant_id: UUID, agent: Agent) -> None:
        for conversation_id in sorted(agent.offered, key=str):
            conversation = uow.get(conversation_id, Conversation, tenant_id)
            if conversation.offered_to == agent.id:
                conversation.end_offer(agent.id, "withdrawn", uow.now)
            agent.release_work(conversation_id, "withdrawn", uow.now)

    def release_finished_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, agent_id: UUID, why: str
    ) -> bool:
        """Free an agent's slot of a conversation it no longer has (resolved, closed or
        gone elsewhere by a path that did not free it itself)."""
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        if agent_id not in (conversation.offered_to, conversation.assignee_id) or (
            conversation.status in (ConversationStatus.RESOLVED, ConversationStatus.CLOSED)
        ):
            return agent.release_work(conversation_id, why, uow.now)
        return False

    # -- agent sessions and settings -------------------------------------------------------
    def log_in_in(self, uow: UnitOfWork, tenant_id: UUID, agent_id: UUID) -> None:
        self._require_active_tenant(uow, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        agent.log_in(uow.now)
        agent.change_presence(AgentPresence.AVAILABLE, None, uow.now)

    def log_out_in(self, uow: UnitOfWork, tenant_id: UUID, agent_id: UUID) -> int:
        self._require_active_tenant(uow, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        moved = self.return_work_in(uow, tenant_id, agent, "agent_offline")
        agent.log_out(uow.now)
        return moved

    def set_capacity_in(
        self, uow: UnitOfWork, tenant_id: UUID, agent_id: UUID, changes: dict[str, Any]
    ) -> dict[str, int]:
        self._require_active_tenant(uow, tenant_id)
        return uow.get(agent_id, Agent, tenant_id).change_capacity(changes, uow.now)

    def set_skills_in(
        self, uow: UnitOfWork, tenant_id: UUID, agent_id: UUID, skills: list[str]
    ) -> list[str]:
        self._require_active_tenant(uow, tenant_id)
        agent = uow.get(agent_id, Agent, tenant_id)
        agent.change_skills(skills, uow.now)
        return list(agent.skills)

    # -- timers: overflow and SLA ----------------------------------------------------------
    def overflow_in(
        self, uow: UnitOfWork, tenant_id: UUID, conversation_id: UUID, reason: str
    ) -> str | None:
        """Move waiting work to its queue's overflow target; None when there is none."""
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        if conversation.waiting_since is None or conversation.queue_id is None:
            return None
        queue = uow.get(conversation.queue_id, Queue, tenant_id)
        target = queue.settings.get("overflow")
        if not target:
            return None
        self._withdraw_offer(uow, conversation, "withdrawn")
        if target["target"] == "queue":
            next_queue = uow.get(UUID(target["queue_id"]), Queue, tenant_id)
            if next_queue.id == queue.id:
                return None
            conversation.overflow("queue", next_queue.id, reason, uow.now)
            conversation.queue(
                next_queue.id,
                max(conversation.priority, next_queue.priority),
                "overflow",
                uow.now,
                waiting_since=conversation.waiting_since,
            )
        else:
            conversation.overflow(target["target"], None, reason, uow.now)
        return str(target["target"])

    def record_sla_breach_in(
        self,
        uow: UnitOfWork,
        tenant_id: UUID,
        conversation_id: UUID,
        queue_id: UUID,
        kind: str,
        threshold_seconds: int,
        started: datetime,
    ) -> bool:
        conversation = uow.get(conversation_id, Conversation, tenant_id)
        return conversation.breach_sla(queue_id, kind, threshold_seconds, started, uow.now)
