"""Time as a port, so tests (and the retention workflow) can move it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    """Gives the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock that only moves when told to (tests, dry runs, the retention CLI)."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime.now(UTC)

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = require_aware_utc(moment, "moment")

    def advance(self, delta: timedelta) -> None:
        self._now = self._now + delta


class ShiftedClock:
    """Real time plus an offset that can be moved forward (time travel that still ticks)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def now(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


def require_aware_utc(value: datetime, field: str) -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes."""
    from contact_centre.errors import ValidationError

    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} must carry a time zone")
    return value.astimezone(UTC)
