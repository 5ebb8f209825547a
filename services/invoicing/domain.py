"""Invoicing's rules, with no I/O: prices, VAT, rounding and due dates.

Rounding rule (one for the whole service): every amount is rounded to its currency's minor unit
(ISO 4217) with ROUND_HALF_UP, once per line for the unit price, the line's net amount and the
line's VAT; totals are sums of rounded lines, so an invoice always equals the sum of its lines.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from shared.contracts import InvoiceLine, PaymentMethod, Term

PRICE_BOOK_FILE = Path(__file__).parent / "price_book.json"
PAY_BY_INVOICE_NET_DAYS = 30  # R21
TERM_NAMES = {"monthly": "1 month", "annual": "1 year", "three_year": "3 years"}


@cache
def price_book() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(PRICE_BOOK_FILE.read_text())
    return data


def round_money(amount: Decimal, currency: str) -> Decimal:
    places = price_book()["minor_units"][currency]
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def vat_rate(country: str, tax_exempt_reason: str | None) -> Decimal:
    """R18: VAT by billing country; a tax-exempt account pays none."""
    if tax_exempt_reason:
        return Decimal(0)
    rates: dict[str, str] = price_book()["vat_rates"]
    if country not in rates:
        raise ValueError(f"no VAT rate for billing country {country}")
    return Decimal(rates[country])


def exchange_rate(currency: str) -> Decimal:
    return Decimal(price_book()["initial_rates_from_base"][currency])


def unit_price(offering: str, term: Term, currency: str) -> Decimal:
    base = Decimal(price_book()["prices_per_seat"][offering][term])
    return round_money(base * exchange_rate(currency), currency)


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


def subscription_line(
    *, offering: str, term: Term, seats: int, currency: str, vat_percent: Decimal
) -> InvoiceLine:
    price = unit_price(offering, term, currency)
    net = round_money(price * seats, currency)
    vat = round_money(net * vat_percent / 100, currency)
    return InvoiceLine(
        description=f"{offering} subscription, {TERM_NAMES[term]}, {seats} seat(s)",
        quantity=seats,
        unit_price=price,
        net_amount=net,
        vat_rate=vat_percent,
        vat_amount=vat,
    )


def draft_for_order(
    *,
    offering: str,
    term: Term,
    seats: int,
    currency: str,
    country: str,
    tax_exempt_reason: str | None,
) -> DraftInvoice:
    line = subscription_line(
        offering=offering,
        term=term,
        seats=seats,
        currency=currency,
        vat_percent=vat_rate(country, tax_exempt_reason),
    )
    return DraftInvoice(currency, [line], exchange_rate(currency), tax_exempt_reason)


def due_date(issued_at: datetime, time_zone: str, method: PaymentMethod) -> date:
    """R21: pay-by-invoice is due 30 days after issue; card and PayPal are charged at issue."""
    issue_day = issued_at.astimezone(ZoneInfo(time_zone)).date()
    if method == "invoice":
        return issue_day + timedelta(days=PAY_BY_INVOICE_NET_DAYS)
    return issue_day


def invoice_number(series: str, sequence: int) -> str:
    return f"{series}-{sequence:07d}"
