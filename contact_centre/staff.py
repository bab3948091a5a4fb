"""Agents and queues, as plain aggregates (routing builds on them later)."""

from __future__ import annotations

import re
from datetime import datetime
from uuid import UUID

from contact_centre.errors import ValidationError
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
