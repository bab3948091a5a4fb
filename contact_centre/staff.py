"""Agents and queues: skills with levels, capacity per channel, presence and the work an
agent holds; queues with their routing settings (see docs/routing.md)."""

from __future__ import annotations

import re
from datetime import datetime, time
from enum import StrEnum
from typing import Any
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from eventsourcing.domain import event

from contact_centre.errors import ConflictError, ValidationError
from contact_centre.interaction import Channel
from contact_centre.privacy import Sealed
from contact_centre.tenanted import TenantAggregate

_SKILL = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,47}(:[0-9]{1,2})?$")


def _check_skills(skills: list[str]) -> list[str]:
    """Skills are ``name`` or ``name:level`` (level 0-99), e.g. ``billing:3``."""
    normalised = []
    for skill in skills:
        text = skill.strip().lower()
        if not _SKILL.match(text):
            raise ValidationError(
                f"invalid skill {skill!r}: use name or name:level, e.g. billing:3"
            )
        normalised.append(text)
    return sorted(set(normalised))


def skill_levels(skills: list[str]) -> dict[str, int]:
    """``["billing:3", "norwegian"]`` → ``{"billing": 3, "norwegian": 0}``."""
    levels: dict[str, int] = {}
    for skill in skills:
        name, _, level = skill.partition(":")
        levels[name] = max(levels.get(name, 0), int(level) if level else 0)
    return levels


def skills_satisfy(agent_skills: list[str], required: list[str]) -> bool:
    """Whether an agent has every required skill at (at least) the required level."""
    have = skill_levels(agent_skills)
    return all(
        name in have and have[name] >= level for name, level in skill_levels(required).items()
    )


