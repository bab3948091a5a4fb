"""Turning a search text into blind-index tokens (the same keyed hashes the CRM view keeps)."""

from __future__ import annotations

from uuid import UUID

from contact_centre.errors import ValidationError
from infra.runtime import Runtime
from projections.crm import MAX_PREFIX, MIN_PREFIX, search_words


def search_words_of(text: str) -> list[str]:
    """The query's words, checked: a word matches the same word, or a longer word it
    begins (e.g. 'ann jo' finds 'Ann Jones')."""
    words = [w[:MAX_PREFIX] for w in search_words(text) if len(w) >= MIN_PREFIX]
    if not words:
        raise ValidationError(f"search with at least one word of {MIN_PREFIX} or more characters")
    return words


def search_tokens(rt: Runtime, tenant_id: UUID, words: list[str]) -> list[str] | None:
    """The words' blind-index tokens; None when nothing of the tenant's was ever indexed.
    Reads the vault: call it off the event loop."""
    tokens = [rt.vault.existing_blind_index(tenant_id, "search", word) for word in words]
    return None if any(t is None for t in tokens) else [t for t in tokens if t is not None]
