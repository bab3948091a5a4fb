from datetime import UTC, datetime
from uuid import uuid4

import pytest

from contact_centre.errors import ValidationError
from contact_centre.interaction import (
    Attachment,
    Channel,
    Direction,
    Identity,
    IdentityKind,
    Interaction,
)


def make(**kw: object) -> Interaction:
    values: dict[str, object] = {
        "tenant_id": uuid4(),
        "channel": Channel.SMS,
        "direction": Direction.INBOUND,
        "provider": "twilio",
        "provider_message_id": "SM1",
        "sender": Identity(IdentityKind.PHONE, "+447700900123"),
        "recipient": Identity(IdentityKind.PHONE, "+442071838750"),
        "occurred_at": datetime(2026, 11, 21, 10, tzinfo=UTC),
    }
    values.update(kw)
    return Interaction(**values)  # type: ignore[arg-type]


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValidationError, match="time zone"):
        make(occurred_at=datetime(2026, 11, 21, 10))  # noqa: DTZ001


def test_times_are_converted_to_utc() -> None:
    from datetime import timedelta, timezone

    local = datetime(2026, 11, 21, 12, tzinfo=timezone(timedelta(hours=2)))
    assert make(occurred_at=local).occurred_at == datetime(2026, 11, 21, 10, tzinfo=UTC)


def test_empty_provider_message_id_is_refused() -> None:
    with pytest.raises(ValidationError, match="provider_message_id"):
        make(provider_message_id=" ")


def test_oversized_body_is_refused() -> None:
    with pytest.raises(ValidationError, match="body"):
        make(body="x" * 100_001)


def test_attachment_hash_must_be_sha256_hex() -> None:
    with pytest.raises(ValidationError, match="sha256"):
        Attachment(name="a.pdf", content_type="application/pdf", sha256="nothex")


def test_phone_channels_thread_by_the_pair_of_numbers() -> None:
    interaction = make()
    assert interaction.natural_thread_key() == "phone:+447700900123|phone:+442071838750"


def test_an_explicit_thread_key_wins() -> None:
    assert make(thread_key="<abc@mail>").natural_thread_key() == "<abc@mail>"
