"""JSON problems: every error leaves as ``{"error": code, "detail": ...}`` with its status."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from contact_centre.errors import (
    ConflictError,
    DomainError,
    NotFoundError,
    TenantInactiveError,
    ValidationError,
)
from infra.writer import OverloadedError

log = logging.getLogger("contact_centre.http")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(Exception):
    def __init__(self, status: int, code: str, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.extra = extra


def problem(status: int, code: str, detail: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "detail": detail, **extra}, status=status)


_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid",
    429: "rate_limited",
    503: "unavailable",
}


def domain_status(error: DomainError) -> int:
    if isinstance(error, ValidationError):
        return 422
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, ConflictError):
        return 409
    if isinstance(error, TenantInactiveError):
        return 403
    return 400


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as error:
        return problem(error.status, error.code, error.detail, **error.extra)
    except DomainError as error:
        return problem(domain_status(error), error.code, error.detail)
    except OverloadedError:
        response = problem(503, "overloaded", "too many writes in flight; retry shortly")
        response.headers["Retry-After"] = "1"
        return response
    except web.HTTPRequestEntityTooLarge as error:
        return problem(413, "payload_too_large", error.text or "request body too large")
    except web.HTTPException as error:
        if error.status < 400:
            raise
        code = _STATUS_CODES.get(error.status, "http_error")
        return problem(error.status, code, error.reason)
    except Exception as error:
        # Messages of unexpected errors may quote input (personal data): log the type and
        # where it happened, never the message.
        route = request.match_info.route.resource
        where = "".join(traceback.format_tb(error.__traceback__)[-3:])
        log.error(
            "unhandled %s on %s %s\n%s",
            type(error).__name__,
            request.method,
            route.canonical if route else "?",
            where,
        )
        return problem(500, "internal", "internal error")
