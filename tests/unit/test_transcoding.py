"""The event store's transcodings: decoding gives back exactly the objects encoded."""

from __future__ import annotations

import uuid
from uuid import UUID

import pytest
from eventsourcing.persistence import JSONTranscoder, UUIDAsHex

from contact_centre.application import FastUUIDAsHex


@pytest.mark.parametrize(
    "value",
    [uuid.uuid4() for _ in range(50)]
    + [uuid.uuid5(uuid.NAMESPACE_URL, "x"), UUID(int=0), UUID(int=2**128 - 1), uuid.uuid1()],
)
def test_fast_uuid_decoding_gives_the_uuid_the_library_gives(value: UUID) -> None:
    data = UUIDAsHex().encode(value)
    fast, library = FastUUIDAsHex().decode(data), UUIDAsHex().decode(data)
    assert fast == library == value
    assert hash(fast) == hash(value)
    assert (str(fast), repr(fast), fast.version, fast.is_safe) == (
        str(value),
        repr(value),
        value.version,
        library.is_safe,
    )


def test_fast_uuid_decoding_refuses_what_uuid_refuses() -> None:
    for bad in ("not-a-uuid", "g" * 32, "12345"):
        with pytest.raises(ValueError, match=r"badly formed|invalid literal"):
            FastUUIDAsHex().decode(bad)


def test_the_applications_transcoder_round_trips_events_state() -> None:
    from contact_centre.application import ContactCentre

    transcoder = JSONTranscoder()
    ContactCentre.register_transcodings(ContactCentre.__new__(ContactCentre), transcoder)
    assert isinstance(transcoder.names["uuid_hex"], FastUUIDAsHex)
    state = {"ids": [uuid.uuid4(), uuid.uuid4()], "nested": {"id": uuid.uuid4()}}
    assert transcoder.decode(transcoder.encode(state)) == state
