"""Ordering's rules, with no I/O: the catalogue, who may order, which payment methods apply."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.contracts import PaymentMethod, Person, RolesChanged, Term
from shared.problems import Problem

CATALOGUE_FILE = Path(__file__).parent / "catalogue.json"


@dataclass(frozen=True)
class Offering:
    code: str
    name: str
    terms: tuple[Term, ...]
    refundable: bool


@dataclass(frozen=True)
class Catalogue:
    countries: frozenset[str]
    currencies: frozenset[str]
    offerings: dict[str, Offering]


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
    )


def invalid(field: str, detail: str) -> Problem:
    return Problem(
        422,
        "validation",
        "The request is not valid",
        detail,
        errors=[{"field": field, "message": detail}],
    )


def check_account_fields(country: str, currency: str, time_zone: str) -> None:
    cat = catalogue()
    if country not in cat.countries:
        raise invalid("country", f"Billing country {country!r} is not served.")
    if currency not in cat.currencies:
        raise invalid("currency", f"Currency {currency!r} is not offered.")
    if time_zone not in _time_zones():
        raise invalid("time_zone", f"{time_zone!r} is not an IANA time zone.")


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise invalid("time_zone", f"{name!r} is not an IANA time zone.") from None


def check_offering(code: str, term: Term) -> Offering:
    offering = catalogue().offerings.get(code)
    if offering is None:
        raise invalid("offering", f"Unknown offering {code!r}.")
    if term not in offering.terms:
        raise invalid("term", f"{offering.name} is not sold with the {term} term.")
    return offering


def check_may_order(roles: set[str]) -> None:
    """R2: buying, billing and payment methods are the buyer's."""
    if "buyer" not in roles:
        raise Problem(
            403,
            "buyer-only",
            "Only the buyer may order",
            "Orders are placed by the account's buyer (R2).",
        )


def check_payment_method(
    method: PaymentMethod, *, via_partner_quote: bool, has_invoice_subscription: bool
) -> None:
    """R14: pay by invoice only through a partner quote or with an existing invoice subscription."""
    if method != "invoice":
        return
    if via_partner_quote or has_invoice_subscription:
        return
    raise Problem(
        422,
        "pay-by-invoice-not-allowed",
        "Pay by invoice is not available",
        "Pay by invoice needs a partner quote or an existing subscription paid by invoice (R14).",
    )


def order_number(sequence_value: int) -> str:
    return f"ORD-{sequence_value:08d}"


def first_roles_snapshot(buyer: Person) -> RolesChanged:
    """R1: the user who opens the account and places its first order is buyer and primary admin."""
    return RolesChanged(buyer=buyer, primary_admin=buyer)
