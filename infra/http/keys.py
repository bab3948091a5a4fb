"""Typed application keys, in one module."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from infra.http.auth import Authenticator
    from infra.runtime import Runtime

RUNTIME: web.AppKey[Runtime] = web.AppKey("runtime")
OPENAPI: web.AppKey[dict[str, Any]] = web.AppKey("openapi", dict)
AUTH: web.AppKey[Authenticator] = web.AppKey("auth")
