"""Routing rules, queue settings and business hours, as pure functions."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest

from contact_centre.errors import ValidationError
from contact_centre.routing import RoutingFacts, check_rules, choose_queue, rule_matches
from contact_centre.staff import check_queue_settings, is_open

Q1, Q2, Q3, DEFAULT = (str(uuid4()) for _ in range(4))


def facts(
    channel: str = "sms",
    recipient: str | None = None,
    text: str = "",
    attributes: dict[str, Any] | None = None,
) -> RoutingFacts:
    return RoutingFacts(channel, recipient, text, attributes if attributes is not None else {})


RULES = check_rules(
    {
        "rules": [
            {"name": "VIP", "match": {"attributes": {"vip": True}}, "queue_id": Q1, "priority": 90},
            {"name": "Refunds", "match": {"keywords": ["refund", "money back"]}, "queue_id": Q2},
            {
                "name": "Sales line",
                "match": {"channels": ["voice"], "recipients": ["+442071838751"]},
                "queue_id": Q3,
            },
        ],
        "default_queue_id": DEFAULT,
    }
)


def test_the_first_matching_rule_wins_else_the_default() -> None:
    vip_refund = facts(text="I want a refund", attributes={"vip": True})
    assert choose_queue(RULES, vip_refund) == (uuid_of(Q1), 90)
    assert choose_queue(RULES, facts(text="Refund please!")) == (uuid_of(Q2), None)
    assert choose_queue(RULES, facts(text="Can I have my MONEY back")) == (uuid_of(Q2), None)
    assert choose_queue(RULES, facts("voice", "+442071838751")) == (uuid_of(Q3), None)
    assert choose_queue(RULES, facts("sms", "+442071838751")) == (uuid_of(DEFAULT), None)
    assert choose_queue(RULES, facts(text="refunded")) == (uuid_of(DEFAULT), None)  # whole words


def test_a_restricted_contact_never_matches_on_attributes() -> None:
    restricted = RoutingFacts("sms", None, "hello", None)
    assert not rule_matches(RULES["rules"][0], restricted)
    assert choose_queue(RULES, restricted) == (uuid_of(DEFAULT), None)


def test_attribute_values_compare_by_type_and_strings_without_case() -> None:
    rule = check_rules({"rules": [{"match": {"attributes": {"lang": "NO"}}, "queue_id": Q1}]})
    assert rule_matches(rule["rules"][0], facts(attributes={"lang": "no"}))
    flag = check_rules({"rules": [{"match": {"attributes": {"vip": True}}, "queue_id": Q1}]})
    assert not rule_matches(flag["rules"][0], facts(attributes={"vip": 1}))
    assert not rule_matches(flag["rules"][0], facts(attributes={}))


@pytest.mark.parametrize(
    "doc",
    [
        {"rules": [{"match": {"colour": ["red"]}, "queue_id": Q1}]},
        {"rules": [{"match": {"channels": ["pigeon"]}, "queue_id": Q1}]},
        {"rules": [{"match": {"keywords": []}, "queue_id": Q1}]},
        {"rules": [{"match": {}, "queue_id": "not-a-queue"}]},
        {"rules": [{"match": {}, "queue_id": Q1, "priority": 101}]},
        {"rules": [{"match": {"attributes": {"score": 1.5}}, "queue_id": Q1}]},
        {"rules": [], "default_queue_id": "nope"},
        {"rules": [], "extra": 1},
    ],
)
def test_bad_rules_are_refused(doc: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        check_rules(doc)


def test_business_hours_are_local_to_the_queues_time_zone() -> None:
    hours = check_queue_settings(
        {
            "business_hours": {
                "timezone": "America/New_York",
                "weekly": {"mon": [["09:00", "17:00"]]},
            }
        }
    )["business_hours"]
    monday_morning_ny = datetime(2026, 11, 23, 14, 30, tzinfo=UTC)  # 09:30 in New York
    assert is_open(hours, monday_morning_ny)
    assert not is_open(hours, datetime(2026, 11, 23, 13, 30, tzinfo=UTC))  # 08:30 there
    assert not is_open(hours, datetime(2026, 11, 24, 14, 30, tzinfo=UTC))  # Tuesday: closed
    assert is_open(None, monday_morning_ny)


@pytest.mark.parametrize(
    "settings",
    [
        {"business_hours": {"timezone": "Mars/Olympus", "weekly": {}}},
        {"business_hours": {"timezone": "UTC", "weekly": {"mon": [["17:00", "09:00"]]}}},
        {"business_hours": {"timezone": "UTC", "weekly": {"someday": []}}},
        {"overflow": {"target": "queue"}},
        {"overflow": {"target": "the moon"}},
        {"max_wait_seconds": 0},
        {"offer_timeout_seconds": 1},
    ],
)
def test_bad_queue_settings_are_refused(settings: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        check_queue_settings(settings)


def uuid_of(text: str) -> UUID:
    return UUID(text)
