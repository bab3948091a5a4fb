"""Cursors and page sizes, the same for every listing.

A cursor is opaque to clients: base64url of ``<sort value>:<tie-breaker>`` of the last
row returned.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from contact_centre.errors import ValidationError

MAX_PAGE = 200


def decode_cursor(raw: str | None) -> tuple[int, str] | None:
    if not raw:
        return None
    try:
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode()
        moment, separator, key = text.partition(":")
        if not separator or not key:
            raise ValueError(raw)
        return int(moment), key
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ValidationError("cursor is not one this API returned") from None


def encode_cursor(moment: int, key: str) -> str:
    return base64.urlsafe_b64encode(f"{moment}:{key}".encode()).decode().rstrip("=")


def page_limit(raw: Any, default: int = 50) -> int:
    value = default if raw is None else raw
    try:
        limit = int(value)
    except (TypeError, ValueError):
        raise ValidationError("limit must be an integer") from None
    if isinstance(value, bool) or not 1 <= limit <= MAX_PAGE:
        raise ValidationError(f"limit must be between 1 and {MAX_PAGE}")
    return limit
