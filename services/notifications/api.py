"""Notifications' HTTP door: the delivery log of an account."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request

from shared import people
from shared.auth import verify_token
from shared.runtime import as_json, runtime_of

from . import repository

router = APIRouter(prefix="/v1", tags=["notifications"])
Authorization = Annotated[str | None, Header()]
Status = Literal["pending", "handing_over", "sent", "failed", "unconfirmed"]


@router.get("/accounts/{account_id}/emails")
async def list_emails(
    account_id: uuid.UUID,
    request: Request,
    authorization: Authorization = None,
    status: Annotated[Status | None, Query(description="Only deliveries in this state.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before: Annotated[
        datetime | None, Query(description="Page on: created_at of the last item seen.")
    ] = None,
) -> dict[str, Any]:
    """The delivery log, newest first, for the buyer and operators (R8): who got which mail,
    when, and what became of it. No bodies: they may hold personal data."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, {"buyer"}, "account")
    rows = await repository.deliveries_of(rt.pool, account_id, status, limit, before)
    items = as_json([dict(r) for r in rows])
    return {"items": items, "next_before": items[-1]["created_at"] if len(items) == limit else None}
