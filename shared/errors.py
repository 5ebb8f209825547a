"""Domain errors: what a business rule says when it refuses.

``domain.py`` and ``service.py`` raise these; they know nothing of HTTP. The HTTP door maps
them to problem documents in one place (``shared.problems``): the kind of refusal decides the
status, the slug names the rule for clients (``urn:subscription-platform:problem:<slug>``).
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A refusal by a business rule. ``rule`` is the rule id (``R15``) where one applies;
    ``extensions`` travel to the problem document (``errors`` naming fields, limits, ...)."""

    status: ClassVar[int] = 422

    def __init__(
        self,
        slug: str,
        title: str,
        detail: str = "",
        *,
        rule: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.slug = slug
        self.title = title
        self.detail = detail
        self.rule = rule
        self.extensions = extensions


class Invalid(DomainError):
    """The request breaks a rule about its own content (422)."""

    status = 422


class Forbidden(DomainError):
    """The caller's role does not allow it (403)."""

    status = 403


class NotFound(DomainError):
    """Nothing with that id is visible to the caller (404)."""

    status = 404


class Conflict(DomainError):
    """The current state does not allow it (409)."""

    status = 409


class Gone(DomainError):
    """It existed and is no longer available (410)."""

    status = 410


def invalid_field(field: str, detail: str, *, rule: str | None = None) -> Invalid:
    """A 422 naming one field."""
    return Invalid(
        "validation",
        "The request is not valid",
        detail,
        rule=rule,
        errors=[{"field": field, "message": detail}],
    )


def not_found(what: str) -> NotFound:
    return NotFound("not-found", "Not found", f"No {what} with that id is visible to you.")
