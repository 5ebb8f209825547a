"""Invoicing's rules, with no I/O: co-terms, installment dates, due dates, charge retries,
credit notes and refund settlement. The price of a term (price book, R19 applied rate, rounding,
R18 VAT, R20 installment split) is ``shared.pricing``, shared with ordering, which prices the
orders it places (invoicing bills those figures as they are); it is re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Literal

from shared.contracts import InvoiceLine, PaymentMethod, PricedLine, Term
from shared.errors import Conflict, DomainError, Forbidden, Invalid
from shared.pricing import EU_COUNTRIES as EU_COUNTRIES
from shared.pricing import INSTALLMENT_COUNT as INSTALLMENT_COUNT
from shared.pricing import INSTALLMENTS_FROM as INSTALLMENTS_FROM
from shared.pricing import REVERSE_CHARGE as REVERSE_CHARGE
from shared.pricing import TERM_NAMES as TERM_NAMES
from shared.pricing import DraftInvoice as DraftInvoice
from shared.pricing import applied_rate as applied_rate
from shared.pricing import base_price as base_price
from shared.pricing import draft_for_order as draft_for_order
from shared.pricing import exchange_rate as exchange_rate
from shared.pricing import initial_rate as initial_rate
from shared.pricing import is_base_currency as is_base_currency
from shared.pricing import minor_units as minor_units
from shared.pricing import one_minor_unit as one_minor_unit
from shared.pricing import pays_in_installments as pays_in_installments
from shared.pricing import price_book as price_book
from shared.pricing import priced_line as priced_line
from shared.pricing import reverse_charged as reverse_charged
from shared.pricing import round_money as round_money
from shared.pricing import subscription_line as subscription_line
from shared.pricing import tax_exemption as tax_exemption
from shared.pricing import unit_price as unit_price
from shared.pricing import vat_rate as vat_rate
from shared.pricing import vat_table as vat_table
from shared.time.calendar import TERM_MONTHS as TERM_MONTHS
from shared.time.calendar import add_months, local_date, local_midnight, local_time_on

PAY_BY_INVOICE_NET_DAYS = 30  # R21
MAX_PAYERS_ON_INVOICE = 5  # R7
# R37 [ours]: days after the first failed charge. Every card/PayPal charge is retried on these
# days, the first purchase's, an installment's and a co-term's as a renewal's (issue 11): an
# unpaid charge runs the R31 process from its due date, and the retries fall inside Expired.
CHARGE_RETRY_DAYS = (1, 3, 7, 14)
# R39: business days until a refund reaches the payer. Card: the public "5-7 business days",
# taken at its upper end so the date is a promise we keep [ours]; PayPal and bank [ours].
REFUND_SETTLEMENT_BUSINESS_DAYS: dict[PaymentMethod, int] = {"card": 7, "paypal": 3, "invoice": 10}


def service_period(starts_at: datetime, time_zone: str, months: int) -> tuple[date, date]:
    """Issue 15 [ours]: the period an invoice covers, in local dates, both inclusive: from the
    day the term (or R20 installment year) starts to the day before its anniversary."""
    start = local_date(starts_at, time_zone)
    return start, add_months(start, months) - timedelta(days=1)


def period_until(starts_at: datetime, ends_at: datetime, time_zone: str) -> tuple[date, date]:
    """R30: a co-term's period, from the purchase to the day before the renewal date."""
    start = local_date(starts_at, time_zone)
    last_second = ends_at - timedelta(seconds=1)  # the renewal instant or the expiry (R23)
    return start, max(start, local_date(last_second, time_zone))


# --- R30: co-term ------------------------------------------------------------------------------


def coterm_days(
    prorate_from: datetime, coterm_until: datetime, term: Term, time_zone: str
) -> tuple[int, int]:
    """R30 [ours: by days]: (days left until the renewal, days in the term that ends then),
    both counted in local calendar days of the purchase's time zone."""
    until = local_date(coterm_until, time_zone)
    term_start = add_months(until, -TERM_MONTHS[term])
    days_left = max(0, (until - local_date(prorate_from, time_zone)).days)
    return min(days_left, (until - term_start).days), (until - term_start).days


