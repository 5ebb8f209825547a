"""Notifications' Kafka entrance: the people projection, and mails queued for routed events."""

from __future__ import annotations

from typing import Any

from shared import people
from shared.contracts import AccountOpened, Envelope, OrderPlaced, RolesChanged
from shared.messaging import EventConsumer, HandlerContext

from . import domain, repository

consumer = EventConsumer("notifications")
DELIVERY_CHANNEL = "deliveries"


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await repository.upsert_account(
        ctx.conn, ctx.envelope.account_id, opened.language, opened.time_zone
    )


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)


@consumer.on(OrderPlaced)
async def order_confirmation(ctx: HandlerContext, order: OrderPlaced) -> None:
    """R9: the buyer gets an order confirmation carrying the order number."""
    time_zone = await repository.account_time_zone(ctx.conn, ctx.envelope.account_id)
    context = {
        **order.model_dump(),
        "placed_at": domain.local_time(order.placed_at, time_zone or order.time_zone),
    }
    await queue_mails(ctx, ctx.envelope, context)


async def queue_mails(ctx: HandlerContext, envelope: Envelope, context: dict[str, Any]) -> None:
    """Queue one delivery per recipient of the routed event; sent by the delivery loop."""
    route = domain.routing().get(envelope.event_type)
    if route is None:
        return
    members = await repository.members(ctx.conn, envelope.account_id)
    now = ctx.clock.now()
    for recipient in domain.recipients(route, members):
        mail = domain.render(
            route.template, recipient.language, {**context, "recipient_name": recipient.name}
        )
        await repository.add_delivery(
            ctx.conn,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            account_id=envelope.account_id,
            recipient=recipient,
            template=route.template,
            mail=mail,
            now=now,
        )
    await ctx.conn.execute("SELECT pg_notify($1, '')", DELIVERY_CHANNEL)
