import pytest

from contact_centre.errors import ValidationError
from contact_centre.interaction import Identity, IdentityKind
from infra.identities import PhoneEmailNormaliser

normaliser = PhoneEmailNormaliser()


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+44 7700 900123", None, "+447700900123"),
        ("07700 900123", "GB", "+447700900123"),
        ("whatsapp:+447700900123", None, "+447700900123"),
        ("tel:+1-202-555-0143", None, "+12025550143"),
    ],
)
def test_phone_numbers_become_e164(raw: str, region: str | None, expected: str) -> None:
    identity = normaliser.normalise(Identity(IdentityKind.PHONE, raw), region)
    assert identity.address == expected


@pytest.mark.parametrize("raw", ["hello", "+44", "07700 900123"])
def test_unparseable_or_impossible_numbers_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        normaliser.normalise(Identity(IdentityKind.PHONE, raw))


def test_emails_are_lower_cased_and_trimmed() -> None:
    identity = normaliser.normalise(Identity(IdentityKind.EMAIL, "  Ann.Jones@Example.COM "))
    assert identity.address == "ann.jones@example.com"


@pytest.mark.parametrize("raw", ["not-an-email", "a@b", "two@@signs.com", "sp ace@x.com"])
def test_malformed_emails_are_refused(raw: str) -> None:
    with pytest.raises(ValidationError):
        normaliser.normalise(Identity(IdentityKind.EMAIL, raw))


def test_display_names_are_trimmed_and_blank_ones_dropped() -> None:
    identity = normaliser.normalise(Identity(IdentityKind.VISITOR, "v-1", "   "))
    assert identity.display_name is None
