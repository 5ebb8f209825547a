"""Invoicing's use cases run by timers: R37 charge retries, R20 installments, R9/R11 invoice-due
reminders, R19 quarterly exchange rates. Part of the service layer (``service.py`` re-exports
them)."""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import UTC, date, datetime, time
from decimal import Decimal

from shared.contracts import ExchangeRateApplied, InvoiceDueSoon, InvoiceOverdue

from . import domain, exchange_rates
from .billing import (
    UnitOfWork,
    charge_invoice,
    charged_with,
    draft_term,
    emit,
    issue_invoice,
    rate_in_force,
    schedule_due_reminder,
)
from .commands import BillingTime, InstallmentDue, ReminderDue, RetryDue
from .models import (
    Timer,
)

log = logging.getLogger(__name__)

FX_TIMER = "fx_quarter"  # R19
# R19: applied rates are everyone's; their events are keyed by the nil account (one partition,
# in order), and ordering projects them to price its orders.
RATES_ACCOUNT = uuid.UUID(int=0)


# --- timers --------------------------------------------------------------------------------------


async def retry_charge(uow: UnitOfWork, due: RetryDue, due_at: datetime) -> None:
    """R37: charge a failed card/PayPal invoice again (a renewal's, an order's, any), unless it
    was paid (or credited) meanwhile."""
    invoice = await uow.repo.lock_invoice(due.invoice_id)
    if invoice is None or invoice.status != "issued":
        return
    await charge_invoice(
        uow,
        BillingTime(due_at, due_at),
        invoice,
        attempt=due.attempt,
        first_failed_at=due.first_failed_at,
    )


async def remind_due_invoice(uow: UnitOfWork, due: ReminderDue, due_at: datetime) -> None:
    """R9, R11: tell the buyer and the invoice's payers that an open pay-by-invoice invoice
    falls due soon or is overdue (``InvoiceDueSoon``, ``InvoiceOverdue``; notifications routes
    them), then schedule its next reminder. Nothing for an invoice paid or credited meanwhile
    (checked under the invoice's lock, as a payment takes it); a cancelled subscription's
    reminders were deleted with it (``stop_charging_cancelled``)."""
    invoice = await uow.repo.lock_invoice(due.invoice_id)
    if invoice is None or not domain.reminded_of_due_date(invoice.payment_method, invoice.status):
        return
    amount = domain.round_money(invoice.gross_total, invoice.currency)
    event: InvoiceDueSoon | InvoiceOverdue
    if due.kind == "due_soon":
        event = InvoiceDueSoon(
            invoice_id=invoice.id,
            invoice_number=invoice.invoice_number,
            currency=invoice.currency,
            gross_total=amount,
            due_date=invoice.due_date,
            days_before_due=due.days,
            issued_at=invoice.issued_at,
            purpose=invoice.purpose,
            installment=invoice.installment,
            payer_emails=invoice.payer_emails,
            offering=invoice.offering,
        )
    else:
        event = InvoiceOverdue(
            invoice_id=invoice.id,
            invoice_number=invoice.invoice_number,
            currency=invoice.currency,
            gross_total=amount,
            due_date=invoice.due_date,
            days_overdue=due.days,
            issued_at=invoice.issued_at,
            purpose=invoice.purpose,
            installment=invoice.installment,
            payer_emails=invoice.payer_emails,
            offering=invoice.offering,
        )
    when = BillingTime(due_at, due_at)
    await emit(uow, when, event, invoice.account_id, invoice.subscription_id)
    await schedule_due_reminder(uow, invoice, after=due_at)


async def issue_installment(uow: UnitOfWork, due: InstallmentDue, due_at: datetime) -> None:
    """R20: installment 2 or 3 of a three-year term, on its anniversary."""
    billed = due.billed
    sub = (
        await uow.repo.get_subscription(billed.subscription_id) if billed.subscription_id else None
    )
    if sub is not None:
        method, token = await charged_with(uow, sub, billed.payment_method)
        billed = dataclasses.replace(billed, payment_method=method, payment_token=token)
    when = BillingTime(due_at, due_at)
    rate = (
        due.rate
        if due.rate is not None
        else await rate_in_force(uow, billed.currency, billed.channel, when.at)
    )
    draft = await draft_term(uow, billed, rate, due.installment)
    await issue_invoice(
        uow,
        when,
        billed,
        source_key=f"installment:{due.origin}:{due.installment}",
        purpose="installment",
        draft=draft,
        installment=due.installment,
        renewal_id=due.renewal_id,
        period=domain.service_period(due_at, billed.time_zone, 12),  # R20: a year a third
    )


async def recompute_exchange_rates(uow: UnitOfWork, quarter: date, computed_at: datetime) -> int:
    """R19: the applied rates of ``quarter`` from the latest market rates before it."""
    starts = datetime.combine(quarter, time(0), tzinfo=UTC)
    inserted = 0
    for currency in domain.price_book()["initial_rates_from_base"]:
        if domain.is_base_currency(currency):
            continue
        market = await uow.repo.latest_market_rate(currency, quarter)
        if market is None:
            continue  # no market data: the applied rate stays as it was
        previous: dict[str, Decimal] = {}
        for channel in ("direct", "partner"):
            found = await uow.repo.applied_rate_before(currency, channel, starts, inclusive=False)
            previous[channel] = domain.applied_rate(currency, found)
        rates = exchange_rates.quarterly_rates(
            quarter, market, previous["direct"], previous["partner"]
        )
        for applied in await uow.repo.insert_applied_rates(currency, quarter, rates, computed_at):
            inserted += 1
            await uow.events.emit(
                ExchangeRateApplied(
                    currency=currency,
                    channel=applied.channel,
                    effective_from=applied.effective_from,
                    rate=applied.rate,
                ),
                account_id=RATES_ACCOUNT,
                occurred_at=computed_at,
            )
    return inserted


async def schedule_exchange_rates(uow: UnitOfWork, at: datetime) -> None:
    """R19: the recomputation of the quarter that starts after ``at`` is scheduled (once)."""
    starts = exchange_rates.next_quarter_start(at)
    key = starts.date().isoformat()
    if not await uow.repo.timer_known(FX_TIMER, key):
        await uow.repo.schedule_timer(Timer(kind=FX_TIMER, key=key, due_at=starts))


async def recompute_quarter(uow: UnitOfWork, due_at: datetime) -> None:
    """R19: at each quarter start; then the next quarter's timer."""
    quarter = due_at.astimezone(UTC).date()
    await recompute_exchange_rates(uow, quarter, await uow.time.now())
    await schedule_exchange_rates(uow, due_at)
