"""Agents and queues, as plain aggregates (routing builds on them later)."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

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
}


def default_sl_threshold(channels: list[Channel]) -> int:
    """Answer within 20 s for real-time channels; first response within 4 h for email."""
    if channels and all(c is Channel.EMAIL for c in channels):
        return 4 * 3600
    return 20


def check_queue_settings(settings: dict[str, Any]) -> dict[str, Any]:
    checked: dict[str, Any] = {}
    for key, value in settings.items():
        kind = QUEUE_SETTINGS.get(key)
        if kind is None:
            raise ValidationError(f"unknown queue setting {key!r}")
        if kind is int and (not isinstance(value, int) or isinstance(value, bool)):
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

    @property
    def priority(self) -> int:
        return int(self.settings.get("priority", 0))
