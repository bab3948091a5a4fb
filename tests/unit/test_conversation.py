from datetime import UTC, datetime
from uuid import uuid4

import pytest

from contact_centre.conversations import Conversation, ConversationStatus
from contact_centre.errors import ConflictError
from contact_centre.interaction import Channel
from contact_centre.privacy import Sealed

NOW = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)


def new_conversation() -> Conversation:
    return Conversation.open(uuid4(), uuid4(), Channel.SMS, uuid4(), Sealed("s", "t"), NOW)


def test_a_new_conversation_is_open_and_unassigned() -> None:
    conversation = new_conversation()
    assert conversation.status is ConversationStatus.OPEN
    assert conversation.assignee_id is None


def test_status_moves_through_pending_and_resolved_and_back_to_open() -> None:
    conversation = new_conversation()
    assert conversation.change_status(ConversationStatus.PENDING, "agent:x", NOW)
    assert conversation.change_status(ConversationStatus.RESOLVED, "agent:x", NOW)
    assert conversation.change_status(ConversationStatus.OPEN, "agent:x", NOW)
    events = [type(e).__name__ for e in conversation.collect_events()]
    assert events == ["Opened", "MarkedPending", "Resolved", "Reopened"]


def test_changing_to_the_current_status_records_nothing() -> None:
    conversation = new_conversation()
    conversation.collect_events()
    assert conversation.change_status(ConversationStatus.OPEN, "agent:x", NOW) is False
    assert conversation.collect_events() == []


def test_a_closed_conversation_refuses_replies_and_status_changes() -> None:
    conversation = new_conversation()
    conversation.change_status(ConversationStatus.CLOSED, "agent:x", NOW)
    with pytest.raises(ConflictError):
        conversation.send_message(uuid4(), "agent:x", Sealed("s", "t"), NOW)
    with pytest.raises(ConflictError):
        conversation.change_status(ConversationStatus.OPEN, "agent:x", NOW)


def test_a_customer_message_reopens_a_resolved_conversation_but_not_an_open_one() -> None:
    conversation = new_conversation()
    conversation.reopen_for_customer(NOW)
    assert [type(e).__name__ for e in conversation.collect_events()] == ["Opened"]
    conversation.change_status(ConversationStatus.RESOLVED, "agent:x", NOW)
    conversation.reopen_for_customer(NOW)
    assert conversation.status is ConversationStatus.OPEN
    reopened = conversation.collect_events()[-1]
    assert isinstance(reopened, Conversation.Reopened)
    assert reopened.reason == "customer_replied"


def test_a_failed_command_leaves_no_pending_event() -> None:
    conversation = new_conversation()
    conversation.change_status(ConversationStatus.CLOSED, "agent:x", NOW)
    before = len(conversation.pending_events)
    with pytest.raises(ConflictError):
        conversation.assign(uuid4(), "a", NOW)
    assert len(conversation.pending_events) == before
