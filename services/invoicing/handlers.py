"""Invoicing's Kafka entrance and its timers: each event or timer becomes one service call.

An event about a subscription whose ``OrderPlaced`` was not handled yet waits for it
(``WaitForCause("subscription:<id>")``, raised by ``billing.subscription_of``);
``invoice_order`` releases the waiting events once the order is applied.
"""

from __future__ import annotations

from shared.contracts import (
    AccountOpened,
    AutoRenewChanged,
    BillingDetailsChanged,
    OrderPlaced,
    RefundApproved,
    RenewalDue,
    RenewalPaymentMethodChanged,
    RenewalRequested,
    RolesChanged,
    SeatsAdded,
    StageChanged,
    TrialConverted,
)
from shared.messaging import EventConsumer, HandlerContext
from shared.runtime import Runtime
from shared.timers import RetryLater, TimerContext, TimerHandler

from . import domain, service
from .billing import INSTALLMENT_TIMER, REMINDER_TIMER, RETRY_TIMER, UnitOfWork
from .commands import Cause, InstallmentDue, ReminderDue, RetryDue
from .gateway import GatewayUnavailable
from .repository import PostgresRepository
from .service import FX_TIMER

consumer = EventConsumer("invoicing")


def unit_of_work(ctx: HandlerContext) -> UnitOfWork:
    return UnitOfWork.for_event(PostgresRepository(ctx.conn), ctx)


def cause_of(ctx: HandlerContext) -> Cause:
    env = ctx.envelope
    return Cause(env.account_id, env.subscription_id, env.occurred_at)


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await service.remember_account(unit_of_work(ctx), cause_of(ctx), opened)


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await service.remember_roles(unit_of_work(ctx), cause_of(ctx), snapshot)


@consumer.on(BillingDetailsChanged)
async def remember_billing_details(ctx: HandlerContext, changed: BillingDetailsChanged) -> None:
    """Issue 15: the buyer's address, organisation number and VAT id, for documents."""
    await service.remember_billing_details(unit_of_work(ctx), cause_of(ctx), changed)


@consumer.on(OrderPlaced)
async def invoice_order(ctx: HandlerContext, order: OrderPlaced) -> None:
    """The order is invoiced (R17: not a trial); then the events of its subscription that
    arrived before it are applied."""
    await service.invoice_order(unit_of_work(ctx), cause_of(ctx), order)
    await ctx.release(f"subscription:{order.subscription_id}")


@consumer.on(TrialConverted)
async def invoice_converted_trial(ctx: HandlerContext, converted: TrialConverted) -> None:
    await service.invoice_converted_trial(unit_of_work(ctx), cause_of(ctx), converted)


@consumer.on(RenewalDue)
async def invoice_renewal(ctx: HandlerContext, due: RenewalDue) -> None:
    await service.invoice_renewal(unit_of_work(ctx), cause_of(ctx), due)


@consumer.on(RenewalRequested)
async def remember_requested_renewal(ctx: HandlerContext, request: RenewalRequested) -> None:
    await service.remember_requested_renewal(unit_of_work(ctx), cause_of(ctx), request)


@consumer.on(RenewalPaymentMethodChanged)
async def renewal_method_changed(ctx: HandlerContext, changed: RenewalPaymentMethodChanged) -> None:
    """Ordering judged it (R14); a failed charge still open is charged with it at once."""
    await service.renewal_method_changed(unit_of_work(ctx), cause_of(ctx), changed)


@consumer.on(SeatsAdded)
async def invoice_added_seats(ctx: HandlerContext, added: SeatsAdded) -> None:
    await service.invoice_added_seats(unit_of_work(ctx), cause_of(ctx), added)


@consumer.on(StageChanged)
async def stop_charging_when_cancelled(ctx: HandlerContext, change: StageChanged) -> None:
    """R34, R36, R39: a cancelled subscription (lapsed, or refunded) is never charged again:
    its R37 retries, its pending R20 installments and its invoice-due reminders stop."""
    if change.to_stage == "cancelled":
        await service.stop_charging_cancelled(
            unit_of_work(ctx),
            cause_of(ctx),
            lapsed_unpaid=domain.cancelled_on_unpaid_credit(change.reason),
        )


@consumer.on(AutoRenewChanged)
async def stop_retries_when_auto_renew_off(ctx: HandlerContext, change: AutoRenewChanged) -> None:
    """R24: turning auto-renew off cancels the subscription: a failed renewal charge is not
    retried (R37) after it."""
    if not change.auto_renew:
        await service.stop_renewal_retries(unit_of_work(ctx), cause_of(ctx))


@consumer.on(RefundApproved)
async def credit_refund(ctx: HandlerContext, refund: RefundApproved) -> None:
    await service.credit_refund(unit_of_work(ctx), cause_of(ctx), refund)


# --- timers --------------------------------------------------------------------------------------


def timer_unit_of_work(ctx: TimerContext) -> UnitOfWork:
    return UnitOfWork.on(PostgresRepository(ctx.conn), ctx.conn, ctx.outbox, ctx.clock)


async def retry_charge(ctx: TimerContext) -> None:
    due = RetryDue.from_payload(ctx.timer.payload)
    await service.retry_charge(timer_unit_of_work(ctx), due, ctx.timer.due_at)


async def issue_installment(ctx: TimerContext) -> None:
    if ctx.timer.account_id is None:
        raise ValueError(f"installment timer {ctx.timer.key} names no account")
    due = InstallmentDue.from_payload(ctx.timer.account_id, ctx.timer.payload)
    await service.issue_installment(timer_unit_of_work(ctx), due, ctx.timer.due_at)


async def remind_due_invoice(ctx: TimerContext) -> None:
    due = ReminderDue.from_payload(ctx.timer.payload)
    await service.remind_due_invoice(timer_unit_of_work(ctx), due, ctx.timer.due_at)


async def fx_quarter(ctx: TimerContext) -> None:
    await service.recompute_quarter(timer_unit_of_work(ctx), ctx.timer.due_at)


def retried_through_outages(handler: TimerHandler) -> TimerHandler:
    """A gateway outage is not a reason to give up an installment or an R37 retry: the timer
    comes back with backoff until the gateway answers (it is never parked as failed)."""

    async def run(ctx: TimerContext) -> None:
        try:
            await handler(ctx)
        except GatewayUnavailable as outage:
            raise RetryLater(str(outage)) from outage

    return run


TIMERS: dict[str, TimerHandler] = {
    RETRY_TIMER: retried_through_outages(retry_charge),
    INSTALLMENT_TIMER: retried_through_outages(issue_installment),
    REMINDER_TIMER: remind_due_invoice,
    FX_TIMER: fx_quarter,
}


async def keep_exchange_rates_scheduled(rt: Runtime) -> None:
    """R19: make sure the next quarter's recomputation is scheduled (any replica may do it)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        uow = UnitOfWork.on(PostgresRepository(conn), conn, rt.outbox, rt.clock)
        await service.schedule_exchange_rates(uow, rt.clock.now())
