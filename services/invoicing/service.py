"""IInvoicing's use cases, one function each: invoices for orders, trials, renewals (R25),
installments (R20) and co-terms (R30); charge retries (R37); bank transfers; credit notes and
refunds (R39); PO details (R22); exchange rates (R19); the reads of the HTTP door.

Each takes a unit of work (``uow``: the repository on the open transaction, the events, time),
the actor where there is one and a typed command. The rules are ``domain.py``'s and
``exchange_rates.py``'s; the billing steps they compose are ``billing.py``'s; the gateways are
``gateway.py``'s adapters.
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from datetime import date
from typing import Any

from shared import people
from shared.auth import Principal
from shared.contracts import (
    AccountOpened,
    BillingDetailsChanged,
    CreditNoteIssued,
    InvoiceLine,
    OrderPlaced,
    PaymentMethod,
    RefundApproved,
    RefundProcessed,
    RenewalDue,
    RenewalRequested,
    RolesChanged,
    SeatsAdded,
    TrialConverted,
)
from shared.errors import not_found
from shared.signed_links import DocumentKind

from . import domain, exchange_rates, printing
from .billing import (
    INSTALLMENT_TIMER,
    REMINDER_TIMER,
    RETRY_TIMER,
    UnitOfWork,
    bill_term,
    billed_from,
    business_time,
    charge_invoice,
    charged_with,
    emit,
    issue_invoice,
    money,
    rate_in_force,
    settle_invoice,
    subscription_of,
    tax_exemption,
)
from .commands import BankTransfer, Billed, BillingTime, Cause
from .domain import PurchaseOrder
from .gateway import gateway_for
from .models import (
    AppliedRateRecord,
    CreditNote,
    Invoice,
    MarketRate,
    Payment,
    StoredLine,
)

# The payment center's use cases live in payments.py (issue 11).
from .payments import add_payment_method as add_payment_method
from .payments import list_payment_methods as list_payment_methods
from .payments import pay_invoice as pay_invoice
from .payments import remove_payment_method as remove_payment_method
from .payments import renewal_method_changed as renewal_method_changed
from .payments import set_default_payment_method as set_default_payment_method
from .pdf import PrintedDocument

# The timer use cases live in scheduled.py; one service API for the doors and the handlers.
from .scheduled import FX_TIMER as FX_TIMER
from .scheduled import issue_installment as issue_installment
from .scheduled import recompute_exchange_rates as recompute_exchange_rates
from .scheduled import recompute_quarter as recompute_quarter
from .scheduled import remind_due_invoice as remind_due_invoice
from .scheduled import retry_charge as retry_charge
from .scheduled import schedule_exchange_rates as schedule_exchange_rates

log = logging.getLogger(__name__)


CREDIT_NOTE_SERIES = "CN"


# --- consumed events -----------------------------------------------------------------------------


async def remember_account(uow: UnitOfWork, cause: Cause, opened: AccountOpened) -> None:
    await uow.repo.upsert_account(cause.account_id, opened)


async def remember_billing_details(
    uow: UnitOfWork, cause: Cause, changed: BillingDetailsChanged
) -> None:
    """Issue 15: printed on the documents issued from now on (an issued one keeps its own)."""
    await uow.repo.set_billing_identity(cause.account_id, changed.billing)


async def remember_roles(uow: UnitOfWork, cause: Cause, snapshot: RolesChanged) -> None:
    await uow.repo.apply_roles(cause.account_id, snapshot)


async def invoice_order(uow: UnitOfWork, cause: Cause, order: OrderPlaced) -> None:
    """Invoice the order (VAT by billing country, R18); charge card/PayPal at issue (R21).
    R17: a trial is not invoiced until it converts. R16, R19: the order's priced line (a
    quote's, or a direct order's at the applied rate ordering priced it at and showed the buyer)
    is billed as it is, never re-priced. R15 is not judged here: ordering refused above the
    limit when the order was placed, so what arrives by card or PayPal is charged."""
    await uow.repo.upsert_subscription(cause.account_id, order)
    if not domain.invoiced_when_ordered(order.trial):
        return
    billed = Billed(
        account_id=cause.account_id,
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
        quoted_unit_price=domain.quoted_unit_price(order.priced_lines, order.offering, order.term),
    )
    await bill_term(
        uow,
        await business_time(uow, cause),
        billed,
        source_key=f"order:{order.order_id}",
        purpose="order",
        transaction_at=order.placed_at,
        priced_at_rate=order.price.exchange_rate if order.price else None,
    )


async def invoice_converted_trial(uow: UnitOfWork, cause: Cause, converted: TrialConverted) -> None:
    """R17: the same subscription, now paid: invoiced like an order."""
    sub = await subscription_of(uow, cause)
    changes: dict[str, Any] = {
        "term": converted.term,
        "seats": converted.seats,
        "payment_method": converted.payment_method,
    }
    await uow.repo.update_subscription(sub.id, **changes, trial=False)
    await bill_term(
        uow,
        await business_time(uow, cause),
        billed_from(sub, **changes, order_id=converted.order_id),
        source_key=f"order:{converted.order_id}",
        purpose="order",
        transaction_at=converted.converted_at,
    )


async def invoice_renewal(uow: UnitOfWork, cause: Cause, due: RenewalDue) -> None:
    """R25: the renewal invoice, issued on the renewal date; card/PayPal charged at issue (a
    failure starts the R37 retries), invoice accounts billed net 30. R22: PO details given
    before the renewal date go onto it, once. R16, R27: a renewal bought through a partner's
    renewal quote is billed at its priced line as it is (R20: a three-year one in thirds of
    it), never re-priced at the rate of the day. One invoice per renewal (its id): announced
    again (auto-renew at the renewal date after a quote), it is not billed twice."""
    sub = await subscription_of(uow, cause)
    changes: dict[str, Any] = {
        "offering": due.offering,
        "term": due.term,
        "seats": due.seats,
        "channel": due.channel,
        "payment_method": due.payment_method,
    }
    await uow.repo.update_subscription(sub.id, **changes)
    method, token = await charged_with(uow, sub, due.payment_method)
    changes.update(payment_method=method, payment_token=token)
    po = PurchaseOrder(
        po_number=sub.renewal_po_number,
        notes=sub.renewal_notes,
        document=sub.renewal_po_document,
        file_name=sub.renewal_po_file_name,
        mime_type=sub.renewal_po_mime_type,
    )
    await uow.repo.set_renewal_purchase_order(sub.id, PurchaseOrder())
    await bill_term(
        uow,
        await business_time(uow, cause),
        billed_from(
            sub,
            **changes,
            order_id=None,
            time_zone=due.time_zone,
            quoted_unit_price=domain.quoted_unit_price(due.priced_lines, due.offering, due.term),
        ),
        source_key=f"renewal:{due.renewal_id}",
        purpose="renewal",
        transaction_at=due.period_starts_at,
        renewal_id=due.renewal_id,
        po=po,
    )


async def remember_requested_renewal(
    uow: UnitOfWork, cause: Cause, request: RenewalRequested
) -> None:
    """R27: a manual or late renewal. Lifecycle answers it with ``RenewalDue`` (the period and
    its dates are lifecycle's), which is what gets billed; here we keep how to charge it, and a
    renewal invoice left open by a declined charge (R37) is charged again now with it. Billing
    the request too would charge the renewal twice."""
    sub = await subscription_of(uow, cause)
    changes: dict[str, Any] = {
        "channel": request.channel,
        "payment_method": request.payment_method,
    }
    if request.payment_token is not None:
        changes["payment_token"] = request.payment_token
    await uow.repo.update_subscription(sub.id, **changes)
    if domain.charged_at_issue(request.payment_method):
        token = request.payment_token or sub.payment_token
        for invoice_id in await uow.repo.open_renewal_invoices(sub.id):
            await charge_again_with(uow, cause, invoice_id, request.payment_method, token)


async def charge_again_with(
    uow: UnitOfWork, cause: Cause, invoice_id: uuid.UUID, method: PaymentMethod, token: str | None
) -> None:
    """R27, R37 [ours, issue 11]: a renewal whose charge was declined, renewed late with a card
    or PayPal, is charged at once with the method just given; its remaining retries use it too
    (the invoice now carries it). The same invoice, never a second one: the RenewalDue lifecycle
    answers the request with names the same renewal, which is invoiced already."""
    invoice = await uow.repo.lock_invoice(invoice_id)
    if invoice is None or invoice.status != "issued":
        return  # paid (or credited) meanwhile
    await uow.repo.set_invoice_payment(invoice.id, method, token)
    invoice = dataclasses.replace(invoice, payment_method=method, payment_token=token)
    attempts = await uow.repo.charge_attempts(invoice.id)
    failed = [a.attempted_at for a in attempts if not a.succeeded]
    await charge_invoice(
        uow,
        await business_time(uow, cause),
        invoice,
        attempt=len(attempts) + 1,
        first_failed_at=min(failed) if failed else None,
    )


async def invoice_added_seats(uow: UnitOfWork, cause: Cause, added: SeatsAdded) -> None:
    """R30: added seats co-termed with the subscription, priced pro rata by days."""
    sub = await subscription_of(uow, cause)
    await uow.repo.update_subscription(sub.id, seats=added.total_seats)
    when = await business_time(uow, cause)
    rate = await rate_in_force(uow, added.currency, sub.channel, when.at)
    draft = domain.draft_for_coterm(
        offering=added.offering,
        term=added.term,
        seats_added=added.seats_added,
        currency=added.currency,
        country=added.billing_country,
        tax_exempt_reason=await tax_exemption(uow, cause.account_id),
        rate=rate,
        prorate_from=added.prorate_from,
        coterm_until=added.coterm_until,
        time_zone=added.time_zone,
    )
    billed = billed_from(
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
        uow,
        when,
        billed,
        source_key=f"co_term:{added.order_id}",
        purpose="co_term",
        draft=draft,
        period=domain.period_until(added.prorate_from, added.coterm_until, added.time_zone),
    )


async def stop_renewal_retries(uow: UnitOfWork, cause: Cause) -> None:
    """R24: auto-renew turned off is never charged again: a failed renewal's R37 retries stop.
    A failed order, installment or co-term charge keeps its retries: that term is being used."""
    if cause.subscription_id is None:
        return
    for invoice_id in await uow.repo.open_renewal_invoices(cause.subscription_id):
        await uow.repo.cancel_timer(RETRY_TIMER, str(invoice_id))


async def stop_charging_cancelled(
    uow: UnitOfWork, cause: Cause, *, lapsed_unpaid: bool = False
) -> None:
    """R34, R36, R39: Cancelled is final: no R37 retry of any charge, no R20 installment of a
    term that will not run is issued or charged, and no invoice-due reminder of its invoices is
    sent [ours] (their timers are deleted; one being fired holds its row, and this waits for
    it). Cancelled on an unpaid invoice (lifecycle's reason, R31, also for a no-grace offering,
    R36), the account prepays from then on (R34): its later invoices are due at issue."""
    if lapsed_unpaid:
        await uow.repo.require_prepayment(cause.account_id)
    if cause.subscription_id is not None:
        if await uow.repo.get_subscription(cause.subscription_id) is not None:
            await uow.repo.update_subscription(cause.subscription_id, cancelled=True)
        await uow.repo.cancel_subscription_timers(RETRY_TIMER, cause.subscription_id)
        await uow.repo.cancel_subscription_timers(INSTALLMENT_TIMER, cause.subscription_id)
        await uow.repo.cancel_subscription_timers(REMINDER_TIMER, cause.subscription_id)


async def credit_refund(uow: UnitOfWork, cause: Cause, refund: RefundApproved) -> None:
    """R39: a credit note for the refunded purchase's invoice (the order's or the renewal's, not
    a later co-term invoice), paid back through the original method (RefundProcessed with the
    expected settlement date); an unpaid invoice is cancelled by the credit note and nothing is
    paid back. Remaining installments stop."""
    if await uow.repo.credit_note_for_refund(refund.refund_id):
        return
    sub = await subscription_of(uow, cause)
    await uow.repo.cancel_subscription_timers(INSTALLMENT_TIMER, sub.id)
    await uow.repo.cancel_subscription_timers(RETRY_TIMER, sub.id)
    await uow.repo.cancel_subscription_timers(REMINDER_TIMER, sub.id)
    kind = refund.purchase_kind
    invoice = await uow.repo.purchase_invoice(sub.id, kind, ("paid",))
    if invoice is None:
        invoice = await uow.repo.purchase_invoice(sub.id, kind, ("issued",))
    if invoice is None:
        log.warning("refund %s: subscription %s has no invoice", refund.refund_id, sub.id)
        return
    when = await business_time(uow, cause)
    currency, method, status = invoice.currency, invoice.payment_method, invoice.status
    lines = domain.credit_note_lines(
        [
            InvoiceLine(
                description=r.description,
                quantity=r.quantity,
                unit_price=money(r.unit_price, currency),
                net_amount=money(r.net_amount, currency),
                vat_rate=r.vat_rate.normalize(),
                vat_amount=money(r.vat_amount, currency),
            )
            for r in await uow.repo.invoice_lines(invoice.id)
        ]
    )
    amount = domain.refund_amount(status, invoice.gross_total, currency)
    reference = None
    if domain.refunded_through_gateway(status, method):
        payment = await uow.repo.payment_of(invoice.id)
        result = await gateway_for(method).refund(
            amount=amount,
            currency=currency,
            charge_reference=payment.reference if payment else "",
            idempotency_key=f"refund:{refund.refund_id}",
        )
        reference = result.reference
    net, vat, gross = domain.document_totals(lines)
    series = await uow.repo.next_in_series(CREDIT_NOTE_SERIES)
    note = CreditNote(
        id=uuid.uuid4(),
        credit_note_number=domain.invoice_number(CREDIT_NOTE_SERIES, series),
        invoice_id=invoice.id,
        refund_id=refund.refund_id,
        account_id=invoice.account_id,
        subscription_id=sub.id,
        currency=currency,
        net_total=net,
        vat_total=vat,
        gross_total=gross,
        reason=refund.reason,
        issued_at=when.at,
        refund_method=method,
        refund_amount=amount,
        refund_reference=reference,
        expected_settlement_date=domain.refund_settles(
            status, refund.approved_at, invoice.time_zone, method
        ),
    )
    await uow.repo.insert_credit_note(note, lines)
    await uow.repo.mark_credited(invoice.id)
    issued = CreditNoteIssued(
        credit_note_id=note.id,
        credit_note_number=note.credit_note_number,
        invoice_id=invoice.id,
        currency=currency,
        net_total=-net,
        vat_total=-vat,
        gross_total=-gross,
        issued_at=when.at,
    )
    await emit(uow, when, issued, cause.account_id, cause.subscription_id)
    if note.expected_settlement_date is None:
        return
    processed = RefundProcessed(
        refund_id=refund.refund_id,
        credit_note_id=note.id,
        amount=amount,
        currency=currency,
        method=method,
        expected_settlement_date=note.expected_settlement_date,
    )
    await emit(uow, when, processed, cause.account_id, cause.subscription_id)


# --- HTTP: reads and writes ----------------------------------------------------------------------


async def require_role(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID, allowed: frozenset[str], what: str
) -> None:
    """R8 (``shared.people.check_role``) with the actor's roles in the account."""
    if actor.kind == "operator":
        return
    roles = await uow.repo.roles_of(account_id, actor.subject) if actor.kind == "user" else set()
    people.check_role(roles, allowed, what)


