"""Ordering keeps its own view of each subscription's dates and stage from lifecycle's events,
and of invoicing's applied exchange rates (R19), which it prices orders with.

R27-R30, R34 and R38 are decided on this projection; ordering never asks lifecycle over HTTP.
An event about a subscription ordering did not sell changes nothing (it is logged). Nothing
here waits for a cause: ordering writes the subscription row in the same transaction as the
OrderPlaced that every one of these events follows, so the row is always there first.
"""

from __future__ import annotations

import logging
import uuid

from shared.contracts import (
    ExchangeRateApplied,
    PaymentMethodAdded,
    PaymentMethodRemoved,
    StageChanged,
    SubscriptionActivated,
    SubscriptionReactivated,
    SubscriptionRenewed,
)
from shared.messaging import EventConsumer, HandlerContext
from shared.unit_of_work import Work

from . import service
from .repository import PostgresRepository

log = logging.getLogger(__name__)
consumer = EventConsumer("ordering")


def _unit_of_work(ctx: HandlerContext) -> service.UnitOfWork:
    return Work.for_event(PostgresRepository(ctx.conn), ctx)


def _subscription_id(ctx: HandlerContext) -> uuid.UUID | None:
    subscription_id = ctx.envelope.subscription_id
    return None if subscription_id is None else uuid.UUID(str(subscription_id))


def _unknown(ctx: HandlerContext) -> None:
    log.warning(
        "ordering: %s for unknown subscription %s ignored",
        ctx.envelope.event_type,
        ctx.envelope.subscription_id,
    )


@consumer.on(SubscriptionActivated)
async def on_activated(ctx: HandlerContext, event: SubscriptionActivated) -> None:
    subscription_id = _subscription_id(ctx)
    if subscription_id is None or not await service.record_activation(
        _unit_of_work(ctx), subscription_id, event
    ):
        _unknown(ctx)


@consumer.on(SubscriptionRenewed)
async def on_renewed(ctx: HandlerContext, event: SubscriptionRenewed) -> None:
    subscription_id = _subscription_id(ctx)
    if subscription_id is None or not await service.record_renewal(
        _unit_of_work(ctx), subscription_id, event, renewed_at=ctx.envelope.occurred_at
    ):
        _unknown(ctx)


@consumer.on(StageChanged)
async def on_stage_changed(ctx: HandlerContext, event: StageChanged) -> None:
    subscription_id = _subscription_id(ctx)
    if subscription_id is None or not await service.record_stage_change(
        _unit_of_work(ctx), subscription_id, event
    ):
        _unknown(ctx)


@consumer.on(SubscriptionReactivated)
async def on_reactivated(ctx: HandlerContext, event: SubscriptionReactivated) -> None:
    subscription_id = _subscription_id(ctx)
    if subscription_id is None or not await service.record_reactivation(
        _unit_of_work(ctx), subscription_id, event
    ):
        _unknown(ctx)


@consumer.on(PaymentMethodAdded)
async def on_payment_method_added(ctx: HandlerContext, event: PaymentMethodAdded) -> None:
    """Issue 11: which saved method is whose, so a renewal names only the account's own."""
    await service.record_saved_payment_method(_unit_of_work(ctx), ctx.envelope.account_id, event)


@consumer.on(PaymentMethodRemoved)
async def on_payment_method_removed(ctx: HandlerContext, event: PaymentMethodRemoved) -> None:
    await service.record_removed_payment_method(_unit_of_work(ctx), event)


@consumer.on(ExchangeRateApplied)
async def on_rate_applied(ctx: HandlerContext, event: ExchangeRateApplied) -> None:
    await service.record_applied_rate(_unit_of_work(ctx), event)