class Agent(TenantAggregate):
    """A person answering conversations. Name and email are sealed under the agent's scope."""

    class Created(TenantAggregate.Created):
        name: Sealed
        email: Sealed | None
        skills: list[str]
        at: datetime

    def __init__(
        self, tenant_id: UUID, name: Sealed, email: Sealed | None, skills: list[str], at: datetime
    ) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.email = email
        self.skills = skills
        self.created_at = at
        self.presence = AgentPresence.OFFLINE
        self.erased = False
        self.logged_in = False
        self.capacity: dict[str, int] = dict(DEFAULT_CAPACITY)
        # conversation id -> channel of what the agent holds: offered or assigned
        self.work: dict[UUID, str] = {}
        self.offered: set[UUID] = set()

    @classmethod
    def create(
        cls,
        agent_id: UUID,
        tenant_id: UUID,
        name: Sealed,
        email: Sealed | None,
        skills: list[str],
        at: datetime,
    ) -> Agent:
        return cls._create(
            cls.Created,
            id=agent_id,
            tenant_id=tenant_id,
            name=name,
            email=email,
            skills=_check_skills(skills),
            at=at,
        )

    class PresenceChanged(TenantAggregate.Event):
        presence: str
        reason: str | None
        at: datetime

    def change_presence(self, presence: AgentPresence, reason: str | None, at: datetime) -> bool:
        if self.erased:
            raise ConflictError("this agent has been deleted")
        if reason is not None and (presence is not AgentPresence.AWAY or len(reason) > 100):
            raise ValidationError("a reason (at most 100 characters) goes with 'away' only")
        if presence is self.presence and reason is None:
            return False
        self._presence_changed(presence=presence.value, reason=reason, at=at)
        return True

    @event(PresenceChanged)
    def _presence_changed(self, presence: str, reason: str | None, at: datetime) -> None:
        self.presence = AgentPresence(presence)

    class Erased(TenantAggregate.Event):
        """The agent was deleted: its name and email are destroyed; its work history
        stays, under its id (P2)."""

        at: datetime

    def erase(self, at: datetime) -> None:
        if self.erased:
            raise ConflictError("this agent has already been deleted")
        if self.presence is not AgentPresence.OFFLINE:
            self._presence_changed(presence=AgentPresence.OFFLINE.value, reason=None, at=at)
        self._erased(at=at)

    @event(Erased)
    def _erased(self, at: datetime) -> None:
        self.erased = True

    # -- sessions, skills and capacity ----------------------------------------------------
    class LoggedIn(TenantAggregate.Event):
        at: datetime

    class LoggedOut(TenantAggregate.Event):
        at: datetime

    def log_in(self, at: datetime) -> None:
        if self.erased:
            raise ConflictError("this agent has been deleted")
        self._logged_in(at=at)

    @event(LoggedIn)
    def _logged_in(self, at: datetime) -> None:
        self.logged_in = True

    def log_out(self, at: datetime) -> None:
        if self.presence is not AgentPresence.OFFLINE:
            self._presence_changed(presence=AgentPresence.OFFLINE.value, reason=None, at=at)
        self._logged_out(at=at)

    @event(LoggedOut)
    def _logged_out(self, at: datetime) -> None:
        self.logged_in = False

    class SkillsChanged(TenantAggregate.Event):
        skills: list[str]
        at: datetime

    def change_skills(self, skills: list[str], at: datetime) -> None:
        if self.erased:
            raise ConflictError("this agent has been deleted")
        self._skills_changed(skills=_check_skills(skills), at=at)

    @event(SkillsChanged)
    def _skills_changed(self, skills: list[str], at: datetime) -> None:
        self.skills = skills

    class CapacityChanged(TenantAggregate.Event):
        """``capacity`` is the whole map after the change: channel -> simultaneous
        conversations (0 means the agent takes no work on that channel)."""

        capacity: dict[str, int]
        at: datetime

    def change_capacity(self, changes: dict[str, Any], at: datetime) -> dict[str, int]:
        capacity = dict(self.capacity)
        for channel, value in changes.items():
            try:
                Channel(channel)
            except ValueError:
                raise ValidationError(f"unknown channel {channel!r} in capacity") from None
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 50:
                raise ValidationError(f"capacity for {channel} must be an integer from 0 to 50")
            capacity[channel] = value
        self._capacity_changed(capacity=capacity, at=at)
        return capacity

    @event(CapacityChanged)
    def _capacity_changed(self, capacity: dict[str, int], at: datetime) -> None:
        self.capacity = dict(capacity)

    # -- the work an agent holds (offers and assignments count against capacity) ------------
    def load(self, channel: str) -> int:
        return sum(1 for c in self.work.values() if c == channel)

    def free(self, channel: str) -> int:
        return self.capacity.get(channel, 0) - self.load(channel)

    class WorkOffered(TenantAggregate.Event):
        conversation_id: UUID
        channel: str
        at: datetime

    def receive_offer(self, conversation_id: UUID, channel: str, at: datetime) -> None:
        if self.presence is not AgentPresence.AVAILABLE:
            raise ConflictError("only an available agent is offered work")
        if conversation_id in self.work:
            raise ConflictError("the agent already holds this conversation")
        if self.free(channel) <= 0:
            raise ConflictError(f"the agent has no free capacity on {channel}")
        self._work_offered(conversation_id=conversation_id, channel=channel, at=at)

    @event(WorkOffered)
    def _work_offered(self, conversation_id: UUID, channel: str, at: datetime) -> None:
        self.work[conversation_id] = channel
        self.offered.add(conversation_id)

    class WorkTaken(TenantAggregate.Event):
        """The agent holds the conversation as its assignee (an accepted offer, or a
        direct assignment)."""

        conversation_id: UUID
        channel: str
        at: datetime

    def take_work(self, conversation_id: UUID, channel: str, at: datetime) -> None:
        if self.erased:
            raise ConflictError("this agent has been deleted")
        if conversation_id in self.work and conversation_id not in self.offered:
            return
        if conversation_id not in self.work and self.free(channel) <= 0:
            raise ConflictError(f"the agent has no free capacity on {channel}")
        self._work_taken(conversation_id=conversation_id, channel=channel, at=at)

    @event(WorkTaken)
    def _work_taken(self, conversation_id: UUID, channel: str, at: datetime) -> None:
        self.work[conversation_id] = channel
        self.offered.discard(conversation_id)

    class WorkReleased(TenantAggregate.Event):
        """The agent no longer holds the conversation: ``reason`` is declined, expired,
        withdrawn, transferred, requeued, resolved, closed or reassigned."""

        conversation_id: UUID
        reason: str
        at: datetime

    def release_work(self, conversation_id: UUID, reason: str, at: datetime) -> bool:
        if conversation_id not in self.work:
            return False
        self._work_released(conversation_id=conversation_id, reason=reason, at=at)
        return True

    @event(WorkReleased)
    def _work_released(self, conversation_id: UUID, reason: str, at: datetime) -> None:
        self.work.pop(conversation_id, None)
        self.offered.discard(conversation_id)