async def invoice_for(
    uow: UnitOfWork,
    actor: Principal,
    invoice_id: uuid.UUID,
    allowed: frozenset[str] = domain.INVOICE_READERS,
) -> Invoice:
    """The invoice, when the actor may see it (R8: admins who are not the buyer 403)."""
    invoice = await uow.repo.get_invoice(invoice_id)
    if invoice is None:
        raise not_found("invoice")
    await require_role(uow, actor, invoice.account_id, allowed, "invoice")
    return invoice


async def list_invoices(uow: UnitOfWork, actor: Principal, account_id: uuid.UUID) -> list[Invoice]:
    await require_role(uow, actor, account_id, domain.INVOICE_READERS, "account")
    return await uow.repo.list_invoices(account_id)


async def get_invoice(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID
) -> tuple[Invoice, list[StoredLine]]:
    invoice = await invoice_for(uow, actor, invoice_id)
    return invoice, await uow.repo.invoice_lines(invoice_id)


async def invoice_facts(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID
) -> tuple[Invoice, list[StoredLine], printing.Party]:
    """What the invoice's PDF and e-invoice say (R8: who may read the invoice)."""
    invoice, lines = await get_invoice(uow, actor, invoice_id)
    return invoice, lines, await party_of(uow, invoice)


async def print_invoice(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID, seller: printing.Seller
) -> PrintedDocument:
    invoice, lines, party = await invoice_facts(uow, actor, invoice_id)
    return printing.invoice_document(invoice, lines, party, seller)


