"""Lifecycle's Kafka entrance: roles, and a subscription activated for every order."""

from __future__ import annotations

from shared import people
from shared.contracts import OrderPlaced, RolesChanged, SubscriptionActivated
from shared.messaging import EventConsumer, HandlerContext

from . import domain, repository

consumer = EventConsumer("lifecycle")


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)


@consumer.on(OrderPlaced)
async def activate(ctx: HandlerContext, order: OrderPlaced) -> None:
    """Activate the subscription with its term dates in the purchase's time zone (R23)."""
    dates = domain.term_dates(order.placed_at, order.term, order.time_zone)
    created = await repository.insert_subscription(
        ctx.conn,
        {
            "id": order.subscription_id,
            "account_id": ctx.envelope.account_id,
            "order_id": order.order_id,
            "offering": order.offering,
            "term": order.term,
            "seats": order.seats,
            "time_zone": order.time_zone,
            "auto_renew": order.auto_renew,
            "anniversary": domain.purchase_day(order.placed_at, order.time_zone),
            "starts_at": dates.starts_at,
            "expires_at": dates.expires_at,
            "renews_at": dates.renews_at,
            "activated_at": ctx.clock.now(),
        },
    )
    if not created:
        return
    await ctx.emit(
        SubscriptionActivated(
            order_id=order.order_id,
            offering=order.offering,
            term=order.term,
            seats=order.seats,
            time_zone=order.time_zone,
            starts_at=dates.starts_at,
            expires_at=dates.expires_at,
            renews_at=dates.renews_at,
            auto_renew=order.auto_renew,
        ),
        subscription_id=order.subscription_id,
    )
