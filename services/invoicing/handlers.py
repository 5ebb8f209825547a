"""Invoicing's Kafka entrance: accounts and roles from ordering; an invoice for every order."""

from __future__ import annotations

import uuid

from shared import people
from shared.contracts import (
    AccountOpened,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    PaymentSucceeded,
    RolesChanged,
)
from shared.messaging import EventConsumer, HandlerContext

from . import domain, repository
from .gateway import DEFAULT_TEST_TOKEN, PaymentGateway, SandboxGateway

consumer = EventConsumer("invoicing")
gateway: PaymentGateway = SandboxGateway()
INVOICE_SERIES = "INV"


@consumer.on(AccountOpened)
async def remember_account(ctx: HandlerContext, opened: AccountOpened) -> None:
    await repository.upsert_account(ctx.conn, ctx.envelope.account_id, opened)


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)


@consumer.on(OrderPlaced)
async def invoice_order(ctx: HandlerContext, order: OrderPlaced) -> None:
    """Invoice the order (VAT by billing country, R18); charge card/PayPal at issue (R21)."""
    if await repository.invoice_id_for_order(ctx.conn, order.order_id):
        return  # the order is invoiced already (the inbox makes this rare)
    account = await repository.get_account(ctx.conn, ctx.envelope.account_id)
    exempt = account["tax_exempt_reason"] if account else None
    draft = domain.draft_for_order(
        offering=order.offering,
        term=order.term,
        seats=order.seats,
        currency=order.currency,
        country=order.billing_country,
        tax_exempt_reason=exempt,
    )
    invoice_id = uuid.uuid4()
    issued_at = ctx.clock.now()
    number = domain.invoice_number(
        INVOICE_SERIES, await repository.next_in_series(ctx.conn, INVOICE_SERIES)
    )
    due = domain.due_date(issued_at, order.time_zone, order.payment_method)
    await repository.insert_invoice(
        ctx.conn,
        invoice_id=invoice_id,
        number=number,
        account_id=ctx.envelope.account_id,
        subscription_id=order.subscription_id,
        order_id=order.order_id,
        currency=draft.currency,
        exchange_rate=draft.exchange_rate,
        net_total=draft.net_total,
        vat_total=draft.vat_total,
        gross_total=draft.gross_total,
        payment_method=order.payment_method,
        tax_exempt_reason=exempt,
        issued_at=issued_at,
        due_date=due,
        lines=draft.lines,
    )
    await ctx.emit(
        InvoiceIssued(
            invoice_id=invoice_id,
            invoice_number=number,
            order_id=order.order_id,
            currency=draft.currency,
            net_total=draft.net_total,
            vat_total=draft.vat_total,
            gross_total=draft.gross_total,
            lines=draft.lines,
            payment_method=order.payment_method,
            issued_at=issued_at,
            due_date=due,
            tax_exempt_reason=exempt,
        )
    )
    if order.payment_method == "invoice":
        return
    result = await gateway.charge(
        amount=draft.gross_total,
        currency=draft.currency,
        method=order.payment_method,
        token=DEFAULT_TEST_TOKEN,
        idempotency_key=str(invoice_id),
    )
    if not result.succeeded:
        await ctx.emit(
            PaymentFailed(
                invoice_id=invoice_id,
                amount=draft.gross_total,
                currency=draft.currency,
                method=order.payment_method,
                reason=result.failure_reason or "declined",
                failed_at=issued_at,
            )
        )
        return
    payment_id = uuid.uuid4()
    await repository.record_payment(
        ctx.conn,
        payment_id=payment_id,
        invoice_id=invoice_id,
        amount=draft.gross_total,
        currency=draft.currency,
        method=order.payment_method,
        reference=result.reference,
        paid_at=issued_at,
    )
    await ctx.emit(
        PaymentSucceeded(
            payment_id=payment_id,
            invoice_id=invoice_id,
            amount=draft.gross_total,
            currency=draft.currency,
            method=order.payment_method,
            paid_at=issued_at,
        )
    )
    await ctx.emit(InvoicePaid(invoice_id=invoice_id, invoice_number=number, paid_at=issued_at))