async def party_of(uow: UnitOfWork, invoice: Invoice) -> printing.Party:
    """The buyer as the invoice names it: its identity as issued with (issue 15)."""
    account_id = invoice.account_id
    return printing.Party(
        account_id=account_id,
        account=await uow.repo.get_account(account_id),
        billing=printing.identity_at_issue(invoice, await uow.repo.billing_identity(account_id)),
        contact=await uow.repo.buyer_of(account_id),
    )


async def change_purchase_order(
    uow: UnitOfWork,
    actor: Principal,
    invoice_id: uuid.UUID,
    change: PurchaseOrder,
    given: set[str],
) -> Invoice:
    """R22: PO number, notes and PO document, until the invoice is paid (``given``: the fields
    the request names; null clears, absent stays)."""
    await invoice_for(uow, actor, invoice_id, domain.PO_EDITORS)
    invoice = await uow.repo.lock_invoice(invoice_id)
    if invoice is None:
        raise not_found("invoice")
    domain.require_po_editable(invoice.status, invoice.invoice_number)
    current = await uow.repo.purchase_order(invoice_id)
    await uow.repo.update_purchase_order(
        invoice_id, domain.changed_purchase_order(current, change, given)
    )
    updated = await uow.repo.get_invoice(invoice_id)
    if updated is None:
        raise not_found("invoice")
    return updated


