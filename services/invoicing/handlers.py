"""Invoicing's Kafka entrance and its timers: invoices for orders, trials, renewals (R25),
installments (R20) and co-terms (R30); charges with R37 retries; credit notes and refunds (R39);
the quarterly exchange-rate recomputation (R19).

Business time: an account that follows a test clock lives in that clock's time, so its invoices
are dated by the cause's ``occurred_at`` (a timer's due time); other accounts by the clock.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, Protocol

import asyncpg

from shared import people, timers
from shared.contracts import (
    AccountOpened,
    AutoRenewChanged,
    Channel,
    Contract,
    CreditNoteIssued,
    Envelope,
    InvoiceIssued,
    InvoiceLine,
    InvoicePaid,
    InvoicePurpose,
    OrderPlaced,
    PaymentFailed,
    PaymentMethod,
    PaymentSucceeded,
    RefundApproved,
    RefundProcessed,
    RenewalDue,
    RenewalRequested,
    RolesChanged,
    SeatsAdded,
    StageChanged,
    Term,
    TrialConverted,
)
from shared.db import Conn
from shared.messaging import EventConsumer, HandlerContext
from shared.runtime import Runtime
from shared.timers import TimerContext, TimerHandler

from . import domain, repository
from .gateway import DEFAULT_TEST_TOKEN, GatewayUnavailable, gateway_for

log = logging.getLogger(__name__)
consumer = EventConsumer("invoicing")
INVOICE_SERIES = "INV"
CREDIT_NOTE_SERIES = "CN"
RETRY_TIMER = "renewal_charge_retry"  # R37
INVOICE_ID_NAMESPACE = uuid.UUID("6f1d7a52-4a0e-4c59-9d0b-3c7e2f1b8a11")
INSTALLMENT_TIMER = "installment"  # R20
FX_TIMER = "fx_quarter"  # R19


class Emit(Protocol):
    async def __call__(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID | None = None,
        subscription_id: uuid.UUID | None = None,
    ) -> Envelope: ...


@dataclass(frozen=True)
class Billing:
    """What every billing step needs: the open transaction, a way to emit, the business time."""

    conn: Conn
    emit: Emit
    now: datetime


@dataclass(frozen=True)
class PurchaseOrder:
    """R22: what the buyer attached to an invoice (or to the coming renewal's)."""

    po_number: str | None = None
    notes: str | None = None
    document: bytes | None = None
    file_name: str | None = None
    mime_type: str | None = None


@dataclass(frozen=True)
class Billed:
    """What is billed and how: one subscription term (or an installment of it)."""

    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    order_id: uuid.UUID | None
    offering: str
    term: Term
    seats: int
    channel: Channel
    payment_method: PaymentMethod
    payment_token: str | None
    currency: str
    billing_country: str
    time_zone: str


async def business_time(ctx: HandlerContext) -> datetime:
    account = await repository.get_account(ctx.conn, ctx.envelope.account_id)
    if account is not None and account["test_clock_id"] is not None:
        return ctx.envelope.occurred_at
    return ctx.clock.now()


def billing_of(ctx: HandlerContext, now: datetime) -> Billing:
    return Billing(ctx.conn, ctx.emit, now)


async def clock_of(conn: Conn, account_id: uuid.UUID) -> uuid.UUID | None:
    account = await repository.get_account(conn, account_id)
    return account["test_clock_id"] if account is not None else None


async def applied_rate(
    conn: Conn | asyncpg.Pool, currency: str, channel: str, at: datetime
) -> Decimal:
    """R19: the applied rate in force at ``at``; the price book's until a quarter is computed."""
    if currency == domain.price_book()["base_currency"]:
        return Decimal(1)
    found = await repository.applied_rate_before(conn, currency, channel, at)
    return found if found is not None else domain.initial_rate(currency)


# --- projections -------------------------------------------------------------------------------


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await repository.upsert_account(ctx.conn, ctx.envelope.account_id, opened)


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)


# --- issuing -----------------------------------------------------------------------------------


