"""The product catalogue (catalogue.json): what is sold, with which terms, at which list price."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path

from shared.contracts import Term
from shared.errors import invalid_field

CATALOGUE_FILE = Path(__file__).parent / "catalogue.json"


@dataclass(frozen=True)
class Offering:
    code: str
    name: str
    terms: tuple[Term, ...]
    refundable: bool  # R38: consulting, platform subscriptions, cloud credits are not


@dataclass(frozen=True)
class Catalogue:
    countries: frozenset[str]
    currencies: frozenset[str]
    offerings: dict[str, Offering]
    prices_per_seat_usd: dict[str, dict[str, Decimal]]
    rates_from_usd: dict[str, Decimal]


@cache
def catalogue() -> Catalogue:
    """The product catalogue is data (catalogue.json), not code."""
    raw = json.loads(CATALOGUE_FILE.read_text())
    return Catalogue(
        countries=frozenset(raw["countries"]),
        currencies=frozenset(raw["currencies"]),
        offerings={
            code: Offering(code, o["name"], tuple(o["terms"]), bool(o["refundable"]))
            for code, o in raw["offerings"].items()
        },
        prices_per_seat_usd={
            code: {term: Decimal(price) for term, price in prices.items()}
            for code, prices in raw["prices_per_seat_usd"].items()
        },
        rates_from_usd={c: Decimal(r) for c, r in raw["indicative_rates_from_usd"].items()},
    )


def check_offering(code: str, term: Term, field: str = "offering") -> Offering:
    offering = catalogue().offerings.get(code)
    if offering is None:
        raise invalid_field(field, f"Unknown offering {code!r}.")
    if term not in offering.terms:
        raise invalid_field("term", f"{offering.name} is not sold with the {term} term.")
    return offering


@dataclass(frozen=True)
class Price:
    """A priced order line: the amount in the account's currency and its USD value (R15)."""

    net_amount: Decimal
    currency: str
    usd_value: Decimal
    unit_price: Decimal = Decimal(0)


def price(offering: str, term: Term, seats: int, currency: str) -> Price:
    """The unit price is rounded once and the line is ``unit x seats`` exactly, as invoicing
    prices a line, so a quote's lines are billed to the cent (R16)."""
    cat = catalogue()
    usd_per_seat = cat.prices_per_seat_usd[offering][term]
    rate = cat.rates_from_usd[currency]
    cents = Decimal("0.01")
    unit = (usd_per_seat * rate).quantize(cents, ROUND_HALF_UP)
    return Price(
        net_amount=unit * seats,
        currency=currency,
        usd_value=(usd_per_seat * seats).quantize(cents, ROUND_HALF_UP),
        unit_price=unit,
    )