async def purchase_order_document(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID
) -> PurchaseOrder:
    await invoice_for(uow, actor, invoice_id)
    po = await uow.repo.purchase_order(invoice_id)
    if po.document is None:
        raise not_found("PO document")
    return po


async def set_renewal_purchase_order(
    uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID, po: PurchaseOrder
) -> PurchaseOrder:
    """R22: the PO details for the coming renewal invoice, given before the renewal date."""
    await renewal_editable(uow, actor, subscription_id)
    await uow.repo.set_renewal_purchase_order(subscription_id, po)
    return po


async def renewal_editable(uow: UnitOfWork, actor: Principal, subscription_id: uuid.UUID) -> None:
    """R8: renewal data is the buyer's (payers see invoices only)."""
    sub = await uow.repo.get_subscription(subscription_id)
    if sub is None:
        raise not_found("subscription")
    await require_role(uow, actor, sub.account_id, domain.RENEWAL_EDITORS, "subscription")


async def list_credit_notes(
    uow: UnitOfWork, actor: Principal, account_id: uuid.UUID
) -> list[CreditNote]:
    await require_role(uow, actor, account_id, domain.INVOICE_READERS, "account")
    return await uow.repo.list_credit_notes(account_id)


async def get_credit_note(
    uow: UnitOfWork, actor: Principal, credit_note_id: uuid.UUID
) -> tuple[CreditNote, list[StoredLine]]:
    note = await uow.repo.get_credit_note(credit_note_id)
    if note is None:
        raise not_found("credit note")
    await require_role(uow, actor, note.account_id, domain.INVOICE_READERS, "credit note")
    return note, await uow.repo.credit_note_lines(credit_note_id)


