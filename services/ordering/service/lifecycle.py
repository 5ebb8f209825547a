"""Ordering's view of each subscription, kept from lifecycle's events (handlers.py): R27-R30,
R34 and R38 are decided on it; ordering never asks lifecycle over HTTP."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from shared.contracts import (
    StageChanged,
    SubscriptionActivated,
    SubscriptionReactivated,
    SubscriptionRenewed,
)

from .. import domain
from .access import (
    UnitOfWork,
)

# --- lifecycle's view of the subscription (handlers.py) ----------------------------------------
# Each answers False when ordering did not sell the subscription (the event changes nothing).


async def record_activation(
    uow: UnitOfWork, subscription_id: uuid.UUID, event: SubscriptionActivated
) -> bool:
    """Dates from lifecycle. Auto-renew is not copied back: ordering owns it (R24), and the
    buyer may have changed it after the order while this event was on its way."""
    return await uow.repo.update_subscription(
        subscription_id,
        stage="active",
        starts_at=event.starts_at,
        expires_at=event.expires_at,
        renews_at=event.renews_at,
        time_zone=event.time_zone,
    )


async def record_renewal(
    uow: UnitOfWork, subscription_id: uuid.UUID, event: SubscriptionRenewed, renewed_at: datetime
) -> bool:
    """The renewal is a new purchase for R29 and R38; pending changes took effect (R28, R29)."""
    return await uow.repo.update_subscription(
        subscription_id,
        stage="active",
        offering=event.offering,
        term=event.term,
        seats=event.seats,
        starts_at=event.starts_at,
        expires_at=event.expires_at,
        renews_at=event.renews_at,
        purchased_at=renewed_at,
        purchase_kind="renewal",
        pending_term=None,
        pending_offering=None,
        renewal_charge_failed=False,
    )


async def record_stage_change(
    uow: UnitOfWork, subscription_id: uuid.UUID, event: StageChanged
) -> bool:
    """R34: a lapse on an unpaid invoice that ends in Cancelled makes the account prepay."""
    lapsed_unpaid = domain.lapsed_unpaid(event.to_stage, event.reason)
    charge_failed = domain.renewal_charge_failed(event.to_stage, event.reason)
    changes: dict[str, Any] = {"stage": event.to_stage}
    if lapsed_unpaid is not None:
        changes["lapsed_unpaid"] = lapsed_unpaid
    if charge_failed is not None:
        changes["renewal_charge_failed"] = charge_failed
    known = await uow.repo.update_subscription(subscription_id, **changes)
    if event.to_stage == "cancelled":
        await uow.repo.require_prepayment(subscription_id)
    return known


async def record_reactivation(
    uow: UnitOfWork, subscription_id: uuid.UUID, event: SubscriptionReactivated
) -> bool:
    return await uow.repo.update_subscription(
        subscription_id,
        stage="active",
        expires_at=event.expires_at,
        renews_at=event.renews_at,
        renewal_charge_failed=False,
    )
