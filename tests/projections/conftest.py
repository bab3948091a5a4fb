"""A recorded day of work (with privacy actions and queue changes in it) shared by the
projection tests that replay a log."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from contact_centre.errors import ConflictError
from contact_centre.interaction import Channel
from infra.config import Settings
from infra.runtime import Runtime, build
from tests.kafka.scenario import Scenario


@pytest.fixture
def recorded(tmp_path: Path) -> Iterator[Runtime]:
    runtime = build(Settings(data_dir=tmp_path / "data", retention_interval_seconds=0))
    try:
        scenario = Scenario(runtime.app, seed=11)
        scenario.setup()
        for _ in range(6):
            scenario.step(50)
        app = runtime.app
        for state in scenario.tenants:
            contacts = sorted(state.contacts)
            # an inactivity notice, then for some of those contacts activity after it
            for contact_id in contacts[:4]:
                app.run(
                    lambda uow, c=contact_id, t=state.tenant_id: app.notice_inactive_contact_in(
                        uow, t, c, uow.now
                    )
                )
            for contact_id in contacts[4:6]:
                app.run(
                    lambda uow, c=contact_id, t=state.tenant_id: app.erase_contact_in(
                        uow, t, c, "request:erasure"
                    )
                )
            # a merge moves a contact's conversations (and their scopes) to the survivor
            survivor, merged = contacts[6], contacts[7]
            app.run(
                lambda uow, s=survivor, m=merged, t=state.tenant_id: app.merge_contacts_in(
                    uow, t, s, m
                )
            )
        # answers from a queue, some before and some after its threshold changed, so the
        # service level depends on queue events that Kafka may deliver after the answers
        for state in scenario.tenants:
            tid = state.tenant_id
            queue_id, _ = app.run(
                lambda uow, t=tid: app.create_queue_in(uow, t, "Fast lane", [Channel.WEBCHAT])
            )
            for n, conversation in enumerate(state.conversations[:6]):
                if n == 3:
                    app.run(
                        lambda uow, t=tid, q=queue_id: app.configure_queue_in(
                            uow, t, q, {"sl_threshold_seconds": 30}
                        )
                    )
                try:
                    app.run(
                        lambda uow, t=tid, c=conversation, q=queue_id: app.queue_conversation_in(
                            uow, t, c, q, None, "test"
                        )
                    )
                except ConflictError:  # closed by the scenario
                    continue
                with contextlib.suppress(ConflictError):  # an agent without room
                    app.run(
                        lambda uow, t=tid, c=conversation, a=state.agents[n % 2]: app.assign_in(
                            uow, t, c, a, "agent:x"
                        )
                    )
        for _ in range(2):
            scenario.step(50)
        yield runtime
    finally:
        runtime.close()