# Simultaneous conversations per channel until an admin sets an agent's capacity.
DEFAULT_CAPACITY: dict[str, int] = {
    "voice": 1,
    "webchat": 3,
    "email": 5,
    "sms": 3,
    "whatsapp": 3,
    "social": 3,
}


class AgentPresence(StrEnum):
    AVAILABLE = "available"
    BUSY = "busy"
    AWAY = "away"
    OFFLINE = "offline"


# Queue settings an admin can change, with their types; the defaults apply until set.
QUEUE_SETTINGS: dict[str, type] = {
    "required_skills": list,
    "priority": int,
    "sl_threshold_seconds": int,
    "sl_target_percent": int,
    "business_hours": dict,  # {"timezone": "Europe/Oslo", "weekly": {"mon": [["08:00", "16:00"]]}}
    "max_wait_seconds": int,  # then the work overflows
    "overflow": dict,  # {"target": "queue", "queue_id": ...} | {"target": "voicemail"|"callback"}
    "offer_timeout_seconds": int,  # an offer not accepted in time moves on
}
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
OVERFLOW_TARGETS = ("queue", "voicemail", "callback")
REAL_TIME = frozenset({Channel.VOICE.value, Channel.WEBCHAT.value})


def default_sl_threshold(channels: list[Channel]) -> int:
    """Answer within 20 s for real-time channels; first response within 4 h for email."""
    if channels and all(c is Channel.EMAIL for c in channels):
        return 4 * 3600
    return 20


def default_offer_timeout(channel: str) -> int:
    """Seconds an offer waits for the agent: 20 s for voice and webchat, 2 min otherwise."""
    return 20 if channel in REAL_TIME else 120


def _clock_time(value: Any, name: str) -> time:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be HH:MM")
    if value == "24:00":
        return time.max
    try:
        return time.fromisoformat(value)
    except ValueError:
        raise ValidationError(f"{name} must be HH:MM") from None


def _check_business_hours(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) - {"timezone", "weekly"}:
        raise ValidationError("business_hours is {timezone, weekly}")
    zone = value.get("timezone")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {zone!r}") from None
    weekly = value.get("weekly")
    if not isinstance(weekly, dict) or set(weekly) - set(WEEKDAYS):
        raise ValidationError(f"business_hours.weekly maps {', '.join(WEEKDAYS)} to spans")
    for day, spans in weekly.items():
        if not isinstance(spans, list) or len(spans) > 6:
            raise ValidationError(f"business_hours.weekly.{day} is a list of [open, close]")
        for span in spans:
            if not isinstance(span, list) or len(span) != 2:
                raise ValidationError(f"business_hours.weekly.{day} spans are [open, close]")
            start, end = (_clock_time(t, f"business_hours.weekly.{day}") for t in span)
            if not start < end:
                raise ValidationError(f"business_hours.weekly.{day}: open before close")
    return {"timezone": str(zone), "weekly": weekly}


