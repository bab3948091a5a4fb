"""When an erasure destroys its keys: right after its events commit, before anything that
listens to the application (the read models) hears of them."""

from __future__ import annotations

from typing import Any

import pytest

from contact_centre.application import AfterCommitError, UnitOfWork
from contact_centre.conversations import ConversationStatus
from contact_centre.errors import ValidationError
from contact_centre.interaction import Channel, IdentityKind
from tests.privacy.support import World, scope


def test_keys_are_destroyed_before_the_read_models_hear_of_the_erasure(world: World) -> None:
    message = world.message(
        Channel.SMS, IdentityKind.PHONE, "+447700900123", "call me back", name="Ann Smith"
    )
    privacy = world.rt.privacy
    order: list[str] = []
    destroy = privacy.vault.destroy

    def destroying(scope_ids: Any) -> int:
        order.append("destroy")
        return destroy(scope_ids)

    def listening(recorded: Any) -> None:
        order.append("read models")

    privacy.vault.destroy = destroying  # type: ignore[method-assign]
    privacy.app.listeners.insert(0, listening)  # before the feed itself
    outcome = privacy.erase_contact(world.tenant, message.contact_id, "request:erasure")

    assert order == ["destroy", "read models"]
    assert outcome.scopes
    assert all(not world.readable(s) for s in outcome.scopes)
    # the read models, fed after the destruction, record the erasure
    world.rt.catch_up()
    assert world.scope_status(scope("contact", message.contact_id)) == "erased"


def test_an_after_commit_action_runs_only_for_a_unit_that_commits(world: World) -> None:
    app = world.app
    ran: list[str] = []

    def refused(uow: UnitOfWork) -> None:
        uow.after_commit(lambda: ran.append("refused"))
        raise ValidationError("no")

    with pytest.raises(ValidationError):
        app.run(refused)
    assert ran == []

    # a unit with nothing to record commits nothing, and its actions still run
    app.run(lambda uow: uow.after_commit(lambda: ran.append("empty")))
    assert ran == ["empty"]


def test_listeners_hear_of_committed_events_even_when_an_after_commit_action_fails(
    world: World,
) -> None:
    message = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900124", "hi")
    app = world.app
    heard: list[int] = []
    app.listeners.append(lambda recorded: heard.append(len(recorded)))

    def failing() -> None:
        raise RuntimeError("vault unavailable")

    def resolving(uow: UnitOfWork) -> None:
        app.change_status_in(
            uow, world.tenant, message.conversation_id, ConversationStatus.RESOLVED, "agent"
        )
        uow.after_commit(failing)

    with pytest.raises(AfterCommitError) as raised:
        app.run(resolving)
    assert str(raised.value.__cause__) == "vault unavailable"
    assert heard == [1]  # the status change, committed


def test_a_batch_whose_after_commit_action_fails_is_not_run_again(world: World) -> None:
    """The writer's batches fall back to one command at a time when the batch fails; not
    when the batch committed and only an action after it failed."""
    app = world.app
    first = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900125", "one")
    second = world.message(Channel.SMS, IdentityKind.PHONE, "+447700900126", "two")
    heard: list[int] = []
    app.listeners.append(lambda recorded: heard.append(len(recorded)))

    def failing() -> None:
        raise RuntimeError("after the batch")

    def resolve(conversation_id: Any, fail: bool) -> Any:
        def command(uow: UnitOfWork) -> None:
            app.change_status_in(
                uow, world.tenant, conversation_id, ConversationStatus.RESOLVED, "agent"
            )
            if fail:
                uow.after_commit(failing)

        return command

    with pytest.raises(AfterCommitError):
        app.run_batch(
            [resolve(first.conversation_id, False), resolve(second.conversation_id, True)]
        )
    assert heard == [2]  # one commit of both changes, heard once; nothing run again
