"""Notifications' HTTP models: the mail log as the door answers it."""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel

from shared.schemas import Instant

from .repository import LoggedMail

Status = Literal["pending", "handing_over", "sent", "failed", "unconfirmed"]


class MailLogEntry(BaseModel):
    """Who got which mail, when, and what became of it. No bodies: they may hold personal
    data."""

    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    recipient: str
    roles: list[str]
    template: str
    language: str
    subject: str
    status: Status
    attempts: int
    last_error: str | None
    next_attempt_at: Instant
    created_at: Instant
    sent_at: Instant | None
    failed_at: Instant | None

    @classmethod
    def of(cls, mail: LoggedMail) -> MailLogEntry:
        return cls(
            id=mail.id,
            event_id=mail.event_id,
            event_type=mail.event_type,
            recipient=mail.recipient,
            roles=list(mail.roles),
            template=mail.template,
            language=mail.language,
            subject=mail.subject,
            status=mail.status,
            attempts=mail.attempts,
            last_error=mail.last_error,
            next_attempt_at=mail.next_attempt_at,
            created_at=mail.created_at,
            sent_at=mail.sent_at,
            failed_at=mail.failed_at,
        )


class MailLog(BaseModel):
    """A page of the log, newest first; ``next_before`` pages on (null on the last page)."""

    items: list[MailLogEntry]
    next_before: str | None