def draft_for_coterm(
    *,
    offering: str,
    term: Term,
    seats_added: int,
    currency: str,
    country: str,
    tax_exempt_reason: str | None,
    rate: Decimal,
    prorate_from: datetime,
    coterm_until: datetime,
    time_zone: str,
) -> DraftInvoice:
    """R30: added seats priced pro rata by days for the rest of the term (unit price rounded)."""
    days_left, term_days = coterm_days(prorate_from, coterm_until, term, time_zone)
    full = unit_price(offering, term, currency, rate)
    unit = round_money(full * days_left / term_days, currency)
    line = priced_line(
        description=(
            f"{offering}, {seats_added} added seat(s) co-termed: {days_left} of {term_days} days"
        ),
        quantity=seats_added,
        unit=unit,
        currency=currency,
        vat_percent=vat_rate(country, tax_exempt_reason),
    )
    return DraftInvoice(currency, [line], rate, tax_exempt_reason)


# --- R39: credit notes -------------------------------------------------------------------------


def credit_note_lines(lines: list[InvoiceLine]) -> list[InvoiceLine]:
    """A credit note is the invoice negated, line by line: the only document with negatives."""
    return [
        InvoiceLine(
            description=f"Credit: {line.description}",
            quantity=line.quantity,
            unit_price=-line.unit_price,
            net_amount=-line.net_amount,
            vat_rate=line.vat_rate,
            vat_amount=-line.vat_amount,
        )
        for line in lines
    ]


def add_business_days(day: date, business_days: int) -> date:
    """Monday to Friday count; public holidays are not modelled [ours]."""
    while business_days > 0:
        day += timedelta(days=1)
        if day.weekday() < 5:
            business_days -= 1
    return day


def refund_settlement_date(approved_at: datetime, time_zone: str, method: PaymentMethod) -> date:
    """R39: when the money is expected back, by the original payment method."""
    return add_business_days(
        local_date(approved_at, time_zone), REFUND_SETTLEMENT_BUSINESS_DAYS[method]
    )


# --- R20: installments -------------------------------------------------------------------------


def installment_due_dates(transaction_at: datetime, time_zone: str) -> list[datetime]:
    """R20: installments 2 and 3, at local midnight of the first and second anniversary (as
    instants, in UTC)."""
    start = local_date(transaction_at, time_zone)
    return [local_midnight(add_months(start, 12 * years), time_zone) for years in (1, 2)]


# --- R21, R25, R37: due dates and charges -----------------------------------------------------


def due_date(
    issued_at: datetime, time_zone: str, method: PaymentMethod, prepay_only: bool = False
) -> date:
    """R21: pay-by-invoice is due 30 days after issue; card and PayPal are charged at issue.
    R34: an account that must prepay gets no credit: an invoice is due the day it is issued."""
    issue_day = local_date(issued_at, time_zone)
    if method == "invoice" and not prepay_only:
        return issue_day + timedelta(days=PAY_BY_INVOICE_NET_DAYS)
    return issue_day


# --- R9, R11, R21: invoice-due reminders [ours, issue 11; services/invoicing/README.md] ---------

DUE_SOON_DAYS_BEFORE = 7  # a week's notice: time to route the invoice through a payables run
OVERDUE_DAYS_AFTER = (1, 7)  # the first day after the due date (R31 starts then), a week later
REMINDER_LOCAL_TIME = time(9, 0)  # office hours in the invoice's time zone, not midnight

ReminderKind = Literal["due_soon", "overdue"]


@dataclass(frozen=True)
class DueReminder:
    """One reminder of an open invoice: ``days`` before (due_soon) or after (overdue) its due
    date, sent ``at`` (an instant)."""

    kind: ReminderKind
    days: int
    at: datetime


def reminded_of_due_date(method: PaymentMethod, status: str) -> bool:
    """Only an open pay-by-invoice invoice is reminded (R21): card and PayPal are charged at
    issue and a failed charge has its own mails and R37 retries; a paid or credited (cancelled
    by a credit note, R39) invoice is not."""
    return method == "invoice" and status == "issued"


def due_reminders(due: date, time_zone: str) -> list[DueReminder]:
    """The reminders of an invoice due on ``due`` (the whole local day, R31), in date order:
    7 days before, then 1 and 7 days after, each at 09:00 local time."""

    def on(day: date) -> datetime:
        return local_time_on(day, REMINDER_LOCAL_TIME, time_zone)

    soon = [
        DueReminder("due_soon", DUE_SOON_DAYS_BEFORE, on(due - timedelta(DUE_SOON_DAYS_BEFORE)))
    ]
    late = [DueReminder("overdue", n, on(due + timedelta(days=n))) for n in OVERDUE_DAYS_AFTER]
    return soon + late


def next_due_reminder(due: date, time_zone: str, after: datetime) -> DueReminder | None:
    """The first reminder later than ``after`` (the issue, or the reminder just sent). An invoice
    issued less than 7 days before its due date (R34: no more credit, due the day it is issued)
    gets no "due soon" mail, its "overdue" ones only."""
    return next((r for r in due_reminders(due, time_zone) if r.at > after), None)


