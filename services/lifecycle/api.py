"""Lifecycle's HTTP door: subscriptions, their stage and dates."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from shared import people
from shared.auth import verify_token
from shared.problems import not_found
from shared.runtime import as_json, runtime_of

from . import repository

router = APIRouter(prefix="/v1", tags=["lifecycle"])
Authorization = Annotated[str | None, Header()]
RENEWAL_READERS = {"buyer"}  # R8: renewal data is the buyer's


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    sub = await repository.get_subscription(rt.pool, subscription_id)
    if sub is None:
        raise not_found("subscription")
    await people.require_role(rt.pool, who, sub["account_id"], RENEWAL_READERS, "subscription")
    return as_json(dict(sub))  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/subscriptions")
async def list_subscriptions(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    await people.require_role(rt.pool, who, account_id, RENEWAL_READERS, "account")
    subs = await repository.list_subscriptions(rt.pool, account_id)
    return {"items": as_json([dict(s) for s in subs])}
