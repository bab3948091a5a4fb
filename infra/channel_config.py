"""Per-tenant channel settings: validation of what admins send, and the lookup adapters use.

Each provider has public fields (kept as given, shown back) and secret fields (sealed
under the tenant's secrets scope, write-only: shown masked).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from channels.base import ProviderConfig
from contact_centre.channel_settings import Provider
from contact_centre.errors import ValidationError
from contact_centre.privacy import Erased
from infra.db import Database
from infra.identities import normalise_email, normalise_phone
from infra.vault import KeyVault
from projections import channel_settings
from projections.base import sealed_from_text

Check = Callable[[Any, str], Any]


def _text(max_len: int = 500, pattern: str | None = None) -> Check:
    regex = re.compile(pattern) if pattern else None

    def check(value: Any, name: str) -> str:
        if not isinstance(value, str) or not value.strip() or len(value) > max_len:
            raise ValidationError(f"{name} must be a non-empty string of at most {max_len} chars")
        if regex is not None and not regex.match(value):
            raise ValidationError(f"{name} is not in the expected form")
        return value.strip()

    return check


def _list(item: Check, max_items: int = 100) -> Check:
    def check(value: Any, name: str) -> list[Any]:
        if not isinstance(value, list) or len(value) > max_items:
            raise ValidationError(f"{name} must be a list of at most {max_items} items")
        return [item(v, f"{name}[{i}]") for i, v in enumerate(value)]

    return check


def _phone(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be a phone number string")
    return normalise_phone(value)


def _email(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValidationError(f"{name} must be an email address")
    return normalise_email(value)


def _url(value: Any, name: str) -> str:
    text = _text(2000)(value, name)
    parts = urlsplit(text)
    if parts.scheme not in ("https", "http") or not parts.netloc:
        raise ValidationError(f"{name} must be an http(s) URL")
    return str(text)


def _origin(value: Any, name: str) -> str:
    text = _url(value, name).rstrip("/")
    parts = urlsplit(text)
    if parts.path or parts.query or parts.fragment:
        raise ValidationError(f"{name} must be an origin: scheme://host[:port]")
    return text.lower()


def _port(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 65535:
        raise ValidationError(f"{name} must be a TCP port number")
    return value


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(f"{name} must be true or false")
    return value


def _choice(*options: str) -> Check:
    def check(value: Any, name: str) -> str:
        if value not in options:
            raise ValidationError(f"{name} must be one of: {', '.join(options)}")
        return str(value)

    return check


def _object(fields: dict[str, Check]) -> Check:
    def check(value: Any, name: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValidationError(f"{name} must be an object")
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ValidationError(f"unknown field(s) in {name}: {', '.join(unknown)}")
        return {k: fields[k](v, f"{name}.{k}") for k, v in value.items() if v is not None}

    return check


def _seconds(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 5 <= value <= 3600:
        raise ValidationError(f"{name} must be 5-3600 seconds")
    return value


_PRE_CHAT_FIELD = _object({"field": _choice("name", "email", "question"), "required": _bool})


@dataclass(frozen=True)
class ProviderSchema:
    public: dict[str, Check]
    secrets: tuple[str, ...]
    required: tuple[str, ...]  # public fields that must be given
    required_secrets: tuple[str, ...]


SCHEMAS: dict[Provider, ProviderSchema] = {
    Provider.TWILIO: ProviderSchema(
        public={
            "account_sid": _text(64, r"^AC[0-9a-fA-F]{32}$"),
            "phone_numbers": _list(_phone),
            "help_text": _text(320),
            "voice": _object(
                {
                    "greeting": _text(500),
                    "voicemail_prompt": _text(500),
                    "queue_name": _text(64),
                    "wait_url": _url,
                    "agents_online": _bool,
                    "voicemail_max_seconds": _seconds,
                }
            ),
        },
        secrets=("auth_token",),
        required=("account_sid", "phone_numbers"),
        required_secrets=("auth_token",),
    ),
    Provider.SLACK: ProviderSchema(
        public={
            "channel_ids": _list(_text(32, r"^[A-Z0-9]+$")),
            "alerts_channel_id": _text(32, r"^[A-Z0-9]+$"),  # supervisors' SLA alerts
        },
        secrets=("signing_secret", "bot_token"),
        required=("channel_ids",),
        required_secrets=("signing_secret", "bot_token"),
    ),
    Provider.META: ProviderSchema(
        public={"page_ids": _list(_text(32, r"^[0-9]+$"))},
        secrets=("app_secret", "page_access_token", "verify_token"),
        required=("page_ids",),
        required_secrets=("app_secret", "page_access_token", "verify_token"),
    ),
    Provider.EMAIL: ProviderSchema(
        public={
            "addresses": _list(_email, 50),
            "from_name": _text(200),
            "smtp_host": _text(255, r"^[A-Za-z0-9.\-\[\]:]+$"),
            "smtp_port": _port,
            "smtp_username": _text(320),
            "smtp_security": _choice("starttls", "tls", "none"),
        },
        secrets=("smtp_password",),
        required=("addresses",),
        required_secrets=(),
    ),
    Provider.WEBCHAT: ProviderSchema(
        public={
            "widget_key": _text(128, r"^[A-Za-z0-9_-]{16,128}$"),
            "allowed_origins": _list(_origin, 50),
            "pre_chat_fields": _list(_PRE_CHAT_FIELD, 3),
            "privacy_policy_url": _url,
        },
        secrets=(),
        required=("widget_key", "allowed_origins"),
        required_secrets=(),
    ),
}


def parse_provider(raw: str) -> Provider:
    try:
        return Provider(raw)
    except ValueError:
        options = ", ".join(p.value for p in Provider)
        raise ValidationError(f"provider must be one of: {options}") from None


def validate(
    provider: Provider, doc: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, str | None]]:
    """Split a PUT body into (public settings, secret changes), or ValidationError."""
    schema = SCHEMAS[provider]
    unknown = sorted(set(doc) - set(schema.public) - set(schema.secrets))
    if unknown:
        raise ValidationError(f"unknown field(s) for {provider.value}: {', '.join(unknown)}")
    for name in schema.required:
        if doc.get(name) in (None, "", []):
            raise ValidationError(f"{name} is required")
    public = {
        name: check(doc[name], name)
        for name, check in schema.public.items()
        if doc.get(name) is not None
    }
    secrets: dict[str, str | None] = {}
    for name in schema.secrets:
        if name not in doc:
            continue  # unchanged
        value = doc[name]
        if value is not None and (not isinstance(value, str) or not 1 <= len(value) <= 500):
            raise ValidationError(f"{name} must be a string of 1-500 characters, or null")
        secrets[name] = value
    return public, secrets


def mask(secret: str) -> str:
    """Enough to recognise which token is set, not enough to use it."""
    return "****" + secret[-4:] if len(secret) >= 16 else "****"


class ConfigStore:
    """Implements :class:`channels.base.ConfigSource` over the settings read model."""

    def __init__(self, readdb: Database, vault: KeyVault) -> None:
        self.readdb = readdb
        self.vault = vault

    def row(self, tenant_id: UUID, provider: str) -> dict[str, Any] | None:
        with self.readdb.read() as tx:
            return channel_settings.get_settings(tx, str(tenant_id), provider)

    def get(self, tenant_id: UUID, provider: str) -> ProviderConfig | None:
        row = self.row(tenant_id, provider)
        if row is None or not row["settings"]:
            return None
        secrets: dict[str, str] = {}
        sealed = sealed_from_text(row["secrets"])
        if sealed is not None:
            opened = self.vault.open(sealed)
            if not isinstance(opened, Erased):
                secrets = dict(json.loads(opened))
        return ProviderConfig(tenant_id, provider, dict(row["settings"]), secrets)

    def shown(self, tenant_id: UUID, provider: Provider) -> dict[str, Any] | None:
        """The settings as GET shows them: secrets masked."""
        config = self.get(tenant_id, provider.value)
        if config is None:
            return None
        body: dict[str, Any] = dict(config.settings)
        for name in SCHEMAS[provider].secrets:
            value = config.secrets.get(name)
            body[name] = mask(value) if value else None
        return body