LAPSED_ON_UNPAID_INVOICE = "invoice_unpaid"  # lifecycle's StageChanged reason (R31)


def cancelled_on_unpaid_credit(reason: str | None) -> bool:
    """R34: a cancellation that followed an unpaid invoice (through Expired and Suspended, or at
    once for a no-grace offering, R36) makes the account prepay."""
    return reason == LAPSED_ON_UNPAID_INVOICE


def charged_at_issue(method: PaymentMethod) -> bool:
    return method != "invoice"  # R21, R25


def next_charge_attempt_at(first_failed_at: datetime, failed_attempt: int) -> datetime | None:
    """R37: a failed charge is retried 1, 3, 7 and 14 days after the first failure, whatever it
    pays for [ours: the order's, an installment's and a co-term's too, so a declined first
    purchase is not left unpaid with nobody trying again (issue 11)].

    ``failed_attempt`` 1 is the charge at issue; attempts 2-5 are the retries."""
    if failed_attempt > len(CHARGE_RETRY_DAYS):
        return None
    return first_failed_at + timedelta(days=CHARGE_RETRY_DAYS[failed_attempt - 1])


def invoice_payers(payer_emails: list[str]) -> list[str]:
    """R7: at most five payer addresses on an invoice (in a stable order)."""
    return sorted(set(payer_emails))[:MAX_PAYERS_ON_INVOICE]


def po_editable(status: str) -> bool:
    """R22: PO number, notes and PO document may change until the invoice is paid."""
    return status == "issued"


def invoice_number(series: str, sequence: int) -> str:
    return f"{series}-{sequence:07d}"


@dataclass(frozen=True)
class VatSummary:
    rate: Decimal
    net_amount: Decimal
    vat_amount: Decimal


def vat_summary(lines: list[InvoiceLine]) -> list[VatSummary]:
    """R18: VAT shown per rate, each the sum of its lines (so it adds up to the total)."""
    by_rate: dict[Decimal, tuple[Decimal, Decimal]] = {}
    for line in lines:
        net, vat = by_rate.get(line.vat_rate.normalize(), (Decimal(0), Decimal(0)))
        by_rate[line.vat_rate.normalize()] = (net + line.net_amount, vat + line.vat_amount)
    return [VatSummary(rate, net, vat) for rate, (net, vat) in sorted(by_rate.items())]


# --- R17, R15, R19: what is billed and charged ---------------------------------------------------


def invoiced_when_ordered(trial: bool) -> bool:
    """R17: a trial is not invoiced (nor charged) until it converts."""
    return not trial


def quoted_unit_price(lines: list[PricedLine], offering: str, term: Term) -> Decimal | None:
    """R16: the unit price the customer accepted in a partner's quote (the order's one line);
    None for a direct order, which invoicing prices at the applied rate (R19)."""
    if not lines:
        return None
    if len(lines) != 1 or (lines[0].offering, lines[0].term) != (offering, term):
        raise ValueError("an order carries at most one priced line, of its own offering and term")
    return lines[0].unit_price


# --- R39: what a refund credits and pays back ----------------------------------------------------


def refund_amount(invoice_status: str, gross_total: Decimal, currency: str) -> Decimal:
    """R39: a paid invoice is paid back in full; an unpaid one is cancelled, nothing paid back."""
    return round_money(gross_total, currency) if invoice_status == "paid" else Decimal(0)


def refunded_through_gateway(invoice_status: str, method: PaymentMethod) -> bool:
    """R39: card and PayPal payments go back through their gateway; a bank transfer is paid
    back by the finance team."""
    return invoice_status == "paid" and method != "invoice"


def refund_settles(
    invoice_status: str, approved_at: datetime, time_zone: str, method: PaymentMethod
) -> date | None:
    """R39: when the money is expected back; None when nothing is paid back."""
    if invoice_status != "paid":
        return None
    return refund_settlement_date(approved_at, time_zone, method)


def document_totals(lines: list[InvoiceLine]) -> tuple[Decimal, Decimal, Decimal]:
    """(net, VAT, gross) of a document: sums of its rounded lines."""
    net = sum((line.net_amount for line in lines), Decimal(0))
    vat = sum((line.vat_amount for line in lines), Decimal(0))
    return net, vat, net + vat


# --- R18: what the invoice says ------------------------------------------------------------------


def exemption_note(tax_exempt_reason: str | None) -> str | None:
    """R18: a tax-exempt invoice says why no VAT is charged."""
    return f"VAT exemption: {tax_exempt_reason}" if tax_exempt_reason else None


