"""Each category expires on time under the default policy; held scopes are kept."""

from __future__ import annotations

from datetime import timedelta

import pytest

from contact_centre.compliance import HoldTarget
from contact_centre.conversations import ConversationStatus
from contact_centre.errors import ValidationError
from contact_centre.interaction import Channel, IdentityKind
from contact_centre.retention import Category, RetentionPolicy, add_months
from infra.audit import AuditEntry
from projections import retention as ledger
from projections.base import loads
from tests.privacy.support import T0, World, months, scope


def test_calendar_months_keep_the_day_or_clamp_to_the_month_end() -> None:
    assert add_months(T0, 6).date().isoformat() == "2026-07-15"
    assert add_months(T0.replace(month=1, day=31), 1).date().isoformat() == "2026-02-28"
    assert add_months(T0, -13).date().isoformat() == "2024-12-15"


def test_policies_refuse_unknown_categories_and_silly_periods() -> None:
    with pytest.raises(ValidationError):
        RetentionPolicy().with_changes({"forever": 12})
    with pytest.raises(ValidationError):
        RetentionPolicy().with_changes({"chat_visitor": 0})
    assert RetentionPolicy().with_changes({"chat_visitor": 3}).period(Category.CHAT_VISITOR) == 3


def test_a_webchat_transcript_goes_six_months_after_the_chat_ends(world: World) -> None:
    chat = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-1", "hello", "Vic")
    world.later(timedelta(hours=1)).run(
        lambda uow: world.app.change_status_in(
            uow, world.tenant, chat.conversation_id, ConversationStatus.RESOLVED, "agent:x"
        )
    )
    conversation = scope("conversation", chat.conversation_id)
    network = scope("visitor-network", chat.conversation_id)
    world.later(months(5)).sweep()
    assert world.scope_status(conversation) == "live"
    assert world.readable(conversation)
    world.later(months(1)).sweep()
    assert world.scope_status(conversation) == "erased"
    assert world.scope_status(network) == "erased"
    assert not world.readable(conversation)
    # the visitor's identity is a contact scope with its own (inactivity) clock
    assert world.scope_status(scope("contact", chat.contact_id)) == "live"
    with world.rt.readdb.read() as tx:
        [record] = [
            d for d in ledger.deletions(tx, str(world.tenant), 0) if d["id"] == conversation
        ]
    assert (record["category"], record["rule"]) == ("chat_visitor", "retention:chat_visitor")


def test_activity_moves_the_chat_anchor_forward(world: World) -> None:
    chat = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-2", "hello")
    world.later(months(4))
    world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-2", "still there?")
    world.later(months(3)).sweep()  # 7 months after the start, 3 after the last message
    assert world.scope_status(scope("conversation", chat.conversation_id)) == "live"
    world.later(months(3)).sweep()
    assert world.scope_status(scope("conversation", chat.conversation_id)) == "erased"


def test_correspondence_is_kept_while_the_contract_runs_and_due_six_years_after_it_ends(
    world: World,
) -> None:
    sms = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900123", "Invoice?")
    world.later(timedelta(days=365 * 7)).sweep()
    assert world.scope_status(scope("conversation", sms.conversation_id)) == "live"
    world.run(lambda uow: world.app.terminate_tenant_in(uow, world.tenant, 30))
    with world.rt.readdb.read() as tx:
        state = ledger.tenant_state(tx, str(world.tenant))
        assert state is not None
        [row] = ledger.scopes(tx, str(world.tenant), category="correspondence")
    due = ledger.due_at(row, RetentionPolicy.from_dict(loads(state["policy"])), state)
    assert due == add_months(world.clock.now(), 72)


