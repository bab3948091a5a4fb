"""The workflow (process manager) contract.

A :class:`Policy` reacts to events by running commands: it loads aggregates through the
unit of work it is given and changes them. The runner records the resulting events and
the policy's position in the log in one transaction on the event store, so a policy
reacts to each event exactly once, across restarts and crashes.

Work that must happen later (retries with backoff, timers) is kept in read models and
picked up by a :class:`Ticker`, which the runtime calls periodically with the current
time; tickers derive everything from events, so they survive restarts.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar

from contact_centre.application import UnitOfWork

PolicyHandler = Callable[[Any, UnitOfWork, Any, int], None]


def reacts_to(*event_types: type[Any]) -> Callable[[PolicyHandler], PolicyHandler]:
    """Mark a policy method as the reaction to the given event classes."""

    def mark(fn: PolicyHandler) -> PolicyHandler:
        fn.__reacts_to__ = event_types  # type: ignore[attr-defined]
        return fn

    return mark


class Policy(ABC):
    """Subclasses set ``name`` (its tracking key) and mark handlers with @reacts_to."""

    name: ClassVar[str]
    _reactions: ClassVar[dict[type[Any], str]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        reactions: dict[type[Any], str] = {}
        for base in reversed(cls.__mro__):
            for attr, fn in vars(base).items():
                for event_type in getattr(fn, "__reacts_to__", ()):
                    reactions[event_type] = attr
        cls._reactions = reactions

    def interested_in(self, event_type: type[Any]) -> bool:
        return event_type in self._reactions

    @classmethod
    def event_types(cls) -> tuple[type[Any], ...]:
        return tuple(cls._reactions)

    def react(self, uow: UnitOfWork, event: Any, position: int) -> None:
        name = self._reactions.get(type(event))
        if name is not None:
            getattr(self, name)(uow, event, position)


class Ticker(ABC):
    """Periodic work: find what is due at ``now`` and do it (each step a command)."""

    name: ClassVar[str]
    interval: float = 1.0  # seconds between ticks

    @abstractmethod
    def tick(self, now: datetime) -> int:
        """Do what is due; return how many things were done (0 when idle)."""
