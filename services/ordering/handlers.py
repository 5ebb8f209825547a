"""Ordering keeps its own view of each subscription's dates and stage from lifecycle's events.

R27-R30, R34 and R38 are decided on this projection; ordering never asks lifecycle over HTTP.
An event about a subscription ordering did not sell changes nothing (it is logged).
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from shared.contracts import (
    StageChanged,
    SubscriptionActivated,
    SubscriptionReactivated,
    SubscriptionRenewed,
)
from shared.messaging import EventConsumer, HandlerContext

from . import repository

log = logging.getLogger(__name__)
consumer = EventConsumer("ordering")
LAPSED_ON_UNPAID_INVOICE = "invoice_unpaid"  # lifecycle's StageChanged reason (R31)


async def _update(ctx: HandlerContext, **changes: Any) -> None:
    subscription_id = ctx.envelope.subscription_id
    if subscription_id is None or not await repository.update_subscription(
        ctx.conn, uuid.UUID(str(subscription_id)), **changes
    ):
        log.warning(
            "ordering: %s for unknown subscription %s ignored",
            ctx.envelope.event_type,
            subscription_id,
        )


@consumer.on(SubscriptionActivated)
async def on_activated(ctx: HandlerContext, event: SubscriptionActivated) -> None:
    """Dates from lifecycle. Auto-renew is not copied back: ordering owns it (R24), and the
    buyer may have changed it after the order while this event was on its way."""
    await _update(
        ctx,
        stage="active",
        starts_at=event.starts_at,
        expires_at=event.expires_at,
        renews_at=event.renews_at,
        time_zone=event.time_zone,
    )


@consumer.on(SubscriptionRenewed)
async def on_renewed(ctx: HandlerContext, event: SubscriptionRenewed) -> None:
    """The renewal is a new purchase for R29 and R38; pending changes took effect (R28, R29)."""
    await _update(
        ctx,
        stage="active",
        offering=event.offering,
        term=event.term,
        seats=event.seats,
        starts_at=event.starts_at,
        expires_at=event.expires_at,
        renews_at=event.renews_at,
        purchased_at=ctx.envelope.occurred_at,
        purchase_kind="renewal",
        pending_term=None,
        pending_offering=None,
    )


@consumer.on(StageChanged)
async def on_stage_changed(ctx: HandlerContext, event: StageChanged) -> None:
    """R34: a lapse on an unpaid invoice that ends in Cancelled makes the account prepay."""
    changes: dict[str, Any] = {"stage": event.to_stage}
    if event.to_stage == "expired" and event.reason == LAPSED_ON_UNPAID_INVOICE:
        changes["lapsed_unpaid"] = True
    elif event.to_stage == "active":
        changes["lapsed_unpaid"] = False
    await _update(ctx, **changes)
    if event.to_stage == "cancelled" and ctx.envelope.subscription_id is not None:
        await repository.require_prepayment(ctx.conn, ctx.envelope.subscription_id)


@consumer.on(SubscriptionReactivated)
async def on_reactivated(ctx: HandlerContext, event: SubscriptionReactivated) -> None:
    await _update(ctx, stage="active", expires_at=event.expires_at, renews_at=event.renews_at)
