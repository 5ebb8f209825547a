"""Notifications' Kafka entrance: who is who (roles and accounts), and mails queued for routed
events in the same transaction as the inbox row (so a redelivered event queues nothing, R12)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from functools import cache

from shared import people
from shared.config import Settings
from shared.contracts import (
    AccountOpened,
    Contract,
    Envelope,
    InvoiceIssued,
    OrderPlaced,
    RolesChanged,
    SubscriptionActivated,
    TrialConverted,
    payload_model,
)
from shared.messaging import EventConsumer, HandlerContext

from . import domain, repository

consumer = EventConsumer("notifications")
DELIVERY_CHANNEL = "deliveries"
# Events routed only once their cause has been consumed. One account's events are in order
# within a topic, not across topics: lifecycle's SubscriptionActivated (caused by OrderPlaced or
# TrialConverted, both on ordering's topic behind every earlier RolesChanged) may arrive before
# the roles snapshot that makes someone an admin. Waiting for the cause routes it by roles at
# least as new as the order's, so an admin appointed before the order gets the access mail.
ROUTED_AFTER_CAUSE = frozenset({"SubscriptionActivated"})


@cache
def _invoicing_public_url() -> str:
    # Read from the process environment like the rest of the settings (PLATFORM_...).
    return Settings().invoicing_public_url


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await repository.upsert_account(
        ctx.conn, ctx.envelope.account_id, opened.name, opened.language, opened.time_zone
    )


@consumer.on(RolesChanged)
async def roles_changed(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    """The projection takes the snapshot; people who just became admins get a mail (R10)."""
    before = await repository.members(ctx.conn, ctx.envelope.account_id)
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)
    await queue_mails(ctx, snapshot, before=before)
    await release_parked(ctx)


async def release_parked(ctx: HandlerContext) -> None:
    """Events that came before the account's people or before their cause (from other topics)
    go out now; one still waiting is parked again."""
    await repository.lock_people(ctx.conn, ctx.envelope.account_id)
    for parked in await repository.unpark(ctx.conn, ctx.envelope.account_id):
        envelope = Envelope.model_validate_json(parked)
        payload = envelope.payload_as(payload_model(envelope.event_type, envelope.schema_version))
        await queue_mails(replace(ctx, envelope=envelope), payload)


@consumer.on(OrderPlaced)
async def order_placed(ctx: HandlerContext, order: OrderPlaced) -> None:
    """R9: the buyer gets an order confirmation carrying the order number."""
    await repository.remember_subscription(
        ctx.conn, order.subscription_id, ctx.envelope.account_id, order.offering
    )
    await queue_mails(ctx, order)
    await release_parked(ctx)  # its SubscriptionActivated may be waiting


@consumer.on(TrialConverted)
async def trial_converted(ctx: HandlerContext, converted: TrialConverted) -> None:
    await queue_mails(ctx, converted)
    await release_parked(ctx)  # its SubscriptionActivated may be waiting


@consumer.on(SubscriptionActivated)
async def subscription_activated(ctx: HandlerContext, activated: SubscriptionActivated) -> None:
    if ctx.envelope.subscription_id is not None:
        await repository.remember_subscription(
            ctx.conn, ctx.envelope.subscription_id, ctx.envelope.account_id, activated.offering
        )
    await queue_mails(ctx, activated)


async def routed_mail(ctx: HandlerContext, payload: Contract) -> None:
    await queue_mails(ctx, payload)


async def queue_mails(
    ctx: HandlerContext, payload: Contract, before: Iterable[domain.Member] = ()
) -> None:
    """Queue one delivery per recipient of the routed event (R9-R12), rendered now (R13)."""
    envelope = ctx.envelope
    routes = domain.routing().get(envelope.event_type)
    if not routes:
        return
    await repository.lock_people(ctx.conn, envelope.account_id)
    account = await repository.account(ctx.conn, envelope.account_id)
    members = await repository.members(ctx.conn, envelope.account_id)
    if not members or await waits_for_cause(ctx):  # keep the event until they are seen
        await repository.park(
            ctx.conn,
            envelope.event_id,
            envelope.account_id,
            envelope.model_dump_json(),
            ctx.clock.now(),
        )
        return
    if isinstance(payload, InvoiceIssued):
        # R11: the payer addresses printed on the invoice receive it too (R7: at most five).
        members += domain.invoice_payers(payload.payer_emails, members)
    time_zone = domain.time_zone_of(
        account["time_zone"] if account else None, getattr(payload, "time_zone", None)
    )
    context = domain.mail_context(
        payload.model_dump(),
        account_name=account["name"] if account else None,
        offering=await repository.offering_of(ctx.conn, envelope.subscription_id),
        invoicing_url=_invoicing_public_url(),
    )
    # Delivery is infrastructure: due now in real time, whatever clock the account follows.
    now = (ctx.wall_clock or ctx.clock).now()
    for recipient in domain.recipients(routes, members, before):
        language = domain.language_of(recipient.language, account["language"] if account else None)
        mail = domain.render(
            recipient.template, language, domain.personal(context, recipient), time_zone
        )
        await repository.add_delivery(
            ctx.conn,
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            account_id=envelope.account_id,
            recipient=recipient,
            mail=mail,
            now=now,
        )
    await ctx.conn.execute("SELECT pg_notify($1, '')", DELIVERY_CHANNEL)


async def waits_for_cause(ctx: HandlerContext) -> bool:
    envelope = ctx.envelope
    if envelope.event_type not in ROUTED_AFTER_CAUSE or envelope.causation_id is None:
        return False
    return not await repository.consumed(ctx.conn, consumer.name, envelope.causation_id)


# Every other routed event type is handled the same way: the routing table decides.
for _event_type in domain.routing():
    if _event_type not in consumer.handlers:
        consumer.on(payload_model(_event_type, 1))(routed_mail)
