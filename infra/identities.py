"""Identity normalisation: E.164 phone numbers (phonenumbers), lower-case email addresses."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers

from contact_centre.errors import ValidationError
from contact_centre.interaction import Identity, IdentityKind

_EMAIL = re.compile(r"^[^@\s<>()\[\],;:\"]+@[^@\s<>()\[\],;:\"]+\.[^@\s<>()\[\],;:\"]+$")
_PHONE_PREFIXES = ("whatsapp:", "tel:", "sms:")
_TOKEN = re.compile(r"^[\w.:@+\-/=]+$")


@lru_cache(maxsize=65_536)
def normalise_phone(raw: str, region: str | None = None) -> str:
    text = raw.strip()
    lowered = text.lower()
    for prefix in _PHONE_PREFIXES:
        if lowered.startswith(prefix):
            text = text[len(prefix) :]
            break
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        raise ValidationError("not a phone number (use E.164, e.g. +447700900123)") from None
    if not phonenumbers.is_possible_number(number):
        raise ValidationError("not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str) -> str:
    text = raw.strip()
    if text.lower().startswith("mailto:"):
        text = text[7:]
    text = text.lower()
    if not _EMAIL.match(text) or len(text) > 320:
        raise ValidationError("not an email address")
    return text


class PhoneEmailNormaliser:
    """Implements :class:`contact_centre.ports.IdentityNormaliser`."""

    def normalise(self, identity: Identity, default_region: str | None = None) -> Identity:
        kind = identity.kind
        if kind is IdentityKind.PHONE:
            address = normalise_phone(identity.address, default_region)
        elif kind is IdentityKind.EMAIL:
            address = normalise_email(identity.address)
        else:
            address = identity.address.strip()
            if not _TOKEN.match(address):
                raise ValidationError(f"a {kind.value} id may not contain spaces or punctuation")
        display_name = identity.display_name.strip() if identity.display_name else None
        return Identity(kind, address, display_name or None)
