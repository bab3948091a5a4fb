"""Outbound webhook plumbing: which targets may be called, the HTTP client (aiohttp: no
redirects, connect and read timeouts, every resolved address checked) and the Standard
Webhooks signer (the ``standardwebhooks`` library)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from standardwebhooks.webhooks import Webhook

from contact_centre.errors import ValidationError
from workflows.webhooks import TransportResult

IPAddress = IPv4Address | IPv6Address
MAX_RESPONSE_READ = 4096  # bytes of an answer read (and thrown away): receivers answer fast


class TargetRefusedError(OSError):
    """The target resolves to an address webhooks may not reach."""


class TargetPolicy:
    """Refuses private, loopback, link-local and other non-public addresses (SSRF), except
    inside the networks the operator allowed (``CC_WEBHOOK_ALLOWED_NETWORKS``)."""

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed: list[IPv4Network | IPv6Network] = [
            ipaddress.ip_network(item, strict=False) for item in allowed
        ]

    def explicitly_allowed(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.allowed)

    def ip_allowed(self, ip: IPAddress) -> bool:
        if isinstance(ip, IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if self.explicitly_allowed(ip):
            return True
        return ip.is_global and not ip.is_multicast

    def check_url(self, url: str) -> str:
        """The URL, or ValidationError saying why webhooks may not call it."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise ValidationError("url is not a valid URL") from None
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValidationError("url must be an https URL with a host")
        if parts.username or parts.password:
            raise ValidationError("url must not carry a user name or password")
        if port == 0:
            raise ValidationError("url has an invalid port")
        host = parts.hostname.rstrip(".").lower()
        literal = _ip(host)
        if host == "localhost" or host.endswith(".localhost"):
            literal = IPv4Address("127.0.0.1")
        if literal is not None:
            if not self.ip_allowed(literal):
                raise ValidationError(
                    "url points at a private, loopback or link-local address, which the "
                    "operator has not allowed (CC_WEBHOOK_ALLOWED_NETWORKS)"
                )
            if parts.scheme == "http" and not self.explicitly_allowed(literal):
                raise ValidationError("url must use https")
        elif parts.scheme == "http":
            raise ValidationError("url must use https")
        return url


def _ip(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


class GuardedResolver(AbstractResolver):
    """DNS answers are checked against the policy before a connection is made, so a name
    that resolves (or is rebound) to an internal address is refused at send time too."""

    def __init__(self, policy: TargetPolicy) -> None:
        self.policy = policy
        self._inner = ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        allowed = [r for r in found if self.policy.ip_allowed(ipaddress.ip_address(r["host"]))]
        if not allowed:
            raise TargetRefusedError(f"{host} resolves to no address webhooks may reach")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


class AiohttpWebhookTransport:
    """Posts webhooks with aiohttp: one pooled session, created in the dispatcher's loop."""

    def __init__(
        self,
        policy: TargetPolicy,
        *,
        connect_timeout: float,
        read_timeout: float,
        concurrency: int = 64,
    ) -> None:
        self.policy = policy
        # Connect and read timeouts (a read timeout bounds each wait for bytes, so a
        # receiver that trickles is cut off too: MAX_RESPONSE_READ bounds what we read).
        self.timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self.concurrency = concurrency
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self.concurrency,
                resolver=GuardedResolver(self.policy),
                ttl_dns_cache=60,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                trust_env=False,  # never through an environment proxy
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> TransportResult:
        started = time.monotonic()

        def took() -> int:
            return int((time.monotonic() - started) * 1000)

        host = (urlsplit(url).hostname or "").lower()
        literal = _ip(host)
        if literal is not None and not self.policy.ip_allowed(literal):
            return TransportResult(None, 0, "target_refused")
        try:
            async with self._client().post(
                url, data=body, headers=dict(headers), allow_redirects=False
            ) as response:
                await response.content.read(MAX_RESPONSE_READ)
                status = response.status
        except TimeoutError:
            return TransportResult(None, took(), "timeout")
        except aiohttp.ClientConnectorDNSError as error:
            refused = isinstance(error.os_error, TargetRefusedError)
            return TransportResult(None, took(), "target_refused" if refused else "dns")
        except aiohttp.ClientConnectorError:
            return TransportResult(None, took(), "connection")
        except aiohttp.ServerDisconnectedError:
            return TransportResult(None, took(), "disconnected")
        except (aiohttp.ClientError, asyncio.IncompleteReadError) as error:
            return TransportResult(None, took(), f"client:{type(error).__name__}")
        return TransportResult(status, took(), None)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


class StandardWebhooksSigner:
    """``webhook-signature`` per Standard Webhooks: ``v1,<base64 HMAC-SHA256>`` of
    ``{id}.{timestamp}.{body}``, one per secret, space-separated."""

    def __init__(self) -> None:
        self._hooks: dict[str, Webhook] = {}

    def _hook(self, secret: str) -> Webhook:
        hook = self._hooks.get(secret)
        if hook is None:
            if len(self._hooks) > 10_000:
                self._hooks.clear()
            hook = self._hooks[secret] = Webhook(secret)
        return hook

    def signature(self, secrets: Sequence[str], msg_id: str, timestamp: datetime, body: str) -> str:
        return " ".join(self._hook(secret).sign(msg_id, timestamp, body) for secret in secrets)
