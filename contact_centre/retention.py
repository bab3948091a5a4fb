"""Retention: data categories, the tenant's policy, and the date arithmetic of expiry.

Every scope of personal data belongs to one category; its due date is its anchor date
plus the category's period under the tenant's policy. The defaults come from the
policies this product serves (../shared/PRIVACY.md, P1, P9, P10).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from contact_centre.errors import ValidationError


class Category(StrEnum):
    CHAT_VISITOR = "chat_visitor"  # webchat: pre-chat form, transcript, IP (P1)
    CORRESPONDENCE = "correspondence"  # every other channel's conversation content (P10)
    USAGE = "usage"  # records of use: delivery logs, audit entries, presence history (P10)
    ACCOUNT = "account"  # agents' account data, after the tenant's contract ends (P10)
    CONTACT = "contact"  # a contact's identities and details, after inactivity (P9)


@dataclass(frozen=True)
class RetentionPolicy:
    """Periods in months per category, and the notice given before inactive contacts go.

    ``correspondence`` runs from the later of the message date and the end of the tenant's
    contract; ``account`` from the end of the contract; ``chat_visitor`` from the end of
    the conversation; ``contact`` from the contact's last activity; ``usage`` from when
    the record was made. Marketing opt-outs are kept as a suppression entry (a keyed hash)
    for as long as the tenant exists and have no period.
    """

    months: dict[str, int] = field(
        default_factory=lambda: {
            Category.CHAT_VISITOR.value: 6,
            Category.CORRESPONDENCE.value: 72,
            Category.USAGE.value: 12,
            Category.ACCOUNT.value: 6,
            Category.CONTACT.value: 24,
        }
    )
    contact_notice_days: int = 30

    def period(self, category: Category) -> int:
        return self.months[category.value]

    def due(self, category: Category, anchor: datetime) -> datetime:
        return add_months(anchor, self.period(category))

    def cutoff(self, category: Category, now: datetime) -> datetime:
        """Scopes of ``category`` anchored at or before this moment are due at ``now``."""
        return add_months(now, -self.period(category))

    def with_changes(self, changes: dict[str, Any]) -> RetentionPolicy:
        months = dict(self.months)
        notice = self.contact_notice_days
        for key, value in changes.items():
            if key == "contact_notice_days":
                if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 365:
                    raise ValidationError("contact_notice_days must be 0 to 365")
                notice = value
                continue
            try:
                Category(key)
            except ValueError:
                options = ", ".join(c.value for c in Category)
                raise ValidationError(f"unknown category {key!r}; one of {options}") from None
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 1200:
                raise ValidationError(f"{key} must be a number of months from 1 to 1200")
            months[key] = value
        return RetentionPolicy(months, notice)

    def as_dict(self) -> dict[str, Any]:
        return {**self.months, "contact_notice_days": self.contact_notice_days}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> RetentionPolicy:
        return cls().with_changes(dict(doc or {}))

    def notice_period(self) -> timedelta:
        return timedelta(days=self.contact_notice_days)


def add_months(moment: datetime, months: int) -> datetime:
    """Calendar months (31 Jan + 1 month = 28/29 Feb), keeping the time of day and zone."""
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)