async def issue_invoice(
    b: Billing,
    billed: Billed,
    *,
    source_key: str,
    purpose: InvoicePurpose,
    draft: domain.DraftInvoice,
    installment: int | None = None,
    renewal_id: uuid.UUID | None = None,
    po: PurchaseOrder | None = None,
    refuse_charge: str | None = None,
) -> uuid.UUID | None:
    """Issue (numbered, R7 payers, R21 due date) and charge card/PayPal at issue (R21, R25).

    Returns None when the cause was invoiced already: a redelivered cause never issues or
    charges twice."""
    if await repository.invoice_id_for_source(b.conn, source_key):
        return None
    # The id follows from the cause, so the gateway's idempotency key (invoice id, attempt) is
    # the same when a charge happened but its transaction did not commit (a crash, a lost
    # connection, a retry): the gateway answers the first charge again instead of charging twice.
    invoice_id = uuid.uuid5(INVOICE_ID_NAMESPACE, source_key)
    number = domain.invoice_number(
        INVOICE_SERIES, await repository.next_in_series(b.conn, INVOICE_SERIES)
    )
    payers = domain.invoice_payers(await repository.payer_emails(b.conn, billed.account_id))
    due = domain.due_date(b.now, billed.time_zone, billed.payment_method)
    po = po or PurchaseOrder()
    await repository.insert_invoice(
        b.conn,
        invoice_id=invoice_id,
        number=number,
        source_key=source_key,
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
        tax_exempt_reason=draft.tax_exempt_reason,
        payer_emails=payers,
        issued_at=b.now,
        due_date=due,
        lines=draft.lines,
        po_number=po.po_number,
        notes=po.notes,
        po_document=po.document,
        po_file_name=po.file_name,
        po_mime_type=po.mime_type,
    )
    await b.emit(
        InvoiceIssued(
            invoice_id=invoice_id,
            invoice_number=number,
            order_id=billed.order_id,
            currency=draft.currency,
            net_total=draft.net_total,
            vat_total=draft.vat_total,
            gross_total=draft.gross_total,
            lines=draft.lines,
            payment_method=billed.payment_method,
            issued_at=b.now,
            due_date=due,
            tax_exempt_reason=draft.tax_exempt_reason,
            purpose=purpose,
            installment=installment,
            renewal_id=renewal_id,
            payer_emails=payers,
        ),
        account_id=billed.account_id,
        subscription_id=billed.subscription_id,
    )
    if not domain.charged_at_issue(billed.payment_method):
        return invoice_id  # R21/R25: an invoice account is billed net 30
    invoice = await repository.get_invoice(b.conn, invoice_id)
    assert invoice is not None
    if refuse_charge:
        await fail_charge(b, invoice, attempt=1, reason=refuse_charge, retry=False)
    else:
        await charge_invoice(b, invoice, attempt=1)
    return invoice_id


async def charge_invoice(
    b: Billing, invoice: asyncpg.Record, *, attempt: int, first_failed_at: datetime | None = None
) -> bool:
    """One charge attempt, idempotent at the gateway by (invoice id, attempt)."""
    method: PaymentMethod = invoice["payment_method"]
    result = await gateway_for(method).charge(
        amount=money(invoice["gross_total"], invoice["currency"]),
        currency=invoice["currency"],
        token=invoice["payment_token"] or DEFAULT_TEST_TOKEN,
        idempotency_key=f"{invoice['id']}:{attempt}",
    )
    await repository.record_charge_attempt(
        b.conn,
        invoice_id=invoice["id"],
        attempt=attempt,
        succeeded=result.succeeded,
        failure_reason=result.failure_reason,
        reference=result.reference,
        attempted_at=b.now,
    )
    if result.succeeded:
        await settle_invoice(b, invoice, method=method, reference=result.reference)
        return True
    await fail_charge(
        b,
        invoice,
        attempt=attempt,
        reason=result.failure_reason or "declined",
        first_failed_at=first_failed_at,
    )
    return False


