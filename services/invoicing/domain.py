"""Invoicing's rules, with no I/O: prices, VAT, rounding, exchange rates, installments, due dates,
charge retries and refund settlement.

Rounding rule (one for the whole service): every amount is rounded to its currency's minor unit
(ISO 4217) with ROUND_HALF_UP, once per line for the unit price, the line's net amount and the
line's VAT; totals are sums of rounded lines, so an invoice always equals the sum of its lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any, Literal

from shared.contracts import Channel, InvoiceLine, InvoicePurpose, PaymentMethod, Term
from shared.time.calendar import add_months, local_date, local_midnight

PRICE_BOOK_FILE = Path(__file__).parent / "price_book.json"
VAT_RATES_FILE = Path(__file__).parent / "vat_rates.json"
PAY_BY_INVOICE_NET_DAYS = 30  # R21
TERM_NAMES = {"monthly": "1 month", "annual": "1 year", "three_year": "3 years"}
TERM_MONTHS: dict[Term, int] = {"monthly": 1, "annual": 12, "three_year": 36}
MAX_PAYERS_ON_INVOICE = 5  # R7
INSTALLMENTS_FROM = date(2024, 9, 16)  # R20
INSTALLMENT_COUNT = 3  # R20: at the transaction, first and second anniversary
RENEWAL_RETRY_DAYS = (1, 3, 7, 14)  # R37 [ours]: days after the first failed renewal charge
# R39: business days until a refund reaches the payer. Card: the public "5-7 business days",
# taken at its upper end so the date is a promise we keep [ours]; PayPal and bank [ours].
REFUND_SETTLEMENT_BUSINESS_DAYS: dict[PaymentMethod, int] = {"card": 7, "paypal": 3, "invoice": 10}
# R19: how far the applied rate may move from the previous applied rate.
DIRECT_BAND_PER_MONTH = Decimal("0.01")
PARTNER_BAND_PER_QUARTER = Decimal("0.03")
RATE_PLACES = Decimal("0.00000001")  # applied rates are kept to 8 decimals (numeric(20,8))


@cache
def price_book() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PRICE_BOOK_FILE.read_text())
    return data


@cache
def vat_table() -> dict[str, Decimal]:
    rates: dict[str, str] = json.loads(VAT_RATES_FILE.read_text())["rates"]
    return {country: Decimal(rate) for country, rate in rates.items()}


def minor_units(currency: str) -> int:
    places: int = price_book()["minor_units"][currency]
    return places


def round_money(amount: Decimal, currency: str) -> Decimal:
    return amount.quantize(Decimal(1).scaleb(-minor_units(currency)), rounding=ROUND_HALF_UP)


def one_minor_unit(currency: str) -> Decimal:
    return Decimal(1).scaleb(-minor_units(currency))


def vat_rate(country: str, tax_exempt_reason: str | None) -> Decimal:
    """R18: VAT by billing country; a tax-exempt account pays none (and the invoice says why)."""
    if tax_exempt_reason:
        return Decimal(0)
    rates = vat_table()
    if country not in rates:
        raise ValueError(f"no VAT rate for billing country {country}")
    return rates[country]


def initial_rate(currency: str) -> Decimal:
    """R19: the applied rate before any recomputation is the price book's."""
    return Decimal(price_book()["initial_rates_from_base"][currency])


def exchange_rate(currency: str) -> Decimal:
    return initial_rate(currency)


def seller() -> dict[str, str]:
    data: dict[str, str] = price_book()["seller"]
    return data


def base_price(offering: str, term: Term) -> Decimal:
    return Decimal(price_book()["prices_per_seat"][offering][term])


def unit_price(offering: str, term: Term, currency: str, rate: Decimal | None = None) -> Decimal:
    rate = exchange_rate(currency) if rate is None else rate
    return round_money(base_price(offering, term) * rate, currency)