async def credit_note_facts(
    uow: UnitOfWork, actor: Principal, credit_note_id: uuid.UUID
) -> tuple[CreditNote, Invoice, list[StoredLine], printing.Party]:
    """What the credit note's PDF and e-invoice say (R8, as its invoice)."""
    note, lines = await get_credit_note(uow, actor, credit_note_id)
    invoice = await uow.repo.get_invoice(note.invoice_id)
    if invoice is None:
        raise not_found("invoice")
    return note, invoice, lines, await party_of(uow, invoice)


async def print_credit_note(
    uow: UnitOfWork, actor: Principal, credit_note_id: uuid.UUID, seller: printing.Seller
) -> PrintedDocument:
    note, invoice, lines, party = await credit_note_facts(uow, actor, credit_note_id)
    return printing.credit_note_document(note, invoice, lines, party, seller)


async def print_linked_document(
    uow: UnitOfWork, kind: DocumentKind, document_id: uuid.UUID, seller: printing.Seller
) -> PrintedDocument:
    """The document a verified signed link names (issue 15): the signature stands in for the
    R8 check, for this one document only."""
    if kind == "invoice":
        invoice = await uow.repo.get_invoice(document_id)
        if invoice is None:
            raise not_found("invoice")
        lines = await uow.repo.invoice_lines(document_id)
        return printing.invoice_document(invoice, lines, await party_of(uow, invoice), seller)
    note = await uow.repo.get_credit_note(document_id)
    credited = await uow.repo.get_invoice(note.invoice_id) if note else None
    if note is None or credited is None:
        raise not_found("credit note")
    lines = await uow.repo.credit_note_lines(document_id)
    party = await party_of(uow, credited)
    return printing.credit_note_document(note, credited, lines, party, seller)