async def fail_charge(
    b: Billing,
    invoice: asyncpg.Record,
    *,
    attempt: int,
    reason: str,
    first_failed_at: datetime | None = None,
    retry: bool = True,
) -> None:
    """PaymentFailed; a renewal charge is retried on the R37 schedule (days 1, 3, 7, 14)."""
    first = first_failed_at or b.now
    next_at = domain.next_charge_attempt_at(invoice["purpose"], first, attempt) if retry else None
    if next_at is not None:
        await timers.schedule(
            b.conn,
            kind=RETRY_TIMER,
            key=str(invoice["id"]),
            due_at=next_at,
            account_id=invoice["account_id"],
            clock_id=await clock_of(b.conn, invoice["account_id"]),
            payload={
                "invoice_id": str(invoice["id"]),
                "attempt": attempt + 1,
                "first_failed_at": first.isoformat(),
                "subscription_id": str(invoice["subscription_id"]),
            },
        )
    await b.emit(
        PaymentFailed(
            invoice_id=invoice["id"],
            amount=money(invoice["gross_total"], invoice["currency"]),
            currency=invoice["currency"],
            method=invoice["payment_method"],
            reason=reason,
            failed_at=b.now,
            purpose=invoice["purpose"],
            attempt=attempt,
            next_attempt_at=next_at,
        ),
        account_id=invoice["account_id"],
        subscription_id=invoice["subscription_id"],
    )


async def settle_invoice(
    b: Billing, invoice: asyncpg.Record, *, method: PaymentMethod, reference: str
) -> uuid.UUID:
    """Record the payment: PaymentSucceeded, then InvoicePaid with its purpose (lifecycle renews
    a card renewal on InvoicePaid(purpose renewal), and R31/R32 watch it)."""
    payment_id = uuid.uuid4()
    amount = money(invoice["gross_total"], invoice["currency"])
    await repository.record_payment(
        b.conn,
        payment_id=payment_id,
        invoice_id=invoice["id"],
        amount=amount,
        currency=invoice["currency"],
        method=method,
        reference=reference,
        paid_at=b.now,
    )
    ids = {"account_id": invoice["account_id"], "subscription_id": invoice["subscription_id"]}
    await b.emit(
        PaymentSucceeded(
            payment_id=payment_id,
            invoice_id=invoice["id"],
            amount=amount,
            currency=invoice["currency"],
            method=method,
            paid_at=b.now,
        ),
        **ids,
    )
    await b.emit(
        InvoicePaid(
            invoice_id=invoice["id"],
            invoice_number=invoice["invoice_number"],
            paid_at=b.now,
            purpose=invoice["purpose"],
            renewal_id=invoice["renewal_id"],
        ),
        **ids,
    )
    # Not waiting: a retry being fired holds its timer row and waits for this invoice's lock;
    # it re-checks the invoice under that lock, finds it paid and charges nothing.
    await timers.cancel(b.conn, kind=RETRY_TIMER, key=str(invoice["id"]), wait=False)
    return payment_id


def money(amount: Decimal, currency: str) -> Decimal:
    return domain.round_money(amount, currency)


