"""The billing steps invoicing's use cases compose: issue an invoice (numbered, R7 payers, R21
due date), charge it at issue (R21, R25) with R37 retries, record a payment, bill a term with its
R20 installments, and the R19 rate in force.

Business time: an account that follows a test clock lives in that clock's time, so the invoices
of an event are dated by the event's ``occurred_at`` (a timer's by its due time); other accounts
by the clock.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from shared.contracts import (
    Contract,
    InvoiceIssued,
    InvoicePaid,
    InvoicePurpose,
    PaymentFailed,
    PaymentMethod,
    PaymentSucceeded,
)
from shared.messaging import WaitForCause
from shared.unit_of_work import Work

from . import domain
from .commands import Billed, BillingTime, Cause, InstallmentDue, ReminderDue, RetryDue
from .domain import PurchaseOrder
from .gateway import DEFAULT_TEST_TOKEN, gateway_for
from .models import ChargeAttempt, Invoice, Payment, Repository, Subscription, Timer

UnitOfWork = Work[Repository]

INVOICE_SERIES = "INV"
RETRY_TIMER = "renewal_charge_retry"  # R37, for every card/PayPal charge (name kept: stored rows)
INSTALLMENT_TIMER = "installment"  # R20
REMINDER_TIMER = "invoice_due_reminder"  # R9, R11: before and after an invoice's due date
INVOICE_ID_NAMESPACE = uuid.UUID("6f1d7a52-4a0e-4c59-9d0b-3c7e2f1b8a11")


async def business_time(uow: UnitOfWork, cause: Cause) -> BillingTime:
    account = await uow.repo.get_account(cause.account_id)
    if account is not None and account.test_clock_id is not None:
        return BillingTime(cause.occurred_at)
    return BillingTime(await uow.time.now(cause.account_id))


async def subscription_of(uow: UnitOfWork, cause: Cause) -> Subscription:
    """The subscription the event is about; unknown means its OrderPlaced was not handled yet,
    so the event waits for it (``invoice_order`` releases it)."""
    if cause.subscription_id is None:
        raise LookupError("the event carries no subscription id")
    sub = await uow.repo.get_subscription(cause.subscription_id)
    if sub is None:
        raise WaitForCause(
            f"subscription:{cause.subscription_id}", "its OrderPlaced is not handled yet"
        )
    return sub


async def emit(
    uow: UnitOfWork,
    when: BillingTime,
    event: Contract,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
) -> None:
    await uow.events.emit(
        event, account_id=account_id, subscription_id=subscription_id, occurred_at=when.events_at
    )


async def rate_in_force(uow: UnitOfWork, currency: str, channel: str, at: datetime) -> Decimal:
    """R19: the applied rate at ``at`` (``domain.applied_rate`` chooses)."""
    in_force = (
        None
        if domain.is_base_currency(currency)
        else await uow.repo.applied_rate_before(currency, channel, at)
    )
    return domain.applied_rate(currency, in_force)


def money(amount: Decimal, currency: str) -> Decimal:
    return domain.round_money(amount, currency)


async def issue_invoice(
    uow: UnitOfWork,
    when: BillingTime,
    billed: Billed,
    *,
    source_key: str,
    purpose: InvoicePurpose,
    draft: domain.DraftInvoice,
    installment: int | None = None,
    renewal_id: uuid.UUID | None = None,
    po: PurchaseOrder | None = None,
    period: tuple[date, date] | None = None,
) -> uuid.UUID | None:
    """Issue (numbered, R7 payers, R21 due date) and charge card/PayPal at issue (R21, R25).
    None when the cause was invoiced already: a redelivered cause never issues or charges twice.
    The id follows from the cause, so the gateway's idempotency key (invoice id, attempt) repeats
    when a charge happened but its transaction did not commit: charged once."""
    if await uow.repo.invoice_id_for_source(source_key):
        return None
    number = domain.invoice_number(INVOICE_SERIES, await uow.repo.next_in_series(INVOICE_SERIES))
    payers = domain.invoice_payers(await uow.repo.payer_emails(billed.account_id))
    account = await uow.repo.get_account(billed.account_id)
    prepay_only = account.prepay_only if account is not None else False
    identity = await uow.repo.billing_identity(billed.account_id)
    invoice = Invoice(
        id=uuid.uuid5(INVOICE_ID_NAMESPACE, source_key),
        invoice_number=number,
        account_id=billed.account_id,
        subscription_id=billed.subscription_id,
        order_id=billed.order_id,
        purpose=purpose,
        installment=installment,
        renewal_id=renewal_id,
        currency=draft.currency,
        exchange_rate=draft.exchange_rate,
        channel=billed.channel,
        billing_country=billed.billing_country,
        time_zone=billed.time_zone,
        net_total=draft.net_total,
        vat_total=draft.vat_total,
        gross_total=draft.gross_total,
        payment_method=billed.payment_method,
        payment_token=billed.payment_token,
        status="issued",
        tax_exempt_reason=draft.tax_exempt_reason,
        payer_emails=payers,
        issued_at=when.at,
        due_date=domain.due_date(
            when.at, billed.time_zone, billed.payment_method, prepay_only=prepay_only
        ),
        paid_at=None,
        po_number=po.po_number if po else None,
        notes=po.notes if po else None,
        po_file_name=po.file_name if po else None,
        po_mime_type=po.mime_type if po else None,
        buyer_billing=identity.model_dump_json() if identity is not None else None,
        offering=billed.offering,
        term=billed.term,
        period_start=period[0] if period else None,
        period_end=period[1] if period else None,
    )
    await uow.repo.insert_invoice(
        invoice, source_key=source_key, lines=draft.lines, po=po or PurchaseOrder()
    )
    issued = InvoiceIssued(
        invoice_id=invoice.id,
        invoice_number=number,
        order_id=billed.order_id,
        currency=draft.currency,
        net_total=draft.net_total,
        vat_total=draft.vat_total,
        gross_total=draft.gross_total,
        lines=draft.lines,
        payment_method=billed.payment_method,
        issued_at=when.at,
        due_date=invoice.due_date,
        tax_exempt_reason=draft.tax_exempt_reason,
        purpose=purpose,
        installment=installment,
        renewal_id=renewal_id,
        payer_emails=payers,
        offering=invoice.offering,
    )
    await emit(uow, when, issued, billed.account_id, billed.subscription_id)
    if not domain.charged_at_issue(billed.payment_method):
        await schedule_due_reminder(uow, invoice, after=invoice.issued_at)
        return invoice.id  # R21/R25: an invoice account is billed net 30
    # R15 is ordering's to judge, once, when the order is placed (services/ordering/README.md):
    # what ordering placed by card or PayPal is charged, never refused here.
    await charge_invoice(uow, when, invoice, attempt=1)
    return invoice.id


async def schedule_due_reminder(uow: UnitOfWork, invoice: Invoice, *, after: datetime) -> None:
    """R9, R11: the invoice's next due-date reminder after ``after`` (``domain.due_reminders``:
    7 days before, 1 and 7 days after), one timer per invoice that moves on as each is sent; a
    payment (``settle_invoice``), a credit note or a cancellation deletes it."""
    if not domain.reminded_of_due_date(invoice.payment_method, invoice.status):
        return
    reminder = domain.next_due_reminder(invoice.due_date, invoice.time_zone, after)
    if reminder is None:
        return
    account = await uow.repo.get_account(invoice.account_id)
    due = ReminderDue(invoice.id, reminder.kind, reminder.days, invoice.subscription_id)
    await uow.repo.schedule_timer(
        Timer(
            kind=REMINDER_TIMER,
            key=str(invoice.id),
            due_at=reminder.at,
            account_id=invoice.account_id,
            clock_id=account.test_clock_id if account else None,
            payload=due.payload(),
        )
    )


async def charge_invoice(
    uow: UnitOfWork,
    when: BillingTime,
    invoice: Invoice,
    *,
    attempt: int,
    first_failed_at: datetime | None = None,
) -> bool:
    """One charge attempt, idempotent at the gateway by (invoice id, attempt)."""
    result = await gateway_for(invoice.payment_method).charge(
        amount=money(invoice.gross_total, invoice.currency),
        currency=invoice.currency,
        token=invoice.payment_token or DEFAULT_TEST_TOKEN,
        idempotency_key=f"{invoice.id}:{attempt}",
    )
    await uow.repo.record_charge_attempt(
        ChargeAttempt(
            invoice_id=invoice.id,
            attempt=attempt,
            succeeded=result.succeeded,
            failure_reason=result.failure_reason,
            reference=result.reference,
            attempted_at=when.at,
        )
    )
    if result.succeeded:
        await settle_invoice(
            uow, when, invoice, method=invoice.payment_method, reference=result.reference
        )
        return True
    reason = result.failure_reason or "declined"
    await fail_charge(
        uow, when, invoice, attempt=attempt, reason=reason, first_failed_at=first_failed_at
    )
    return False


async def fail_charge(
    uow: UnitOfWork,
    when: BillingTime,
    invoice: Invoice,
    *,
    attempt: int,
    reason: str,
    first_failed_at: datetime | None = None,
    retry: bool = True,
) -> None:
    """PaymentFailed; every card/PayPal charge is retried on the R37 schedule (days 1, 3, 7,
    14). Lifecycle reads the first failure as "unpaid on its due date" (R31) and decides the
    stage from it; notifications tells the buyer the next attempt."""
    first = first_failed_at or when.at
    next_at = domain.next_charge_attempt_at(first, attempt) if retry else None
    if next_at is not None:
        account = await uow.repo.get_account(invoice.account_id)
        payload = RetryDue(invoice.id, attempt + 1, first, invoice.subscription_id).payload()
        await uow.repo.schedule_timer(
            Timer(
                kind=RETRY_TIMER,
                key=str(invoice.id),
                due_at=next_at,
                account_id=invoice.account_id,
                clock_id=account.test_clock_id if account else None,
                payload=payload,
            )
        )
    failed = PaymentFailed(
        invoice_id=invoice.id,
        amount=money(invoice.gross_total, invoice.currency),
        currency=invoice.currency,
        method=invoice.payment_method,
        reason=reason,
        failed_at=when.at,
        purpose=invoice.purpose,
        attempt=attempt,
        next_attempt_at=next_at,
        offering=invoice.offering,
    )
    await emit(uow, when, failed, invoice.account_id, invoice.subscription_id)


async def settle_invoice(
    uow: UnitOfWork, when: BillingTime, invoice: Invoice, *, method: PaymentMethod, reference: str
) -> Payment:
    """Record the payment: PaymentSucceeded, then InvoicePaid with its purpose (lifecycle renews
    a card renewal on InvoicePaid(purpose renewal), and R31/R32 watch it)."""
    payment = Payment(
        id=uuid.uuid4(),
        invoice_id=invoice.id,
        amount=money(invoice.gross_total, invoice.currency),
        currency=invoice.currency,
        method=method,
        reference=reference,
        paid_at=when.at,
    )
    await uow.repo.record_payment(payment)
    succeeded = PaymentSucceeded(
        payment_id=payment.id,
        invoice_id=invoice.id,
        amount=payment.amount,
        currency=invoice.currency,
        method=method,
        paid_at=when.at,
    )
    paid = InvoicePaid(
        invoice_id=invoice.id,
        invoice_number=invoice.invoice_number,
        paid_at=when.at,
        purpose=invoice.purpose,
        renewal_id=invoice.renewal_id,
    )
    for event in (succeeded, paid):
        await emit(uow, when, event, invoice.account_id, invoice.subscription_id)
    # Not waiting: a retry being fired holds its timer row and waits for this invoice's lock;
    # it re-checks the invoice under that lock, finds it paid and charges nothing.
    await uow.repo.cancel_timer(RETRY_TIMER, str(invoice.id), wait=False)
    await uow.repo.cancel_timer(REMINDER_TIMER, str(invoice.id), wait=False)  # R9, R11: paid
    return payment


async def bill_term(
    uow: UnitOfWork,
    when: BillingTime,
    billed: Billed,
    *,
    source_key: str,
    purpose: InvoicePurpose,
    transaction_at: datetime,
    renewal_id: uuid.UUID | None = None,
    po: PurchaseOrder | None = None,
    priced_at_rate: Decimal | None = None,
) -> uuid.UUID | None:
    """Invoice a term bought or renewed; R20: a three-year term from 2024-09-16 pays in three
    installments, the first now and two on the anniversaries (durable timers).
    ``priced_at_rate``: the R19 rate ordering priced a placed order at (recorded, not applied:
    the order's unit price is billed as it is)."""
    account = await uow.repo.get_account(billed.account_id)
    installments = domain.pays_in_installments(billed.term, transaction_at, billed.time_zone)
    rate = priced_at_rate or await rate_in_force(uow, billed.currency, billed.channel, when.at)
    draft = await draft_term(uow, billed, rate, 1 if installments else None)
    invoice_id = await issue_invoice(
        uow,
        when,
        billed,
        source_key=source_key,
        purpose=purpose,
        draft=draft,
        installment=1 if installments else None,
        renewal_id=renewal_id,
        po=po,
        period=domain.service_period(
            transaction_at,
            billed.time_zone,
            12 if installments else domain.TERM_MONTHS[billed.term],
        ),
    )
    if invoice_id is None or not installments:
        return invoice_id
    due_dates = domain.installment_due_dates(transaction_at, billed.time_zone)
    for number, due_at in enumerate(due_dates, start=2):
        payload = InstallmentDue(source_key, number, billed, renewal_id, rate).payload()
        await uow.repo.schedule_timer(
            Timer(
                kind=INSTALLMENT_TIMER,
                key=f"{source_key}:{number}",
                due_at=due_at,
                account_id=billed.account_id,
                clock_id=account.test_clock_id if account else None,
                payload=payload,
            )
        )
    return invoice_id


async def tax_exemption(uow: UnitOfWork, account_id: uuid.UUID) -> str | None:
    """R18: why the account pays no VAT, if it does not: its exemption, or (issue 15 [ours]) the
    reverse charge of an EU business that gave its VAT id (the buyer accounts for the VAT)."""
    account = await uow.repo.get_account(account_id)
    if account is None:
        return None
    identity = await uow.repo.billing_identity(account_id)
    return domain.tax_exemption(
        account.country, account.tax_exempt_reason, identity.vat_id if identity else None
    )


async def draft_term(
    uow: UnitOfWork, billed: Billed, rate: Decimal, installment: int | None
) -> domain.DraftInvoice:
    """The invoice of a term (R20: or of one installment of it) at ``rate``."""
    return domain.draft_for_order(
        offering=billed.offering,
        term=billed.term,
        seats=billed.seats,
        currency=billed.currency,
        country=billed.billing_country,
        tax_exempt_reason=await tax_exemption(uow, billed.account_id),
        rate=rate,
        installment=installment,
        quoted_unit_price=billed.quoted_unit_price,
    )


async def charged_with(
    uow: UnitOfWork, sub: Subscription, method: PaymentMethod
) -> tuple[PaymentMethod, str | None]:
    """How a subscription's card/PayPal charge is made (issue 11, [ours]): with the saved
    method chosen for it (``RenewalPaymentMethodChanged``), else the account's default saved
    method, else the token it was bought with. Pay-by-invoice is not charged."""
    if not domain.charged_at_issue(method):
        return method, None
    chosen = (
        await uow.repo.get_payment_method(sub.payment_method_id)
        if sub.payment_method_id is not None
        else None
    )
    if chosen is None or chosen.removed_at is not None:
        saved = await uow.repo.payment_methods(sub.account_id)
        chosen = next((m for m in saved if m.is_default), None)
    if chosen is None:
        return method, sub.payment_token
    return chosen.kind, chosen.token


def billed_from(sub: Subscription, **changes: Any) -> Billed:
    billed = Billed(
        account_id=sub.account_id,
        subscription_id=sub.id,
        order_id=sub.order_id,
        offering=sub.offering,
        term=sub.term,
        seats=sub.seats,
        channel=sub.channel,
        payment_method=sub.payment_method,
        payment_token=sub.payment_token,
        currency=sub.currency,
        billing_country=sub.billing_country,
        time_zone=sub.time_zone,
    )
    return dataclasses.replace(billed, **changes)
