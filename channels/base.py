"""What every adapter shares: per-tenant provider configuration and process-wide options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol
from uuid import UUID

from contact_centre.deliveries import SendResult


@dataclass(frozen=True)
class ProviderConfig:
    """A tenant's settings for one provider, secrets opened (in memory only)."""

    tenant_id: UUID
    provider: str
    settings: dict[str, Any]
    secrets: dict[str, str] = field(repr=False)

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name) or None

    def text(self, name: str, default: str = "") -> str:
        value = self.settings.get(name)
        return value if isinstance(value, str) and value else default

    def strings(self, name: str) -> list[str]:
        value = self.settings.get(name)
        return [v for v in value if isinstance(v, str)] if isinstance(value, list) else []


class ConfigSource(Protocol):
    """Where adapters find a tenant's provider configuration (infra reads the settings
    read model and opens the secrets through the vault)."""

    def get(self, tenant_id: UUID, provider: str) -> ProviderConfig | None: ...


@dataclass(frozen=True)
class ChannelOptions:
    """Process-wide options of the adapters (from ``CC_`` settings): where the providers'
    APIs are (tests point them at local stand-ins) and our own public base URL."""

    public_base_url: str
    twilio_api_base: str | None = None
    slack_api_base: str | None = None
    meta_graph_base: str = "https://graph.facebook.com/v21.0"
    http_timeout: float = 10.0

    def webhook_url(self, tenant_id: UUID, path: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/v1/channels/{tenant_id}/{path}"


class WebhookError(Exception):
    """A webhook request that must be refused: ``status`` and ``code`` become the 4xx JSON
    problem, and nothing is written."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail


def forbidden(detail: str = "the request signature is missing, invalid or stale") -> WebhookError:
    return WebhookError(403, "invalid_signature", detail)


def malformed(detail: str) -> WebhookError:
    return WebhookError(400, "malformed_payload", detail)


class ProviderSender:
    """The shared part of the outbound adapters: the tenant's credentials for a provider."""

    provider: ClassVar[str]
    credential: ClassVar[str]  # the name of the secret a send cannot do without

    def __init__(self, configs: ConfigSource, options: ChannelOptions) -> None:
        self.configs = configs
        self.options = options

    def credentials(self, tenant_id: UUID) -> tuple[ProviderConfig, str] | None:
        config = self.configs.get(tenant_id, self.provider)
        token = config.secret(self.credential) if config else None
        return (config, token) if config is not None and token else None


def unreachable(error: OSError) -> SendResult:
    """A network error from urllib (or a timeout): was the request possibly received?
    Refused connections were not (retry); anything after connecting may have been."""
    reason = getattr(error, "reason", error)
    if isinstance(reason, ConnectionRefusedError):
        return SendResult.failed("connection_refused", transient=True)
    if isinstance(reason, TimeoutError):
        return SendResult.doubtful("timeout")
    return SendResult.doubtful("connection_lost")
