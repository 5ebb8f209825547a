"""R19's rules: the applied exchange rates, recomputed each quarter from the market rates an
operator feeds, and the market rates as fed (API or CSV). No I/O.

Schedule [ours, exact]: market rates are fed at any time (operator API or CSV). At 00:00 UTC on
the first day of each calendar quarter (1 Jan, 1 Apr, 1 Jul, 1 Oct) the applied rates are
recomputed from the latest market rate dated before that instant:
- partner: one new rate for the quarter, the market rate clamped to +-3 % of the previous
  partner rate, effective from the quarter's first day;
- direct: three new rates, effective on the first day of each month of the quarter, each the
  market rate clamped to +-1 % of the month before, so the direct rate walks toward the market
  by at most 1 % a month.
The first previous rate is the price book's. Each invoice records the rate it used
(``domain.applied_rate``).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, Literal

from shared.contracts import Channel
from shared.errors import Invalid
from shared.time.calendar import add_months

from .domain import price_book

# R19: how far the applied rate may move from the previous applied rate.
DIRECT_BAND_PER_MONTH = Decimal("0.01")
PARTNER_BAND_PER_QUARTER = Decimal("0.03")
RATE_PLACES = Decimal("0.00000001")  # applied rates are kept to 8 decimals (numeric(20,8))


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
class MarketRate:
    currency: str
    rate: Decimal
    as_of: date


def known_currency(currency: str) -> str:
    if currency not in price_book()["initial_rates_from_base"]:
        raise Invalid(
            "unknown-currency",
            "Unknown currency",
            f"{currency} is not a currency of the price book.",
            rule="R19",
        )
    return currency


def require_quarter_start(day: date) -> date:
    if not is_quarter_start(day):
        raise Invalid(
            "not-a-quarter-start",
            "Not the first day of a quarter",
            "Applied rates change on 1 January, 1 April, 1 July and 1 October (R19).",
            rule="R19",
        )
    return day


def market_rates_from_csv(text: str) -> list[MarketRate]:
    """R19: a header ``currency,rate,as_of`` then one rate a line; any invalid line refuses the
    whole file (naming each line)."""
    reader = csv.DictReader(io.StringIO(text))
    try:
        return _rates_of(reader)
    except csv.Error as error:  # not CSV at all (a NUL byte, a broken quote): a 422, never a 500
        raise Invalid(
            "csv-invalid",
            "The file is not CSV",
            f"Line {reader.line_num}: {error}; nothing was stored.",
            errors=[{"line": reader.line_num, "message": str(error)}],
        ) from None


def _rates_of(reader: csv.DictReader[str]) -> list[MarketRate]:
    if reader.fieldnames is None or {"currency", "rate", "as_of"} - set(reader.fieldnames):
        raise Invalid(
            "csv-header", "CSV header missing", "The first line must be currency,rate,as_of."
        )
    rates: list[MarketRate] = []
    errors: list[dict[str, Any]] = []
    for number, record in enumerate(reader, start=2):
        try:
            rate = Decimal(record["rate"].strip())
            if rate <= 0:
                raise ValueError("rate must be positive")
            currency = known_currency(record["currency"].strip().upper())
            rates.append(MarketRate(currency, rate, date.fromisoformat(record["as_of"].strip())))
        except (InvalidOperation, ValueError, AttributeError, Invalid) as error:
            errors.append({"line": number, "message": str(error) or type(error).__name__})
    if errors or not rates:
        raise Invalid(
            "csv-invalid",
            "The CSV has invalid lines",
            f"{len(errors)} invalid line(s); nothing was stored." if errors else "No rates.",
            errors=errors,
        )
    return rates