async def pay_by_bank_transfer(
    uow: UnitOfWork, actor: Principal, invoice_id: uuid.UUID, transfer: BankTransfer
) -> Payment:
    """A bank transfer received for an invoice, in full: PaymentSucceeded and InvoicePaid."""
    domain.require_operator(actor.kind)
    invoice = await uow.repo.lock_invoice(invoice_id)
    if invoice is None:
        raise not_found("invoice")
    domain.require_bank_payment_matches(
        invoice.status,
        invoice.invoice_number,
        invoice.gross_total,
        invoice.currency,
        transfer.amount,
    )
    paid_at = transfer.paid_at or await uow.time.now(invoice.account_id)
    return await settle_invoice(
        uow, BillingTime(paid_at), invoice, method="invoice", reference=transfer.reference
    )


async def record_market_rates(
    uow: UnitOfWork, actor: Principal, rates: list[MarketRate], source: str
) -> int:
    """R19: market rates from the base currency (USD), as fed by an operator (API or CSV)."""
    domain.require_operator(actor.kind)
    for rate in rates:
        exchange_rates.known_currency(rate.currency)
    await uow.repo.insert_market_rates(rates, source, await uow.time.now())
    return len(rates)


async def recompute_rates(uow: UnitOfWork, actor: Principal, quarter: date) -> int:
    """R19: compute a quarter's applied rates now (the quarterly timer does the same)."""
    domain.require_operator(actor.kind)
    exchange_rates.require_quarter_start(quarter)
    return await recompute_exchange_rates(uow, quarter, await uow.time.now())


async def exchange_rate_history(
    uow: UnitOfWork, actor: Principal, currency: str | None, channel: str | None
) -> list[AppliedRateRecord]:
    """R19: the applied rates with their history."""
    domain.require_operator(actor.kind)
    return await uow.repo.applied_rate_history(currency, channel)
