"""The writer: batches commit in the writer thread, and their callers hear back only once
the writer's listeners (the in-process feed) have been told."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from contact_centre.application import Receive
from contact_centre.interaction import Channel, Direction, Identity, IdentityKind, Interaction
from infra.runtime import Runtime


def _interaction(tenant: UUID, sender: str) -> Interaction:
    return Interaction(
        tenant_id=tenant,
        channel=Channel.SMS,
        direction=Direction.INBOUND,
        provider="twilio",
        provider_message_id=f"SM{uuid4().hex}",
        sender=Identity(IdentityKind.PHONE, sender),
        body="Where is my parcel?",
        occurred_at=datetime.now(UTC),
    )


async def test_callers_hear_back_after_the_listeners_saw_their_batch(runtime: Runtime) -> None:
    tenant, _ = runtime.app.register_tenant("Acme")
    told: list[tuple[int, str]] = []
    release = threading.Event()

    def slow_listener(recorded: Any) -> None:
        release.wait(5)
        told.extend((position, threading.current_thread().name) for position, _ in recorded)

    runtime.writer.listeners.append(slow_listener)
    runtime.start()
    pending = [
        asyncio.ensure_future(
            runtime.writer.run(Receive(runtime.app, _interaction(tenant, f"+4477009001{i:02d}")))
        )
        for i in range(20)
    ]
    await asyncio.sleep(0.2)
    assert not any(future.done() for future in pending)  # committed, but not yet told
    release.set()
    positions = [position for _, position in await asyncio.gather(*pending)]
    assert all(position is not None for position in positions)
    seen = {position for position, _ in told}
    assert set(positions) <= seen
    assert [position for position, _ in told] == sorted(seen)  # in log order
    assert {thread for _, thread in told} == {"writer"}
    # the read models show every answered write
    latest = max(p for p in positions if p is not None)
    assert runtime.feed.progress.get("inbox") >= latest


def test_saves_outside_the_writer_reach_its_listeners_at_once(runtime: Runtime) -> None:
    told: list[int] = []
    runtime.writer.listeners.append(lambda recorded: told.extend(p for p, _ in recorded))
    tenant, _ = runtime.app.register_tenant("Acme")
    runtime.app.receive(_interaction(tenant, "+447700900123"))
    latest = runtime.app.recorder.max_notification_id()
    assert told
    assert told[-1] == latest