@dataclass(frozen=True)
class DraftInvoice:
    currency: str
    lines: list[InvoiceLine]
    exchange_rate: Decimal
    tax_exempt_reason: str | None

    @property
    def net_total(self) -> Decimal:
        return sum((line.net_amount for line in self.lines), Decimal(0))

    @property
    def vat_total(self) -> Decimal:
        return sum((line.vat_amount for line in self.lines), Decimal(0))

    @property
    def gross_total(self) -> Decimal:
        return self.net_total + self.vat_total


def priced_line(
    *, description: str, quantity: int, unit: Decimal, currency: str, vat_percent: Decimal
) -> InvoiceLine:
    net = round_money(unit * quantity, currency)
    return InvoiceLine(
        description=description,
        quantity=quantity,
        unit_price=unit,
        net_amount=net,
        vat_rate=vat_percent,
        vat_amount=round_money(net * vat_percent / 100, currency),
    )


def subscription_line(
    *,
    offering: str,
    term: Term,
    seats: int,
    currency: str,
    vat_percent: Decimal,
    rate: Decimal | None = None,
    installment: int | None = None,
) -> InvoiceLine:
    """One line for a term; a three-year installment (R20) is a third of the three-year price,
    the last one taking the rounding remainder, so the three add up to the price exactly."""
    price = unit_price(offering, term, currency, rate)
    description = f"{offering} subscription, {TERM_NAMES[term]}, {seats} seat(s)"
    if installment is not None:
        third = round_money(price / INSTALLMENT_COUNT, currency)
        last = price - third * (INSTALLMENT_COUNT - 1)
        price = last if installment == INSTALLMENT_COUNT else third
        description += f", installment {installment} of {INSTALLMENT_COUNT}"
    return priced_line(
        description=description,
        quantity=seats,
        unit=price,
        currency=currency,
        vat_percent=vat_percent,
    )


def draft_for_order(
    *,
    offering: str,
    term: Term,
    seats: int,
    currency: str,
    country: str,
    tax_exempt_reason: str | None,
    rate: Decimal | None = None,
    installment: int | None = None,
) -> DraftInvoice:
    rate = exchange_rate(currency) if rate is None else rate
    line = subscription_line(
        offering=offering,
        term=term,
        seats=seats,
        currency=currency,
        vat_percent=vat_rate(country, tax_exempt_reason),
        rate=rate,
        installment=installment,
    )
    return DraftInvoice(currency, [line], rate, tax_exempt_reason)


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


def pays_in_installments(term: Term, transaction_at: datetime, time_zone: str) -> bool:
    """R20: three-year terms bought or renewed on or after 2024-09-16 pay yearly."""
    return term == "three_year" and local_date(transaction_at, time_zone) >= INSTALLMENTS_FROM


def installment_due_dates(transaction_at: datetime, time_zone: str) -> list[datetime]:
    """R20: installments 2 and 3, at local midnight of the first and second anniversary (as
    instants, in UTC)."""
    start = local_date(transaction_at, time_zone)
    return [local_midnight(add_months(start, 12 * years), time_zone) for years in (1, 2)]


# --- R21, R25, R37: due dates and charges -----------------------------------------------------


def due_date(issued_at: datetime, time_zone: str, method: PaymentMethod) -> date:
    """R21: pay-by-invoice is due 30 days after issue; card and PayPal are charged at issue."""
    issue_day = local_date(issued_at, time_zone)
    if method == "invoice":
        return issue_day + timedelta(days=PAY_BY_INVOICE_NET_DAYS)
    return issue_day


def charged_at_issue(method: PaymentMethod) -> bool:
    return method != "invoice"  # R21, R25


def next_charge_attempt_at(
    purpose: InvoicePurpose, first_failed_at: datetime, failed_attempt: int
) -> datetime | None:
    """R37: a failed renewal charge is retried 1, 3, 7 and 14 days after the first failure.

    ``failed_attempt`` 1 is the charge at issue; attempts 2-5 are the retries. Other purposes
    are not retried (the buyer pays another way)."""
    if purpose != "renewal" or failed_attempt > len(RENEWAL_RETRY_DAYS):
        return None
    return first_failed_at + timedelta(days=RENEWAL_RETRY_DAYS[failed_attempt - 1])


