"""What an order costs and when its term ends, as the buyer is shown it (issue 11, preview), with
no I/O. Ordering prices every paid order it places, and invoicing bills the figures as they are
(services/ordering/README.md, "Decisions marked [ours]"):

- the unit price is the price book's at the R19 applied rate in force when the order is priced
  (invoicing's rate, from the projection of its ``ExchangeRateApplied``), or the quote's (R16);
- lines, VAT (R18: by billing country, or the exemption) and totals by ``shared.pricing``, the
  function invoicing prices renewals and installments with, so the first invoice is the figures
  shown to the cent, and a three-year term (R20) shows installment 1 and the whole term;
- the renewal instant (R23) by ``shared.time.calendar.term_renews_at``, the function lifecycle
  dates the term with; the expiry is the second before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal

from shared import pricing
from shared.contracts import InvoiceLine, OrderPrice, PricedLine, Term
from shared.time.calendar import local_date, term_renews_at

CHANNEL_RATE = "direct"  # R19: direct orders are priced at the direct channel's applied rate


@dataclass(frozen=True)
class Customer:
    """Who the price is for: what of the account decides it."""

    country: str
    currency: str
    tax_exempt_reason: str | None
    time_zone: str


@dataclass(frozen=True)
class TermDates:
    """R23: the first term's end in the account's time zone (lifecycle's dates, same function)."""

    renews_at: datetime
    expires_at: datetime
    time_zone: str

    @property
    def renewal_date(self) -> date:
        return local_date(self.renews_at, self.time_zone)

    @property
    def expiry_date(self) -> date:
        return local_date(self.expires_at, self.time_zone)


def term_dates(placed_at: datetime, term: Term, time_zone: str) -> TermDates:
    renews_at = term_renews_at(placed_at, term, time_zone)
    return TermDates(renews_at, renews_at - timedelta(seconds=1), time_zone)


@dataclass(frozen=True)
class PricedOrder:
    price: OrderPrice  # what the buyer is shown (preview, answer, mail)
    line: PricedLine  # what invoicing bills (OrderPlaced.priced_lines)


def price_order(
    *,
    offering: str,
    term: Term,
    seats: int,
    customer: Customer,
    placed_at: datetime,
    rate_in_force: Decimal | None,
    quoted_net: Decimal | None = None,
) -> PricedOrder:
    """R16, R18-R20: a direct order at the applied rate (``rate_in_force``: the projection's,
    None before any quarter was computed), or a quote's net as quoted (``quoted_net``)."""
    rate = pricing.applied_rate(customer.currency, rate_in_force)
    term_price = pricing.price_term(
        offering=offering,
        term=term,
        seats=seats,
        currency=customer.currency,
        country=customer.country,
        tax_exempt_reason=customer.tax_exempt_reason,
        rate=rate,
        placed_at=placed_at,
        time_zone=customer.time_zone,
        quoted_unit_price=None if quoted_net is None else quoted_net / seats,
    )
    first = term_price.first_invoice
    term_line = InvoiceLine(
        description=pricing.line_description(offering, term, seats),
        quantity=seats,
        unit_price=term_price.unit_price,
        net_amount=term_price.term_net,
        vat_rate=first.lines[0].vat_rate,
        vat_amount=term_price.term_vat,
    )
    price = OrderPrice(
        currency=customer.currency,
        exchange_rate=None if quoted_net is not None else rate,
        lines=[term_line],
        vat_rate=first.lines[0].vat_rate,
        tax_exempt_reason=customer.tax_exempt_reason,
        net_total=term_price.term_net,
        vat_total=term_price.term_vat,
        gross_total=term_price.term_gross,
        installments=len(term_price.installments),
        first_invoice_net=first.net_total,
        first_invoice_vat=first.vat_total,
        first_invoice_gross=first.gross_total,
    )
    line = PricedLine(
        offering=offering,
        term=term,
        quantity=seats,
        unit_price=term_price.unit_price,
        net_amount=term_price.unit_price * seats,
    )
    return PricedOrder(price, line)
