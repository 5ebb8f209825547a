"""Lifecycle's HTTP door: subscriptions, their stage, entitlements and dates.

R8, as decided here: the buyer (and support) sees everything: term, dates, auto-renew, pending
changes. Admins who are not the buyer manage product access, so they see the product view
(offering, seats, stage, entitlements) and no billing or renewal data: no term, dates,
auto-renew, payment method or pending changes. Payers see invoices only (403 here); people of
other accounts get 404.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request

from shared import people
from shared.auth import verify_token
from shared.problems import not_found
from shared.runtime import as_json, runtime_of

from . import domain, repository

router = APIRouter(prefix="/v1", tags=["lifecycle"])
Authorization = Annotated[str | None, Header()]
READERS = {"buyer", "primary_admin", "secondary_admin"}
RENEWAL_READERS = {"buyer", "operator"}  # R8: renewal data is the buyer's


def product_view(sub: Any) -> dict[str, Any]:
    return {
        "id": sub["id"],
        "account_id": sub["account_id"],
        "offering": sub["offering"],
        "seats": sub["seats"],
        "stage": sub["stage"],
        "trial": sub["trial"],
        "entitlements": domain.entitlements(sub["stage"]),  # R35
    }


def buyer_view(sub: Any) -> dict[str, Any]:
    return {
        **product_view(sub),
        "order_id": sub["order_id"],
        "term": sub["term"],
        "time_zone": sub["time_zone"],
        "auto_renew": sub["auto_renew"],
        "payment_method": sub["payment_method"],
        "channel": sub["channel"],
        "anniversary": sub["anniversary"],
        "starts_at": sub["starts_at"],
        "expires_at": sub["expires_at"],
        "renews_at": sub["renews_at"],
        "renewal_window_opens_at": domain.renewal_window_opens_at(
            sub["renews_at"], sub["time_zone"]
        ),
        "stage_changed_at": sub["stage_changed_at"],
        "stage_reason": sub["stage_reason"],
        "next_stage_at": sub["next_stage_at"],
        "pending_changes": {"term": sub["pending_term"], "offering": sub["pending_offering"]},
    }


def view_for(roles: set[str], sub: Any) -> dict[str, Any]:
    return buyer_view(sub) if roles & RENEWAL_READERS else product_view(sub)


@router.get("/subscriptions/{subscription_id}")
async def get_subscription(
    subscription_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    sub = await repository.get_subscription(rt.pool, subscription_id)
    if sub is None:
        raise not_found("subscription")
    roles = await people.require_role(rt.pool, who, sub["account_id"], READERS, "subscription")
    return as_json(view_for(roles, sub))  # type: ignore[no-any-return]


@router.get("/accounts/{account_id}/subscriptions")
async def list_subscriptions(
    account_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = runtime_of(request)
    who = verify_token(rt.settings, rt.clock, authorization)
    roles = await people.require_role(rt.pool, who, account_id, READERS, "account")
    subs = await repository.list_subscriptions(rt.pool, account_id)
    return {"items": as_json([view_for(roles, s) for s in subs])}
