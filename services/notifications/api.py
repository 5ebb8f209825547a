"""Notifications' HTTP door: the mail log of an account."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request

from shared.auth import Caller
from shared.problems import READ, problem_responses
from shared.runtime import runtime_of

from . import service
from .repository import SqlRepository
from .schemas import MailLog, MailLogEntry, Status
from .service import UnitOfWork

router = APIRouter(prefix="/v1", tags=["notifications"])


@router.get(
    "/accounts/{account_id}/emails",
    response_model=MailLog,
    responses=problem_responses(*READ, 422),
    summary="See the e-mails sent to an account's people",
)
async def list_emails(
    account_id: uuid.UUID,
    request: Request,
    caller: Caller,
    status: Annotated[Status | None, Query(description="Only deliveries in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        datetime | None, Query(description="Page on: created_at of the last item seen.")
    ] = None,
) -> MailLog:
    """The delivery log, newest first, for the buyer and operators (R8): who got which mail,
    when, and what became of it. No bodies: they may hold personal data."""
    runtime = runtime_of(request)
    query = service.MailLogQuery(account_id, status, limit, before)
    async with runtime.pool.acquire() as conn:
        uow = UnitOfWork.on(SqlRepository(conn), conn, runtime.outbox, runtime.clock)
        logged = await service.read_mail_log(uow, caller, query)
    items = [MailLogEntry.of(mail) for mail in logged]
    next_before = items[-1].created_at.isoformat() if len(items) == limit else None
    return MailLog(items=items, next_before=next_before)
