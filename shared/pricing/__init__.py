"""The price of a subscription term, with no I/O: the price book (per-seat list prices in the
base currency), the R19 applied rate, the rounding rule, R18 VAT by billing country and the
R20 installment split.

Two services price with it, each what it decides (services/ordering/README.md, "Decisions marked
[ours]"): ordering prices every order it places (the preview, the order's answer and the figures
on ``OrderPlaced``, which invoicing bills as they are), invoicing what it bills of itself
(renewals, installments, co-terms, trial conversions). One function, so a renewal is priced as
the order was; the data (price_book.json, vat_rates.json) sits beside it.

Rounding rule (one for the platform): every amount is rounded to its currency's minor unit
(ISO 4217) with ROUND_HALF_UP, once per line for the unit price, the line's net amount and the
line's VAT; totals are sums of rounded lines, so an invoice always equals the sum of its lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any

from shared.contracts import InvoiceLine, Term
from shared.time.calendar import local_date

PRICE_BOOK_FILE = Path(__file__).parent / "price_book.json"
VAT_RATES_FILE = Path(__file__).parent / "vat_rates.json"
TERM_NAMES = {"monthly": "1 month", "annual": "1 year", "three_year": "3 years"}
INSTALLMENTS_FROM = date(2024, 9, 16)  # R20
INSTALLMENT_COUNT = 3  # R20: at the transaction, first and second anniversary


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


def is_base_currency(currency: str) -> bool:
    base: str = price_book()["base_currency"]
    return currency == base


def applied_rate(currency: str, in_force: Decimal | None) -> Decimal:
    """R19: the rate a price applies: 1 for the base currency, else the applied rate in force
    for its channel, else (no quarter computed yet) the price book's."""
    if is_base_currency(currency):
        return Decimal(1)
    return in_force if in_force is not None else initial_rate(currency)


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
    quoted_unit_price: Decimal | None = None,
) -> InvoiceLine:
    """One line for a term; a three-year installment (R20) is a third of the three-year price,
    the last one taking the rounding remainder, so the three add up to the price exactly.
    R16: a unit price already decided (a quote's, a placed order's) is billed as it is, never
    re-priced at ``rate``."""
    price = (
        unit_price(offering, term, currency, rate)
        if quoted_unit_price is None
        else round_money(quoted_unit_price, currency)
    )
    description = line_description(offering, term, seats)
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
    quoted_unit_price: Decimal | None = None,
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
        quoted_unit_price=quoted_unit_price,
    )
    return DraftInvoice(currency, [line], rate, tax_exempt_reason)


def pays_in_installments(term: Term, transaction_at: datetime, time_zone: str) -> bool:
    """R20: three-year terms bought or renewed on or after 2024-09-16 pay yearly."""
    return term == "three_year" and local_date(transaction_at, time_zone) >= INSTALLMENTS_FROM


# --- the price of an order: what the first invoice bills, and the whole term ----------------------


@dataclass(frozen=True)
class TermPrice:
    """An order's price: ``first_invoice`` is what invoicing issues when the order is placed
    (R20: installment 1 of 3 of a three-year term), ``installments`` every invoice of the term
    (one, or the three installments), whose sums are the whole term's figures."""

    unit_price: Decimal
    first_invoice: DraftInvoice
    installments: list[DraftInvoice]

    @property
    def term_net(self) -> Decimal:
        return sum((d.net_total for d in self.installments), Decimal(0))

    @property
    def term_vat(self) -> Decimal:
        return sum((d.vat_total for d in self.installments), Decimal(0))

    @property
    def term_gross(self) -> Decimal:
        return self.term_net + self.term_vat


def price_term(
    *,
    offering: str,
    term: Term,
    seats: int,
    currency: str,
    country: str,
    tax_exempt_reason: str | None,
    rate: Decimal,
    placed_at: datetime,
    time_zone: str,
    quoted_unit_price: Decimal | None = None,
) -> TermPrice:
    """R18-R20: the invoices a term bought at ``placed_at`` brings, at ``rate`` (or at the
    quoted unit price, R16), at today's VAT. Later installments are invoiced at the VAT in force
    on their day; the preview shows today's."""
    unit = (
        unit_price(offering, term, currency, rate)
        if quoted_unit_price is None
        else round_money(quoted_unit_price, currency)
    )
    numbers: list[int | None] = (
        list(range(1, INSTALLMENT_COUNT + 1))
        if pays_in_installments(term, placed_at, time_zone)
        else [None]
    )
    drafts = [
        draft_for_order(
            offering=offering,
            term=term,
            seats=seats,
            currency=currency,
            country=country,
            tax_exempt_reason=tax_exempt_reason,
            rate=rate,
            installment=number,
            quoted_unit_price=unit,
        )
        for number in numbers
    ]
    return TermPrice(unit_price=unit, first_invoice=drafts[0], installments=drafts)


# --- R18: who pays the VAT ------------------------------------------------------------------------

# Issue 15 [ours]: a Norwegian seller's service to an EU business with a VAT id is taxed where
# the buyer is, by the buyer (VAT Directive art. 196): no VAT on the invoice, which says so.
REVERSE_CHARGE = "Reverse charge"
EU_COUNTRIES = frozenset(
    "AT BE BG CY CZ DE DK EE ES FI FR GR HR HU IE IT LT LU LV MT NL PL PT RO SE SI SK".split()
)


def reverse_charged(country: str, vat_id: str | None) -> bool:
    return country in EU_COUNTRIES and bool(vat_id)


def tax_exemption(country: str, tax_exempt_reason: str | None, vat_id: str | None) -> str | None:
    """R18: why an account pays no VAT, if it does not: its own exemption, or the reverse charge
    of an EU business that gave its VAT id. Ordering prices orders and invoicing bills terms with
    this one answer, so the preview, the order and the invoice agree."""
    if tax_exempt_reason:
        return tax_exempt_reason
    if reverse_charged(country, vat_id):
        return REVERSE_CHARGE
    return None


def line_description(offering: str, term: Term, seats: int) -> str:
    """An invoice line in words (issue 15: products by name, never by code), stored in English
    on the invoice; documents and mails print the product in the reader's language."""
    names: dict[str, dict[str, str]] = price_book().get("offering_names", {})
    name = names.get(offering, {}).get("en", offering)
    return f"{name} subscription, {TERM_NAMES[term]}, {seats} seat(s)"
