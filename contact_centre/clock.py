"""Time as a port, so tests (and the retention workflow) can move it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """Gives the current time as an aware UTC datetime."""

    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


def require_aware_utc(value: datetime, field: str) -> datetime:
    """Return ``value`` converted to UTC; refuse naive datetimes."""
    from contact_centre.errors import ValidationError

    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(f"{field} must carry a time zone")
    return value.astimezone(UTC)