async def bill_term(
    b: Billing,
    billed: Billed,
    *,
    source_key: str,
    purpose: InvoicePurpose,
    transaction_at: datetime,
    renewal_id: uuid.UUID | None = None,
    po: PurchaseOrder | None = None,
    quote_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Invoice a term bought or renewed; R20: a three-year term from 2024-09-16 pays in three
    installments, the first now and two on the anniversaries (durable timers)."""
    account = await repository.get_account(b.conn, billed.account_id)
    exempt = account["tax_exempt_reason"] if account else None
    installments = domain.pays_in_installments(billed.term, transaction_at, billed.time_zone)
    rate = await applied_rate(b.conn, billed.currency, billed.channel, b.now)
    draft = domain.draft_for_order(
        offering=billed.offering,
        term=billed.term,
        seats=billed.seats,
        currency=billed.currency,
        country=billed.billing_country,
        tax_exempt_reason=exempt,
        rate=rate,
        installment=1 if installments else None,
    )
    refuse = None
    if quote_id is not None and domain.above_card_limit(draft.gross_total, rate):
        refuse = "r15-quote-above-card-limit"  # R15: never charged to a card or PayPal
    invoice_id = await issue_invoice(
        b,
        billed,
        source_key=source_key,
        purpose=purpose,
        draft=draft,
        installment=1 if installments else None,
        renewal_id=renewal_id,
        po=po,
        refuse_charge=refuse,
    )
    if invoice_id is None or not installments:
        return invoice_id
    for number, due_at in enumerate(
        domain.installment_due_dates(transaction_at, billed.time_zone), start=2
    ):
        await timers.schedule(
            b.conn,
            kind=INSTALLMENT_TIMER,
            key=f"{source_key}:{number}",
            due_at=due_at,
            account_id=billed.account_id,
            clock_id=account["test_clock_id"] if account else None,
            payload={
                "origin": source_key,
                "installment": number,
                "subscription_id": str(billed.subscription_id),
                "order_id": str(billed.order_id) if billed.order_id else None,
                "renewal_id": str(renewal_id) if renewal_id else None,
                "offering": billed.offering,
                "term": billed.term,
                "seats": billed.seats,
                "channel": billed.channel,
                "payment_method": billed.payment_method,
                "currency": billed.currency,
                "billing_country": billed.billing_country,
                "time_zone": billed.time_zone,
                "rate": str(rate),  # R20: one price for the term, at the transaction's rate
            },
        )
    return invoice_id


def billed_from_subscription(sub: asyncpg.Record, **changes: Any) -> Billed:
    values: dict[str, Any] = {
        "account_id": sub["account_id"],
        "subscription_id": sub["id"],
        "order_id": sub["order_id"],
        "offering": sub["offering"],
        "term": sub["term"],
        "seats": sub["seats"],
        "channel": sub["channel"],
        "payment_method": sub["payment_method"],
        "payment_token": sub["payment_token"],
        "currency": sub["currency"],
        "billing_country": sub["billing_country"],
        "time_zone": sub["time_zone"],
    }
    values.update(changes)
    return Billed(**values)


async def subscription_of(ctx: HandlerContext) -> asyncpg.Record:
    """The subscription this event is about; unknown means its OrderPlaced was not seen yet:
    failing sends the event to the dead letters, to be replayed once it is."""
    if ctx.envelope.subscription_id is None:
        raise LookupError(f"{ctx.envelope.event_type} carries no subscription id")
    sub = await repository.get_subscription(ctx.conn, ctx.envelope.subscription_id)
    if sub is None:
        raise LookupError(f"subscription {ctx.envelope.subscription_id} is unknown to invoicing")
    return sub


# --- consumed events that make invoices -------------------------------------------------------


@consumer.on(OrderPlaced)
async def invoice_order(ctx: HandlerContext, order: OrderPlaced) -> None:
    """Invoice the order (VAT by billing country, R18); charge card/PayPal at issue (R21).
    R17: a trial is not invoiced until it converts."""
    await repository.upsert_subscription(ctx.conn, ctx.envelope.account_id, order)
    if order.trial:
        return
    b = billing_of(ctx, await business_time(ctx))
    billed = Billed(
        account_id=ctx.envelope.account_id,
        subscription_id=order.subscription_id,
        order_id=order.order_id,
        offering=order.offering,
        term=order.term,
        seats=order.seats,
        channel=order.channel,
        payment_method=order.payment_method,
        payment_token=order.payment_token,
        currency=order.currency,
        billing_country=order.billing_country,
        time_zone=order.time_zone,
    )
    await bill_term(
        b,
        billed,
        source_key=f"order:{order.order_id}",
        purpose="order",
        transaction_at=order.placed_at,
        quote_id=order.quote_id,
    )


@consumer.on(TrialConverted)
async def invoice_converted_trial(ctx: HandlerContext, converted: TrialConverted) -> None:
    """R17: the same subscription, now paid: invoiced like an order."""
    sub = await subscription_of(ctx)
    await repository.update_subscription(
        ctx.conn,
        sub["id"],
        term=converted.term,
        seats=converted.seats,
        payment_method=converted.payment_method,
        trial=False,
    )
    billed = billed_from_subscription(
        sub,
        order_id=converted.order_id,
        term=converted.term,
        seats=converted.seats,
        payment_method=converted.payment_method,
    )
    await bill_term(
        billing_of(ctx, await business_time(ctx)),
        billed,
        source_key=f"order:{converted.order_id}",
        purpose="order",
        transaction_at=converted.converted_at,
    )


async def take_renewal_purchase_order(conn: Conn, sub: asyncpg.Record) -> PurchaseOrder:
    """R22: PO details given before the renewal date go onto the renewal invoice, once."""
    po = PurchaseOrder(
        po_number=sub["renewal_po_number"],
        notes=sub["renewal_notes"],
        document=sub["renewal_po_document"],
        file_name=sub["renewal_po_file_name"],
        mime_type=sub["renewal_po_mime_type"],
    )
    await repository.set_renewal_purchase_order(
        conn, sub["id"], po_number=None, notes=None, document=None, file_name=None, mime_type=None
    )
    return po


@consumer.on(RenewalDue)
async def invoice_renewal(ctx: HandlerContext, due: RenewalDue) -> None:
    """R25: the renewal invoice, issued on the renewal date; card/PayPal charged at issue (a
    failure starts the R37 retries), invoice accounts billed net 30."""
    sub = await subscription_of(ctx)
    changes = {
        "offering": due.offering,
        "term": due.term,
        "seats": due.seats,
        "channel": due.channel,
        "payment_method": due.payment_method,
    }
    await repository.update_subscription(ctx.conn, sub["id"], **changes)
    await bill_term(
        billing_of(ctx, await business_time(ctx)),
        billed_from_subscription(sub, **changes, order_id=None, time_zone=due.time_zone),
        source_key=f"renewal:{due.renewal_id}",
        purpose="renewal",
        transaction_at=due.period_starts_at,
        renewal_id=due.renewal_id,
        po=await take_renewal_purchase_order(ctx.conn, sub),
    )


@consumer.on(RenewalRequested)
async def remember_requested_renewal(ctx: HandlerContext, request: RenewalRequested) -> None:
    """R27: a manual or late renewal. Lifecycle answers it with ``RenewalDue`` (the period and
    its dates are lifecycle's), which is what gets billed; here we only keep how to charge it.
    Billing the request too would charge the renewal twice."""
    sub = await subscription_of(ctx)
    changes: dict[str, object] = {
        "channel": request.channel,
        "payment_method": request.payment_method,
    }
    if request.payment_token is not None:
        changes["payment_token"] = request.payment_token
    await repository.update_subscription(ctx.conn, sub["id"], **changes)


@consumer.on(SeatsAdded)
async def invoice_added_seats(ctx: HandlerContext, added: SeatsAdded) -> None:
    """R30: added seats co-termed with the subscription, priced pro rata by days."""
    sub = await subscription_of(ctx)
    await repository.update_subscription(ctx.conn, sub["id"], seats=added.total_seats)
    b = billing_of(ctx, await business_time(ctx))
    account = await repository.get_account(ctx.conn, ctx.envelope.account_id)
    exempt = account["tax_exempt_reason"] if account else None
    rate = await applied_rate(ctx.conn, added.currency, sub["channel"], b.now)
    draft = domain.draft_for_coterm(
        offering=added.offering,
        term=added.term,
        seats_added=added.seats_added,
        currency=added.currency,
        country=added.billing_country,
        tax_exempt_reason=exempt,
        rate=rate,
        prorate_from=added.prorate_from,
        coterm_until=added.coterm_until,
        time_zone=added.time_zone,
    )
    billed = billed_from_subscription(
        sub,
        order_id=added.order_id,
        offering=added.offering,
        term=added.term,
        seats=added.seats_added,
        payment_method=added.payment_method,
        currency=added.currency,
        billing_country=added.billing_country,
        time_zone=added.time_zone,
    )
    await issue_invoice(
        b, billed, source_key=f"co_term:{added.order_id}", purpose="co_term", draft=draft
    )


# --- R39: refunds -------------------------------------------------------------------------------


@consumer.on(StageChanged)
async def stop_retries_when_cancelled(ctx: HandlerContext, change: StageChanged) -> None:
    """R34, R36: a cancelled subscription is never charged again; its R37 retries stop."""
    if change.to_stage == "cancelled":
        await stop_renewal_retries(ctx)


@consumer.on(AutoRenewChanged)
async def stop_retries_when_auto_renew_off(ctx: HandlerContext, change: AutoRenewChanged) -> None:
    """R24: turning auto-renew off cancels the subscription: never charged again, so a failed
    renewal charge is not retried (R37) after it."""
    if not change.auto_renew:
        await stop_renewal_retries(ctx)


async def stop_renewal_retries(ctx: HandlerContext) -> None:
    if ctx.envelope.subscription_id is None:
        return
    for invoice_id in await repository.open_renewal_invoices(
        ctx.conn, ctx.envelope.subscription_id
    ):
        await timers.cancel(ctx.conn, kind=RETRY_TIMER, key=str(invoice_id))


@consumer.on(RefundApproved)
async def credit_refund(ctx: HandlerContext, refund: RefundApproved) -> None:
    """R39: a credit note for the refunded purchase's invoice (the order's or the renewal's, not a
    later co-term invoice), paid back through the
    original method (RefundProcessed with the expected settlement date); an unpaid invoice is
    cancelled by the credit note and nothing is paid back. Remaining installments stop."""
    if await repository.credit_note_for_refund(ctx.conn, refund.refund_id):
        return
    sub = await subscription_of(ctx)
    kind = refund.purchase_kind
    invoice = await repository.purchase_invoice(ctx.conn, sub["id"], kind, ("paid",))
    if invoice is None:
        invoice = await repository.purchase_invoice(ctx.conn, sub["id"], kind, ("issued",))
    if invoice is None:
        log.warning("refund %s: subscription %s has no invoice", refund.refund_id, sub["id"])
        return
    now = await business_time(ctx)
    await repository.cancel_subscription_timers(ctx.conn, INSTALLMENT_TIMER, sub["id"])
    await repository.cancel_subscription_timers(ctx.conn, RETRY_TIMER, sub["id"])
    currency = invoice["currency"]
    lines = domain.credit_note_lines(
        [
            InvoiceLine(
                description=r["description"],
                quantity=r["quantity"],
                unit_price=money(r["unit_price"], currency),
                net_amount=money(r["net_amount"], currency),
                vat_rate=r["vat_rate"].normalize(),
                vat_amount=money(r["vat_amount"], currency),
            )
            for r in await repository.invoice_lines(ctx.conn, invoice["id"])
        ]
    )
    method: PaymentMethod = invoice["payment_method"]
    paid = invoice["status"] == "paid"
    refund_amount = money(invoice["gross_total"], currency) if paid else Decimal(0)
    reference = None
    if paid and method != "invoice":
        payment = await repository.payment_of(ctx.conn, invoice["id"])
        result = await gateway_for(method).refund(
            amount=refund_amount,
            currency=currency,
            charge_reference=payment["reference"] if payment else "",
            idempotency_key=f"refund:{refund.refund_id}",
        )
        reference = result.reference
    settles = (
        domain.refund_settlement_date(refund.approved_at, invoice["time_zone"], method)
        if paid
        else None
    )
    credit_note_id = uuid.uuid4()
    number = domain.invoice_number(
        CREDIT_NOTE_SERIES, await repository.next_in_series(ctx.conn, CREDIT_NOTE_SERIES)
    )
    await repository.insert_credit_note(
        ctx.conn,
        credit_note_id=credit_note_id,
        number=number,
        invoice_id=invoice["id"],
        refund_id=refund.refund_id,
        account_id=invoice["account_id"],
        subscription_id=sub["id"],
        currency=currency,
        lines=lines,
        reason=refund.reason,
        issued_at=now,
        refund_method=method,
        refund_amount=refund_amount,
        refund_reference=reference,
        expected_settlement_date=settles,
    )
    await repository.mark_credited(ctx.conn, invoice["id"])
    await ctx.emit(
        CreditNoteIssued(
            credit_note_id=credit_note_id,
            credit_note_number=number,
            invoice_id=invoice["id"],
            currency=currency,
            net_total=-sum((line.net_amount for line in lines), Decimal(0)),
            vat_total=-sum((line.vat_amount for line in lines), Decimal(0)),
            gross_total=-sum((line.net_amount + line.vat_amount for line in lines), Decimal(0)),
            issued_at=now,
        )
    )
    if settles is None:
        return
    await ctx.emit(
        RefundProcessed(
            refund_id=refund.refund_id,
            credit_note_id=credit_note_id,
            amount=refund_amount,
            currency=currency,
            method=method,
            expected_settlement_date=settles,
        )
    )


# --- timers -------------------------------------------------------------------------------------


def timer_billing(ctx: TimerContext) -> Billing:
    return Billing(ctx.conn, ctx.emit, ctx.timer.due_at)


async def retry_renewal_charge(ctx: TimerContext) -> None:
    """R37: charge a failed renewal again, unless it was paid (or credited) meanwhile."""
    invoice_id = uuid.UUID(ctx.timer.payload["invoice_id"])
    invoice = await repository.lock_invoice(ctx.conn, invoice_id)
    if invoice is None or invoice["status"] != "issued":
        return
    await charge_invoice(
        timer_billing(ctx),
        invoice,
        attempt=int(ctx.timer.payload["attempt"]),
        first_failed_at=datetime.fromisoformat(ctx.timer.payload["first_failed_at"]),
    )


async def issue_installment(ctx: TimerContext) -> None:
    """R20: installment 2 or 3 of a three-year term, on its anniversary."""
    p = ctx.timer.payload
    subscription_id = uuid.UUID(p["subscription_id"])
    sub = await repository.get_subscription(ctx.conn, subscription_id)
    account_id = ctx.timer.account_id
    assert account_id is not None
    billed = Billed(
        account_id=account_id,
        subscription_id=subscription_id,
        order_id=uuid.UUID(p["order_id"]) if p.get("order_id") else None,
        offering=p["offering"],
        term=p["term"],
        seats=p["seats"],
        channel=p["channel"],
        payment_method=p["payment_method"],
        payment_token=sub["payment_token"] if sub else None,
        currency=p["currency"],
        billing_country=p["billing_country"],
        time_zone=p["time_zone"],
    )
    b = timer_billing(ctx)
    account = await repository.get_account(ctx.conn, account_id)
    rate = (
        Decimal(p["rate"])
        if p.get("rate")
        else await applied_rate(ctx.conn, billed.currency, billed.channel, b.now)
    )
    draft = domain.draft_for_order(
        offering=billed.offering,
        term=billed.term,
        seats=billed.seats,
        currency=billed.currency,
        country=billed.billing_country,
        tax_exempt_reason=account["tax_exempt_reason"] if account else None,
        rate=rate,
        installment=int(p["installment"]),
    )
    await issue_invoice(
        b,
        billed,
        source_key=f"installment:{p['origin']}:{p['installment']}",
        purpose="installment",
        draft=draft,
        installment=int(p["installment"]),
        renewal_id=uuid.UUID(p["renewal_id"]) if p.get("renewal_id") else None,
    )


async def recompute_exchange_rates(conn: Conn, quarter: date, computed_at: datetime) -> int:
    """R19: the applied rates of ``quarter`` from the latest market rates before it."""
    starts = datetime.combine(quarter, time(0), tzinfo=UTC)
    base = domain.price_book()["base_currency"]
    inserted = 0
    for currency in domain.price_book()["initial_rates_from_base"]:
        if currency == base:
            continue
        market = await repository.latest_market_rate(conn, currency, quarter)
        if market is None:
            continue  # no market data: the applied rate stays as it was
        previous = {}
        for channel in ("direct", "partner"):
            found = await repository.applied_rate_before(
                conn, currency, channel, starts, inclusive=False
            )
            previous[channel] = found if found is not None else domain.initial_rate(currency)
        rates = domain.quarterly_rates(quarter, market, previous["direct"], previous["partner"])
        inserted += await repository.insert_applied_rates(
            conn, currency, quarter, rates, computed_at
        )
    return inserted


async def fx_quarter(ctx: TimerContext) -> None:
    """R19: at each quarter start; then the next quarter's timer."""
    quarter = ctx.timer.due_at.astimezone(UTC).date()
    await recompute_exchange_rates(ctx.conn, quarter, ctx.clock.now())
    await schedule_fx_quarter(ctx.conn, domain.next_quarter_start(ctx.timer.due_at))


async def schedule_fx_quarter(conn: Conn, at: datetime) -> None:
    key = at.date().isoformat()
    if not await repository.timer_known(conn, FX_TIMER, key):
        await timers.schedule(conn, kind=FX_TIMER, key=key, due_at=at)


def retried_through_outages(handler: TimerHandler) -> TimerHandler:
    """A gateway outage is not a reason to give up an installment or an R37 retry: the timer
    comes back with backoff until the gateway answers (it is never parked as failed)."""

    async def run(ctx: TimerContext) -> None:
        try:
            await handler(ctx)
        except GatewayUnavailable as outage:
            raise timers.RetryLater(str(outage)) from outage

    return run


TIMERS: dict[str, TimerHandler] = {
    RETRY_TIMER: retried_through_outages(retry_renewal_charge),
    INSTALLMENT_TIMER: retried_through_outages(issue_installment),
    FX_TIMER: fx_quarter,
}


async def keep_exchange_rates_scheduled(rt: Runtime) -> None:
    """R19: make sure the next quarter's recomputation is scheduled (any replica may do it)."""
    async with rt.pool.acquire() as conn, conn.transaction():
        await schedule_fx_quarter(conn, domain.next_quarter_start(rt.clock.now()))
