"""Lifecycle's Kafka entrance and its timers: each event or due timer is one call of
``service.py`` on a unit of work built from the handler's transaction.

An ``InvoiceIssued`` (or the ``PaymentFailed`` of a first purchase's declined card) can be read
before the ``OrderPlaced`` of its subscription (Kafka orders events per topic, not across
topics): it waits for its cause (``WaitForCause``, kept in
``deferred_events``) and is applied when the activation releases ``subscription:<id>``, so an
unpaid invoice still starts R31's clock.
"""

from __future__ import annotations

import uuid

from shared.contracts import (
    AutoRenewChanged,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    ProductSwitchScheduled,
    RefundApproved,
    RenewalPaymentMethodChanged,
    RenewalRequested,
    RolesChanged,
    SeatsAdded,
    TermChangeScheduled,
    TrialConverted,
)
from shared.messaging import EventConsumer, HandlerContext, WaitForCause
from shared.timers import BatchTimerHandler, TimerBatchContext, TimerContext, TimerHandler

from . import service
from .consequences import (
    INVOICE_OVERDUE,
    RENEWAL_DATE,
    RENEWAL_REMINDER,
    RENEWAL_WINDOW,
    STAGE_BOUNDARY,
)
from .repository import CONSUMER, PostgresRepository, UnitOfWork

consumer = EventConsumer(CONSUMER)


def waiting_for(subscription_id: uuid.UUID) -> str:
    """What an event about a subscription lifecycle has not activated yet waits for."""
    return f"subscription:{subscription_id}"


def unit_of_work(ctx: HandlerContext) -> UnitOfWork:
    """Effects in the handler's transaction, caused by the consumed event."""
    return UnitOfWork.for_event(PostgresRepository(ctx.conn), ctx)


# --- Kafka ----------------------------------------------------------------------------------


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await service.remember_roles(unit_of_work(ctx), ctx.envelope.account_id, snapshot)


@consumer.on(OrderPlaced)
async def activate(ctx: HandlerContext, order: OrderPlaced) -> None:
    cause = waiting_for(order.subscription_id)
    activated = await service.activate(
        unit_of_work(ctx), ctx.envelope.account_id, order, releases=cause
    )
    # Events wait for ``cause`` under this account's turn (the consumer's lock, held here), so
    # what the insert's statement saw is all there is; nothing waits in the usual order.
    if activated is None or activated.waited_for:
        await ctx.release(cause)


@consumer.on(TrialConverted)
async def convert_trial(ctx: HandlerContext, converted: TrialConverted) -> None:
    await service.convert_trial(unit_of_work(ctx), ctx.envelope.subscription_id, converted)


@consumer.on(AutoRenewChanged)
async def change_auto_renew(ctx: HandlerContext, change: AutoRenewChanged) -> None:
    await service.change_auto_renew(unit_of_work(ctx), ctx.envelope.subscription_id, change)


@consumer.on(TermChangeScheduled)
async def schedule_term_change(ctx: HandlerContext, change: TermChangeScheduled) -> None:
    await service.schedule_term_change(unit_of_work(ctx), ctx.envelope.subscription_id, change)


@consumer.on(ProductSwitchScheduled)
async def schedule_product_switch(ctx: HandlerContext, switch: ProductSwitchScheduled) -> None:
    await service.schedule_product_switch(unit_of_work(ctx), ctx.envelope.subscription_id, switch)


@consumer.on(SeatsAdded)
async def add_seats(ctx: HandlerContext, added: SeatsAdded) -> None:
    await service.add_seats(unit_of_work(ctx), ctx.envelope.subscription_id, added)


@consumer.on(RenewalRequested)
async def request_renewal(ctx: HandlerContext, request: RenewalRequested) -> None:
    await service.request_renewal(unit_of_work(ctx), ctx.envelope.subscription_id, request)


@consumer.on(RenewalPaymentMethodChanged)
async def change_renewal_payment_method(
    ctx: HandlerContext, changed: RenewalPaymentMethodChanged
) -> None:
    await service.change_renewal_payment_method(
        unit_of_work(ctx), ctx.envelope.subscription_id, changed
    )


@consumer.on(InvoiceIssued)
async def invoice_issued(ctx: HandlerContext, issued: InvoiceIssued) -> None:
    named = ctx.envelope.subscription_id
    recorded = await service.record_invoice(unit_of_work(ctx), named, issued)
    if not recorded and named is not None:
        raise WaitForCause(waiting_for(named), "InvoiceIssued read before its OrderPlaced")


@consumer.on(InvoicePaid)
async def invoice_paid(ctx: HandlerContext, paid: InvoicePaid) -> None:
    named = ctx.envelope.subscription_id
    known = await service.record_payment(unit_of_work(ctx), named, paid)
    if not known and named is not None:
        raise WaitForCause(waiting_for(named), "InvoicePaid read before its OrderPlaced")


@consumer.on(PaymentFailed)
async def charge_failed(ctx: HandlerContext, failed: PaymentFailed) -> None:
    named = ctx.envelope.subscription_id
    known = await service.charge_failed(unit_of_work(ctx), named, failed)
    if not known and named is not None:
        raise WaitForCause(waiting_for(named), "PaymentFailed read before its OrderPlaced")


@consumer.on(RefundApproved)
async def refunded(ctx: HandlerContext, refund: RefundApproved) -> None:
    await service.refund(unit_of_work(ctx), ctx.envelope.subscription_id, refund)


# --- timers (events they cause occur at the timer's due time) -------------------------------


def timer_work(ctx: TimerContext | TimerBatchContext) -> UnitOfWork:
    return UnitOfWork.on(PostgresRepository(ctx.conn), ctx.conn, ctx.outbox, ctx.clock)


async def at_renewal_dates(batch: TimerBatchContext) -> None:
    due = [(uuid.UUID(timer.key), timer.due_at) for timer in batch.timers]
    await service.at_renewal_dates(timer_work(batch), due)


async def at_stage_boundaries(batch: TimerBatchContext) -> None:
    due = [(uuid.UUID(timer.key), timer.due_at) for timer in batch.timers]
    await service.at_stage_boundaries(timer_work(batch), due)


async def renewal_window_opens(ctx: TimerContext) -> None:
    subscription_id = uuid.UUID(ctx.timer.key)
    await service.open_renewal_window(timer_work(ctx), subscription_id, ctx.timer.due_at)


async def renewal_reminder(ctx: TimerContext) -> None:
    subscription_key, _, days = ctx.timer.key.partition(":")
    await service.remind_of_renewal(
        timer_work(ctx), uuid.UUID(subscription_key), int(days), ctx.timer.due_at
    )


async def invoice_overdue(ctx: TimerContext) -> None:
    await service.invoice_overdue(timer_work(ctx), uuid.UUID(ctx.timer.key), ctx.timer.due_at)


TIMERS: dict[str, TimerHandler] = {
    RENEWAL_WINDOW: renewal_window_opens,
    RENEWAL_REMINDER: renewal_reminder,
    INVOICE_OVERDUE: invoice_overdue,
}
BATCH_TIMERS: dict[str, BatchTimerHandler] = {
    RENEWAL_DATE: at_renewal_dates,
    STAGE_BOUNDARY: at_stage_boundaries,
}
