"""Bearer tokens → principals, with a short cache, and role checks."""

from __future__ import annotations

import asyncio
import time
from uuid import UUID

from aiohttp import web

from contact_centre.application import ContactCentre, Principal
from contact_centre.tenancy import Role
from infra.http.errors import ApiError

PRINCIPAL: web.RequestKey[Principal] = web.RequestKey("principal", Principal)
ALL_ROLES = frozenset(Role)
STAFF = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT})


class Authenticator:
    """Resolves tokens; positive answers are cached for ``ttl`` seconds (revocation in this
    process is immediate, in other processes it takes effect within ``ttl``)."""

    def __init__(self, app: ContactCentre, ttl: float = 5.0, max_entries: int = 10_000) -> None:
        self.app = app
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[Principal, float]] = {}

    async def resolve(self, token: str) -> Principal | None:
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit is not None and hit[1] > now:
            return hit[0]
        principal = await asyncio.to_thread(self.app.authenticate, token)
        if principal is not None:
            if len(self._cache) >= self.max_entries:
                self._cache.clear()
            self._cache[token] = (principal, now + self.ttl)
        else:
            self._cache.pop(token, None)
        return principal

    def forget_token(self, token_id: UUID) -> None:
        for token, (principal, _) in list(self._cache.items()):
            if principal.token_id == token_id:
                del self._cache[token]

    def forget_tenant(self, tenant_id: UUID) -> None:
        for token, (principal, _) in list(self._cache.items()):
            if principal.tenant_id == tenant_id:
                del self._cache[token]


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


async def authenticate(request: web.Request, auth: Authenticator) -> Principal:
    token = bearer_token(request)
    if token is None:
        raise ApiError(401, "unauthorized", "send an API token as 'Authorization: Bearer <token>'")
    principal = await auth.resolve(token)
    if principal is None:
        raise ApiError(401, "unauthorized", "the token is unknown, revoked, or its tenant inactive")
    request[PRINCIPAL] = principal
    return principal


def require_role(principal: Principal, roles: frozenset[Role]) -> None:
    if principal.role not in roles:
        allowed = ", ".join(sorted(r.value for r in roles))
        raise ApiError(403, "forbidden", f"this needs a token with role: {allowed}")