def test_an_inactive_contact_gets_a_notice_then_goes_unless_it_comes_back(world: World) -> None:
    ann = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900123", "hi", "Ann")
    ben = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900456", "hi", "Ben")
    world.later(months(24)).sweep()
    assert world.scope_status(scope("contact", ann.contact_id)) == "noticed"
    assert world.scope_status(scope("contact", ben.contact_id)) == "noticed"
    world.later(timedelta(days=10))
    world.message(Channel.SMS, IdentityKind.PHONE, "+447700900456", "I'm back")
    assert world.scope_status(scope("contact", ben.contact_id)) == "live"
    world.later(timedelta(days=21)).sweep()  # the 30-day notice has run out for Ann
    assert world.scope_status(scope("contact", ann.contact_id)) == "erased"
    assert not world.readable(scope("contact", ann.contact_id))
    assert world.scope_status(scope("contact", ben.contact_id)) == "live"
    # Ann's correspondence follows its own category and stays
    assert world.readable(scope("conversation", ann.conversation_id))


def test_a_legal_hold_keeps_due_data_until_it_is_released(world: World) -> None:
    chat = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-3", "hello")
    other = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-4", "hello")
    hold = world.run(
        lambda uow: world.app.place_hold_in(
            uow,
            world.tenant,
            HoldTarget.CONVERSATION,
            chat.conversation_id,
            "claim 2026/114",
            "admin:x",
        )
    )
    report = world.later(months(7)).sweep()
    assert report.held >= 1
    assert world.scope_status(scope("conversation", chat.conversation_id)) == "live"
    assert world.scope_status(scope("conversation", other.conversation_id)) == "erased"
    world.run(lambda uow: world.app.release_hold_in(uow, world.tenant, hold, "admin:x"))
    world.sweep()
    assert world.scope_status(scope("conversation", chat.conversation_id)) == "erased"


def test_a_tenant_hold_suspends_all_expiry(world: World) -> None:
    chat = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-5", "hello")
    world.run(
        lambda uow: world.app.place_hold_in(
            uow, world.tenant, HoldTarget.TENANT, world.tenant, "regulator inquiry", "admin:x"
        )
    )
    world.later(months(30)).sweep()
    assert world.scope_status(scope("conversation", chat.conversation_id)) == "live"
    assert world.scope_status(scope("contact", chat.contact_id)) == "live"


def test_a_dry_run_lists_what_would_go_and_why_and_changes_nothing(world: World) -> None:
    chat = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-6", "hello")
    before = world.app.recorder.max_notification_id()
    report = world.later(months(7)).sweep(dry_run=True)
    assert world.app.recorder.max_notification_id() == before
    [action] = [
        a for a in report.actions if a.scope_id == scope("conversation", chat.conversation_id)
    ]
    assert (action.action, action.category, action.rule) == (
        "erase",
        "chat_visitor",
        "retention:chat_visitor",
    )
    assert action.due_at is not None
    assert world.readable(scope("conversation", chat.conversation_id))


def test_a_shorter_policy_applies_at_once_and_changes_are_events(world: World) -> None:
    sms = world.message(Channel.WEBCHAT, IdentityKind.VISITOR, "v-7", "hello")
    world.run(
        lambda uow: world.app.change_retention_policy_in(uow, world.tenant, {"chat_visitor": 2})
    )
    world.later(months(3)).sweep()
    assert world.scope_status(scope("conversation", sms.conversation_id)) == "erased"
    events = [type(e).__name__ for e in world.app.events.get(world.tenant)]
    assert "RetentionPolicyChanged" in events


def test_usage_records_older_than_a_year_are_pruned_and_the_chain_still_verifies(
    world: World,
) -> None:
    for n in range(3):
        world.rt.audit.append(
            [
                AuditEntry(
                    world.tenant,
                    world.clock.now(),
                    "agent:a",
                    "agent",
                    "read",
                    "conversation",
                    (f"c{n}",),
                    "GET /x",
                )
            ]
        )
        world.later(months(5))
    world.later(months(1)).sweep()
    # now is T0 + 16 months: only the first entry (made at T0) is past the 12-month period
    remaining = world.rt.audit.entries(world.tenant)
    assert [e["subjects"] for e in remaining] == [["c1"], ["c2"]]
    [result] = world.rt.audit.verify(world.tenant)
    assert result.ok
