"""Domain errors. The HTTP layer maps each to a JSON problem with a 4xx status."""

from __future__ import annotations


class DomainError(Exception):
    """Base class of errors a caller can act on."""

    code = "domain_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ValidationError(DomainError):
    """Input that does not describe a valid command or interaction."""

    code = "invalid"


class NotFoundError(DomainError):
    """The thing does not exist, or belongs to another tenant (indistinguishable on purpose)."""

    code = "not_found"


class ConflictError(DomainError):
    """The command does not fit the current state (e.g. replying to a closed conversation)."""

    code = "conflict"


class TenantInactiveError(DomainError):
    """The tenant has been terminated; its data can no longer be changed."""

    code = "tenant_inactive"