# --- R22: purchase-order details -----------------------------------------------------------------


@dataclass(frozen=True)
class PurchaseOrder:
    """R22: what the buyer attached to an invoice (or to the coming renewal's)."""

    po_number: str | None = None
    notes: str | None = None
    document: bytes | None = None
    file_name: str | None = None
    mime_type: str | None = None


def changed_purchase_order(
    current: PurchaseOrder, change: PurchaseOrder, given: set[str]
) -> PurchaseOrder:
    """R22: the fields given replace what is stored (null clears); the others stay."""
    return PurchaseOrder(
        po_number=change.po_number if "po_number" in given else current.po_number,
        notes=change.notes if "notes" in given else current.notes,
        document=change.document if "po_document" in given else current.document,
        file_name=change.file_name if "po_document" in given else current.file_name,
        mime_type=change.mime_type if "po_document" in given else current.mime_type,
    )


def require_po_editable(status: str, invoice_number: str) -> None:
    if not po_editable(status):
        raise Conflict(
            "invoice-not-editable",
            "The invoice can no longer be changed",
            f"Invoice {invoice_number} is {status}; a PO number, notes and a PO document may be "
            "given only before it is paid (R22).",
            rule="R22",
        )


# --- bank transfers -------------------------------------------------------------------------------


def require_bank_payment_matches(
    status: str, invoice_number: str, gross_total: Decimal, currency: str, amount: Decimal
) -> Decimal:
    """An open invoice, paid in full: returns the amount due."""
    if status != "issued":
        raise Conflict(
            "invoice-not-open", "The invoice is not open", f"Invoice {invoice_number} is {status}."
        )
    due = round_money(gross_total, currency)
    if amount != due:
        raise Invalid(
            "amount-mismatch",
            "The amount is not the invoice's total",
            f"Invoice {invoice_number} is {currency} {due}.",
            expected=str(due),
        )
    return due


# --- R8: who may read and change -----------------------------------------------------------------

INVOICE_READERS = frozenset({"buyer", "payer"})  # R8: admins who are not the buyer get 403
PO_EDITORS = frozenset({"buyer", "payer"})  # R22: whoever settles the invoice may add its PO
RENEWAL_EDITORS = frozenset({"buyer"})  # R8: renewal data is the buyer's; payers see invoices


def require_operator(kind: str) -> None:
    if kind != "operator":
        raise Forbidden("operator-required", "Operators only", "Use an operator token.")


# --- saved payment methods and paying an invoice (R2, R8, issue 11) ------------------------------

PAYMENT_METHOD_OWNERS = frozenset({"buyer"})  # R2: payment methods are the buyer's
INVOICE_PAYERS = frozenset({"buyer", "payer"})  # the seed's "klikk på Betal": who settles it


class PaymentDeclined(DomainError):
    """The gateway declined a payment the caller asked for now (402): nothing was paid."""

    status = 402


def declined(reason: str) -> PaymentDeclined:
    return PaymentDeclined(
        "payment-declined",
        "The payment was declined",
        f"The gateway declined the charge ({reason}); nothing was paid. Try another method.",
        reason=reason,
    )


def renews_with(chosen_id: object | None, method_id: object, method_is_default: bool) -> bool:
    """[ours] a subscription renews with the saved method chosen for it, or, when none was
    chosen, with the account's default (and with its order's token when there is neither)."""
    return chosen_id == method_id or (chosen_id is None and method_is_default)


def require_removable(label: str, renewing: int) -> None:
    """[ours] a method a live subscription renews with is not removed (409): silently falling
    back to another card would charge what the buyer did not choose. Choose another method for
    the subscription, or make another one the default, first."""
    if renewing:
        raise Conflict(
            "payment-method-in-use",
            "The payment method is in use",
            f"{renewing} subscription(s) renew with {label}: choose another method for them, or"
            " make another method the default, first.",
            rule="R2",
            subscriptions=renewing,
        )


def require_payable(status: str, invoice_number: str) -> None:
    if status == "paid":
        raise Conflict("invoice-already-paid", "Invoice already paid", f"{invoice_number} is paid.")
    if status != "issued":
        raise Conflict(
            "invoice-not-payable", "Invoice not payable", f"{invoice_number} is {status}."
        )


def require_saved_method_allowed(roles: set[str]) -> None:
    """[ours] a payer pays with a one-off token: the saved methods are the buyer's (R2)."""
    if "buyer" in roles:
        return
    raise Forbidden(
        "saved-methods-buyer-only",
        "Saved methods are the buyer's",
        "Pay with a one-off card or PayPal token: saved payment methods are the buyer's (R2).",
        rule="R2",
    )
