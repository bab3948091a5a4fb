"""The normalised shape every channel adapter produces: :class:`Interaction`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from uuid import UUID

from contact_centre.clock import require_aware_utc
from contact_centre.errors import ValidationError

MAX_BODY_CHARS = 100_000
MAX_ADDRESS_CHARS = 320
MAX_NAME_CHARS = 256
MAX_PROVIDER_ID_CHARS = 512
MAX_THREAD_KEY_CHARS = 2_000
MAX_ATTACHMENTS = 50


class Channel(StrEnum):
    VOICE = "voice"
    SMS = "sms"
    WHATSAPP = "whatsapp"
    EMAIL = "email"
    WEBCHAT = "webchat"
    SOCIAL = "social"

    @property
    def is_phone(self) -> bool:
        return self in (Channel.VOICE, Channel.SMS, Channel.WHATSAPP)


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class IdentityKind(StrEnum):
    PHONE = "phone"
    EMAIL = "email"
    VISITOR = "visitor"
    HANDLE = "handle"


def _bounded(value: str, limit: int, name: str, *, allow_empty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a string")
    if not allow_empty and not value.strip():
        raise ValidationError(f"{name} must not be empty")
    if len(value) > limit:
        raise ValidationError(f"{name} is longer than {limit} characters")
    if "\x00" in value:
        raise ValidationError(f"{name} must not contain NUL characters")
    return value


@dataclass(frozen=True, slots=True)
class Identity:
    """How a person is reached on a channel: a phone number, email, visitor id or handle."""

    kind: IdentityKind
    address: str
    display_name: str | None = None

    def __post_init__(self) -> None:
        _bounded(self.address, MAX_ADDRESS_CHARS, "address")
        if self.display_name is not None:
            _bounded(self.display_name, MAX_NAME_CHARS, "display_name", allow_empty=True)


@dataclass(frozen=True, slots=True)
class Attachment:
    """Metadata of a file that came with a message (the bytes stay with the provider)."""

    name: str
    content_type: str
    size: int | None = None
    sha256: str | None = None
    url: str | None = None

    def __post_init__(self) -> None:
        _bounded(self.name, MAX_NAME_CHARS, "attachment name", allow_empty=True)
        _bounded(self.content_type, 255, "attachment content_type")
        if self.size is not None and (isinstance(self.size, bool) or self.size < 0):
            raise ValidationError("attachment size must be a non-negative integer")
        if self.sha256 is not None and (
            len(self.sha256) != 64 or any(c not in "0123456789abcdef" for c in self.sha256)
        ):
            raise ValidationError("attachment sha256 must be 64 lower-case hex digits")
        if self.url is not None:
            _bounded(self.url, 2_000, "attachment url")


@dataclass(frozen=True, slots=True)
class Interaction:
    """One message (or call) on one channel, in the shape the core understands."""

    tenant_id: UUID
    channel: Channel
    direction: Direction
    provider: str
    provider_message_id: str
    sender: Identity
    occurred_at: datetime
    body: str = ""
    recipient: Identity | None = None
    thread_key: str | None = None
    subject: str | None = None
    attachments: tuple[Attachment, ...] = field(default=())

    def __post_init__(self) -> None:
        _bounded(self.provider, 64, "provider")
        _bounded(self.provider_message_id, MAX_PROVIDER_ID_CHARS, "provider_message_id")
        _bounded(self.body, MAX_BODY_CHARS, "body", allow_empty=True)
        if self.thread_key is not None:
            _bounded(self.thread_key, MAX_THREAD_KEY_CHARS, "thread_key")
        if self.subject is not None:
            _bounded(self.subject, 1_000, "subject", allow_empty=True)
        if len(self.attachments) > MAX_ATTACHMENTS:
            raise ValidationError(f"at most {MAX_ATTACHMENTS} attachments")
        object.__setattr__(self, "occurred_at", require_aware_utc(self.occurred_at, "occurred_at"))

    def natural_thread_key(self) -> str:
        theirs, ours = (
            (self.sender, self.recipient)
            if self.direction is Direction.INBOUND
            else (self.recipient, self.sender)
        )
        return natural_thread_key(self.thread_key, theirs, ours)


def natural_thread_key(
    thread_key: str | None, theirs: Identity | None, ours: Identity | None
) -> str:
    """The thread a message belongs to when the provider names none.

    Phone channels thread by the pair of numbers; others by the customer's and our
    address. Identities are expected to be normalised already.
    """
    if thread_key:
        return thread_key
    their_addr = f"{theirs.kind}:{theirs.address}" if theirs else "-"
    our_addr = f"{ours.kind}:{ours.address}" if ours else "-"
    return f"{their_addr}|{our_addr}"
