"""Notifications' HTTP door: the delivery log of an account."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from shared import people
from shared.auth import verify_token
from shared.runtime import as_json, runtime_of

from . import repository

router = APIRouter(prefix="/v1", tags=["notifications"])
Authorization = Annotated[str | None, Header()]


@router.get("/accounts/{account_id}/emails")
async def list_emails(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    """The delivery log, for the buyer and operators (no bodies: they may hold personal data)."""
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, {"buyer"}, "account")
    rows = await repository.deliveries_of(rt.pool, account_id)
    return {"items": as_json([dict(r) for r in rows])}
