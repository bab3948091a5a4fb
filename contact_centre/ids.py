"""Identifiers for new aggregates and entities: time-ordered UUIDs (version 7, RFC 9562).

A version 7 UUID starts with the Unix time in milliseconds, then 74 random bits. Ids made
in a later millisecond sort after those made earlier (within one millisecond, in no
particular order), as UUIDs and as their text, so every index keyed by them (the event
store's ``(originator_id, version)``, the read models' primary keys, the key vault's
scopes) takes new rows at its end: a batch of writes dirties a few pages at
the right edge of each B-tree instead of one random page per row, which is what both
SQLite's write-ahead log and PostgreSQL's WAL (a full image of each page first touched
after a checkpoint) pay for. The random part keeps ids unguessable; the time part tells
no more than the aggregate's own created-at.
"""

from __future__ import annotations

import os
import time
from uuid import UUID

__all__ = ["new_id"]


def new_id() -> UUID:
    """A new version 7 UUID."""
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))  # 80 bits: 12 for rand_a, 62 for rand_b
    rand_a = rand >> 68
    rand_b = rand & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | rand_a << 64 | 0b10 << 62 | rand_b
    return UUID(int=value)