def in_usd(amount: Decimal, rate_from_usd: Decimal) -> Decimal:
    return amount / rate_from_usd


def above_card_limit(gross_total: Decimal, rate_from_usd: Decimal) -> bool:
    """R15: a quote above USD 25,000 (or its equivalent) is not charged to a card or PayPal."""
    return in_usd(gross_total, rate_from_usd) > Decimal(price_book()["card_limit_usd"])


def invoice_payers(payer_emails: list[str]) -> list[str]:
    """R7: at most five payer addresses on an invoice (in a stable order)."""
    return sorted(set(payer_emails))[:MAX_PAYERS_ON_INVOICE]


def po_editable(status: str) -> bool:
    """R22: PO number, notes and PO document may change until the invoice is paid."""
    return status == "issued"


def invoice_number(series: str, sequence: int) -> str:
    return f"{series}-{sequence:07d}"


# --- R19: exchange rates -----------------------------------------------------------------------
#
# Schedule [ours, exact]: market rates are fed at any time (operator API or CSV). At 00:00 UTC on
# the first day of each calendar quarter (1 Jan, 1 Apr, 1 Jul, 1 Oct) the applied rates are
# recomputed from the latest market rate dated before that instant:
# - partner: one new rate for the quarter, the market rate clamped to +-3 % of the previous
#   partner rate, effective from the quarter's first day;
# - direct: three new rates, effective on the first day of each month of the quarter, each the
#   market rate clamped to +-1 % of the month before, so the direct rate walks toward the market
#   by at most 1 % a month.
# The first previous rate is the price book's. Each invoice records the rate it used.

RateChannel = Literal["direct", "partner"]


def clamp_rate(market: Decimal, previous: Decimal, band: Decimal) -> Decimal:
    low, high = previous * (1 - band), previous * (1 + band)
    return min(max(market, low), high).quantize(RATE_PLACES, rounding=ROUND_HALF_UP)


def within_band(rate: Decimal, previous: Decimal, band: Decimal) -> bool:
    slack = RATE_PLACES  # the 8-decimal rounding of a clamped rate
    return previous * (1 - band) - slack <= rate <= previous * (1 + band) + slack


def quarter_start(day: date) -> date:
    return date(day.year, 3 * ((day.month - 1) // 3) + 1, 1)


def next_quarter_start(at: datetime) -> datetime:
    start = quarter_start(at.astimezone(UTC).date())
    return datetime.combine(add_months(start, 3), time(0), tzinfo=UTC)


def is_quarter_start(day: date) -> bool:
    return day.day == 1 and day.month in (1, 4, 7, 10)


@dataclass(frozen=True)
class AppliedRate:
    channel: Channel
    effective_from: datetime
    rate: Decimal
    previous_rate: Decimal
    market_rate: Decimal


def quarterly_rates(
    quarter: date, market: Decimal, previous_direct: Decimal, previous_partner: Decimal
) -> list[AppliedRate]:
    """R19: the applied rates a quarter brings (see the schedule above)."""
    if not is_quarter_start(quarter):
        raise ValueError(f"{quarter} is not the first day of a quarter")
    rates: list[AppliedRate] = []
    previous = previous_direct
    for month in range(3):
        starts = datetime.combine(add_months(quarter, month), time(0), tzinfo=UTC)
        rate = clamp_rate(market, previous, DIRECT_BAND_PER_MONTH)
        rates.append(AppliedRate("direct", starts, rate, previous, market))
        previous = rate
    starts = datetime.combine(quarter, time(0), tzinfo=UTC)
    partner = clamp_rate(market, previous_partner, PARTNER_BAND_PER_QUARTER)
    rates.append(AppliedRate("partner", starts, partner, previous_partner, market))
    return rates


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