def is_open(business_hours: dict[str, Any] | None, at: datetime) -> bool:
    """Whether a queue with these hours is open at ``at`` (no hours: always open)."""
    if not business_hours:
        return True
    local = at.astimezone(ZoneInfo(business_hours["timezone"]))
    spans = business_hours.get("weekly", {}).get(WEEKDAYS[local.weekday()], [])
    now = local.time().replace(tzinfo=None)
    return any(_clock_time(a, "open") <= now < _clock_time(b, "close") for a, b in spans)


def _check_overflow(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict) or value.get("target") not in OVERFLOW_TARGETS:
        raise ValidationError("overflow.target must be queue, voicemail or callback")
    if value["target"] == "queue":
        try:
            queue_id = str(UUID(str(value.get("queue_id"))))
        except ValueError:
            raise ValidationError("overflow to a queue needs its queue_id") from None
        if set(value) - {"target", "queue_id"}:
            raise ValidationError("overflow is {target, queue_id}")
        return {"target": "queue", "queue_id": queue_id}
    if set(value) - {"target"}:
        raise ValidationError("overflow to voicemail or callback takes no other field")
    return {"target": value["target"]}


def check_queue_settings(settings: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        kind = QUEUE_SETTINGS.get(key)
        if kind is None:
            raise ValidationError(f"unknown queue setting {key!r}")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
            if value is None and key in ("max_wait_seconds", "offer_timeout_seconds"):
                checked[key] = None  # back to the default
                continue
            raise ValidationError(f"{key} must be an integer")
        if key == "required_skills":
            if not isinstance(value, list) or not all(isinstance(s, str) for s in value):
                raise ValidationError("required_skills must be a list of skills")
            value = _check_skills(value)
        elif key == "priority" and not 0 <= value <= 100:
            raise ValidationError("priority must be between 0 and 100")
        elif key == "sl_threshold_seconds" and not 1 <= value <= 7 * 86400:
            raise ValidationError("sl_threshold_seconds must be between 1 and 604800")
        elif key == "sl_target_percent" and not 1 <= value <= 100:
            raise ValidationError("sl_target_percent must be between 1 and 100")
        elif key == "max_wait_seconds" and not 1 <= value <= 7 * 86400:
            raise ValidationError("max_wait_seconds must be between 1 and 604800")
        elif key == "offer_timeout_seconds" and not 5 <= value <= 3600:
            raise ValidationError("offer_timeout_seconds must be between 5 and 3600")
        elif key == "business_hours":
            value = None if value is None else _check_business_hours(value)
        elif key == "overflow":
            value = None if value is None else _check_overflow(value)
        checked[key] = value
    return checked


class Queue(TenantAggregate):
    """A named line of work, optionally limited to some channels."""

    class Created(TenantAggregate.Created):
        name: str
        channels: list[str]
        at: datetime

    def __init__(self, tenant_id: UUID, name: str, channels: list[str], at: datetime) -> None:
        self.tenant_id = tenant_id
        self.name = name
        self.channels = [Channel(c) for c in channels]
        self.created_at = at
        self.settings: dict[str, Any] = {}

    @classmethod
    def create(
        cls, queue_id: UUID, tenant_id: UUID, name: str, channels: list[Channel], at: datetime
    ) -> Queue:
        name = name.strip()
        if not name or len(name) > 200:
            raise ValidationError("queue name must be 1-200 characters")
        return cls._create(
            cls.Created,
            id=queue_id,
            tenant_id=tenant_id,
            name=name,
            channels=sorted({c.value for c in channels}),
            at=at,
        )

    class SettingsChanged(TenantAggregate.Event):
        changes: dict[str, Any]
        at: datetime

    def change_settings(self, changes: dict[str, Any], at: datetime) -> None:
        self._settings_changed(changes=check_queue_settings(changes), at=at)

    @event(SettingsChanged)
    def _settings_changed(self, changes: dict[str, Any], at: datetime) -> None:
        self.settings.update(changes)
        for key in [k for k, v in self.settings.items() if v is None]:
            del self.settings[key]  # a setting set to null is back to its default

    @property
    def priority(self) -> int:
        return int(self.settings.get("priority", 0))
