"""Ordering's rules, with no I/O: roles, the catalogue, payment methods, changes and refunds."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from shared.contracts import PaymentMethod, Person, RolesChanged, Term
from shared.problems import Problem

CATALOGUE_FILE = Path(__file__).parent / "catalogue.json"

PAYER_LIMIT = 5  # R6
CARD_LIMIT_USD = Decimal("25000")  # R15 [public]
RENEWAL_WINDOW_DAYS = 90  # R26, R29: local calendar days, as lifecycle counts them
LATE_RENEWAL_DAYS: dict[str, int] = {"monthly": 30, "annual": 45, "three_year": 45}  # R27
REFUND_DAYS: dict[str, int] = {"monthly": 15, "annual": 30, "three_year": 30}  # R38
SWITCH_CUTOFF = date(2024, 9, 16)  # R29: bought or renewed *after* this date (seed: "etter")
QUOTE_VALIDITY = timedelta(days=30)  # [ours] when the partner names no date
QUOTE_MAX_VALIDITY = timedelta(days=90)  # [ours]
MAX_SEATS = 10_000  # [ours] a sanity bound on one order line

# --- catalogue ------------------------------------------------------------------------------


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


def check_offering(code: str, term: Term, field: str = "offering") -> Offering:
    offering = catalogue().offerings.get(code)
    if offering is None:
        raise invalid(field, f"Unknown offering {code!r}.")
    if term not in offering.terms:
        raise invalid("term", f"{offering.name} is not sold with the {term} term.")
    return offering


@dataclass(frozen=True)
class Price:
    """A priced order line: the amount in the account's currency and its USD value (R15)."""

    net_amount: Decimal
    currency: str
    usd_value: Decimal


def price(offering: str, term: Term, seats: int, currency: str) -> Price:
    cat = catalogue()
    usd = cat.prices_per_seat_usd[offering][term] * seats
    rate = cat.rates_from_usd[currency]
    cents = Decimal("0.01")
    return Price(
        net_amount=(usd * rate).quantize(cents, ROUND_HALF_UP),
        currency=currency,
        usd_value=usd.quantize(cents, ROUND_HALF_UP),
    )


# --- who may do what -------------------------------------------------------------------------


def check_actor(held: set[str], allowed: set[str], what: str, rule: str) -> None:
    """Operators read everything but act in a customer's name only where ``allowed`` says so."""
    if held & allowed:
        return
    raise Problem(
        403,
        f"{'-or-'.join(sorted(a.replace('_', '-') for a in allowed))}-only",
        "Your role does not allow this",
        f"Only the {' or '.join(sorted(allowed))} may {what} ({rule}).",
        required_roles=sorted(allowed),
    )


# --- roles (R1-R6) -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Roles:
    buyer: uuid.UUID
    primary_admin: uuid.UUID
    secondary_admins: tuple[uuid.UUID, ...] = ()
    payers: tuple[uuid.UUID, ...] = ()


def first_roles(buyer: uuid.UUID) -> Roles:
    """R1: the user who opens the account and places its first order is buyer and primary admin."""
    return Roles(buyer=buyer, primary_admin=buyer)


def roles_from_rows(rows: Iterable[tuple[uuid.UUID, Iterable[str]]]) -> Roles:
    buyer = primary = None
    secondary: list[uuid.UUID] = []
    payers: list[uuid.UUID] = []
    for user_id, held in rows:
        held = set(held)
        if "buyer" in held:
            buyer = user_id
        if "primary_admin" in held:
            primary = user_id
        if "secondary_admin" in held:
            secondary.append(user_id)
        if "payer" in held:
            payers.append(user_id)
    if buyer is None or primary is None:
        raise ValueError("an account always has a buyer and a primary admin")
    return Roles(buyer, primary, tuple(sorted(secondary)), tuple(sorted(payers)))


def transfer_primary_admin(roles: Roles, to: uuid.UUID) -> Roles:
    """R3: the previous primary admin (the buyer, at first) becomes a secondary admin."""
    if to == roles.primary_admin:
        return roles
    secondary = [u for u in roles.secondary_admins if u != to] + [roles.primary_admin]
    return replace(roles, primary_admin=to, secondary_admins=tuple(sorted(set(secondary))))


def appoint_secondary_admin(roles: Roles, user: uuid.UUID) -> Roles:
    """R4: appointed by the primary admin; the primary admin is not also a secondary one."""
    if user == roles.primary_admin or user in roles.secondary_admins:
        return roles
    return replace(roles, secondary_admins=tuple(sorted({*roles.secondary_admins, user})))


def remove_secondary_admin(roles: Roles, user: uuid.UUID) -> Roles:
    """R4."""
    if user not in roles.secondary_admins:
        raise Problem(404, "not-found", "Not found", "That user is not a secondary admin.")
    return replace(roles, secondary_admins=tuple(u for u in roles.secondary_admins if u != user))


def change_buyer(roles: Roles, user: uuid.UUID) -> Roles:
    """R5: support's action; the previous buyer keeps any admin role it holds."""
    return replace(roles, buyer=user)


def add_payer(roles: Roles, user: uuid.UUID) -> Roles:
    """R6: at most five payers; a sixth is refused and nothing changes."""
    if user in roles.payers:
        return roles
    if len(roles.payers) >= PAYER_LIMIT:
        raise Problem(
            422,
            "payer-limit",
            "Too many payers",
            f"An account may have at most {PAYER_LIMIT} payers (R6); remove one first.",
            limit=PAYER_LIMIT,
        )
    return replace(roles, payers=tuple(sorted({*roles.payers, user})))


def remove_payer(roles: Roles, user: uuid.UUID) -> Roles:
    if user not in roles.payers:
        raise Problem(404, "not-found", "Not found", "That user is not a payer of the account.")
    return replace(roles, payers=tuple(u for u in roles.payers if u != user))


def snapshot(roles: Roles, people: Mapping[uuid.UUID, Person]) -> RolesChanged:
    """The full RolesChanged snapshot (never a delta)."""
    return RolesChanged(
        buyer=people[roles.buyer],
        primary_admin=people[roles.primary_admin],
        secondary_admins=[people[u] for u in roles.secondary_admins],
        payers=[people[u] for u in roles.payers],
    )


# --- buying (R14-R17) ----------------------------------------------------------------------------


def check_payment_method(
    method: PaymentMethod,
    *,
    via_partner_quote: bool,
    has_invoice_subscription: bool,
    usd_value: Decimal | None = None,
    prepay_only: bool = False,
) -> None:
    """R14: pay by invoice only through a partner quote or with an existing invoice subscription.
    R15: above USD 25,000 (or its equivalent), not by card or PayPal. R34: an account whose
    subscription was cancelled on an unpaid invoice prepays (card/PayPal) from then on."""
    if method == "invoice" and prepay_only:
        raise Problem(
            422,
            "prepayment-required",
            "Pay by card or PayPal",
            "A subscription of this account was cancelled on an unpaid invoice: later orders are"
            " paid up front by card or PayPal (R34).",
        )
    if method == "invoice":
        if via_partner_quote or has_invoice_subscription:
            return
        raise Problem(
            422,
            "pay-by-invoice-not-allowed",
            "Pay by invoice is not available",
            "Pay by invoice needs a partner quote or an existing subscription paid by invoice"
            " (R14).",
        )
    if usd_value is not None and usd_value > CARD_LIMIT_USD:
        raise Problem(
            422,
            "card-limit-exceeded",
            "Too large for card or PayPal",
            f"Purchases above USD {CARD_LIMIT_USD:,} cannot be paid by card or PayPal (R15);"
            " pay by invoice through a partner quote.",
            usd_value=str(usd_value),
            limit_usd=str(CARD_LIMIT_USD),
        )


def order_number(sequence_value: int) -> str:
    return f"ORD-{sequence_value:08d}"


def quote_number(sequence_value: int) -> str:
    return f"Q-{sequence_value:08d}"


def local_date(at: datetime, time_zone: str) -> date:
    return at.astimezone(zone(time_zone)).date()


def add_local_days(instant: datetime, days: int, time_zone: str) -> datetime:
    """``days`` calendar days from ``instant`` at the same local time of day (R23: dates are
    computed in the purchase's time zone), so a window opened "90 days before" the renewal
    opens at the local midnight lifecycle announces, across a DST change too. A local time that
    does not exist (a DST jump) becomes the first instant after it."""
    tz = zone(time_zone)
    naive = instant.astimezone(tz).replace(tzinfo=None) + timedelta(days=days)
    candidate = naive.replace(tzinfo=tz)
    round_trip = candidate.astimezone(UTC).astimezone(tz)
    if round_trip.replace(tzinfo=None) != naive:  # skipped by a DST jump
        return round_trip.astimezone(UTC)
    return candidate.astimezone(UTC)


def renewal_window(sub: Subscription, at: datetime) -> tuple[datetime, datetime]:
    """R26, R27: when a renewal can be bought: from 90 local days before the renewal instant
    ``at`` until 45 (annual, three-year) or 30 (monthly) local days after it, the end of
    lifecycle's Expired + Suspended."""
    return (
        add_local_days(at, -RENEWAL_WINDOW_DAYS, sub.time_zone),
        add_local_days(at, LATE_RENEWAL_DAYS[sub.term], sub.time_zone),
    )


def _local_bound(day: datetime, time_zone: str) -> str:
    """A window bound as the local date and time a customer reads."""
    local = day.astimezone(zone(time_zone))
    return local.date().isoformat() if local.time() == time(0) else local.isoformat()


def quote_valid_until(requested: date | None, now: datetime, time_zone: str) -> date:
    """[ours] a quote is valid 30 days unless the partner says otherwise, at most 90 days."""
    today = local_date(now, time_zone)
    if requested is None:
        return today + QUOTE_VALIDITY
    if not today <= requested <= today + QUOTE_MAX_VALIDITY:
        raise invalid(
            "valid_until",
            f"valid_until must be between {today} and {today + QUOTE_MAX_VALIDITY}.",
        )
    return requested


def check_quote_acceptable(
    valid_until: date, accepted: bool, now: datetime, time_zone: str
) -> None:
    """R16: a quote is accepted once, while it is valid (its last day included)."""
    if accepted:
        raise Problem(
            409, "quote-already-accepted", "Quote already accepted", "A quote is accepted once."
        )
    if local_date(now, time_zone) > valid_until:
        raise Problem(
            422,
            "quote-expired",
            "The quote has expired",
            f"The quote was valid until {valid_until}.",
        )


# --- the subscription and its changes (R17, R24, R27-R30, R34, R38) ------------------------

Stage = Literal["pending", "active", "expired", "suspended", "cancelled"]


@dataclass(frozen=True)
class Subscription:
    """Ordering's projection of a subscription (dates and stage come from lifecycle)."""

    id: uuid.UUID
    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    channel: Literal["direct", "partner"]
    auto_renew: bool
    trial: bool
    stage: Stage
    time_zone: str
    purchased_at: datetime  # the last purchase, conversion or renewal
    purchase_kind: Literal["order", "renewal"]
    renews_at: datetime | None = None
    expires_at: datetime | None = None
    refunded_at: datetime | None = None


def check_changeable(sub: Subscription) -> None:
    """R34: Cancelled is final (a refunded subscription is cancelled at once, R39)."""
    if sub.stage == "cancelled" or sub.refunded_at is not None:
        raise Problem(
            409,
            "subscription-cancelled",
            "The subscription is cancelled",
            "A cancelled subscription cannot be changed or renewed; buy a new one (R34).",
        )


def renews_at(sub: Subscription) -> datetime:
    """The dates come from lifecycle's SubscriptionActivated; until then nothing is dated."""
    if sub.renews_at is None:
        raise Problem(
            409,
            "subscription-not-active-yet",
            "The subscription is not active yet",
            "The subscription's dates are not known yet; try again shortly.",
        )
    return sub.renews_at


def check_auto_renew_change(sub: Subscription) -> None:
    """R24: auto-renew off is how a subscription is cancelled; R34: not once cancelled."""
    check_changeable(sub)


def term_change_effective_at(sub: Subscription, new_term: Term | None, now: datetime) -> datetime:
    """R28: takes effect at the next renewal and may be changed (or withdrawn) until then."""
    check_changeable(sub)
    at = renews_at(sub)
    if now >= at:
        raise Problem(
            422,
            "term-change-too-late",
            "Too late to change the term",
            "The renewal date has passed; renew first (R28).",
        )
    if new_term is not None:
        if new_term == sub.term:
            raise invalid("new_term", f"The subscription already has the {new_term} term.")
        check_offering(sub.offering, new_term)
    return at


def product_switch_effective_at(
    sub: Subscription, new_offering: str | None, now: datetime
) -> datetime:
    """R29: only inside the 90 days before the renewal date, only for subscriptions bought or
    renewed after 2024-09-16; takes effect on the renewal date."""
    check_changeable(sub)
    at = renews_at(sub)
    if new_offering is None:
        return at  # a withdrawal is always allowed before the renewal
    if new_offering == sub.offering:
        raise invalid("new_offering", f"The subscription already is {new_offering!r}.")
    check_offering(new_offering, sub.term, field="new_offering")
    if local_date(sub.purchased_at, sub.time_zone) <= SWITCH_CUTOFF:
        raise Problem(
            422,
            "product-switch-not-eligible",
            "This subscription cannot switch product",
            "Only subscriptions bought or renewed after 2024-09-16 can switch product (R29).",
        )
    opens, _ = renewal_window(sub, at)
    if not opens <= now < at:
        raise Problem(
            422,
            "product-switch-outside-window",
            "Outside the renewal window",
            f"A product switch is possible only in the 90 days before the renewal date"
            f" (from {_local_bound(opens, sub.time_zone)} until {_local_bound(at, sub.time_zone)},"
            f" {sub.time_zone}) (R29).",
            window_opens_at=opens.isoformat(),
            renews_at=at.isoformat(),
        )
    return at


def renewal_kind(sub: Subscription, now: datetime) -> Literal["manual", "late"]:
    """R26: a renewal can be bought from 90 days before the renewal date; R27: after it, for
    45 days (annual, three-year) or 30 days (monthly)."""
    check_changeable(sub)
    at = renews_at(sub)
    opens, closes = renewal_window(sub, at)
    if opens <= now < at:
        return "manual"
    if at <= now < closes:
        return "late"
    raise Problem(
        422,
        "renewal-window-closed",
        "Renewal is not possible now",
        f"A renewal can be bought from 90 days before the renewal date until"
        f" {LATE_RENEWAL_DAYS[sub.term]} days after it (R26, R27).",
        window_opens_at=opens.isoformat(),
        window_closes_at=closes.isoformat(),
    )


def coterm_period(sub: Subscription, now: datetime) -> tuple[datetime, datetime]:
    """R30: added licences end with the subscription: pro rata from now to its renewal."""
    check_changeable(sub)
    if sub.trial:
        raise Problem(
            409, "trial-not-converted", "Convert the trial first", "Trials take no extra seats."
        )
    at = renews_at(sub)
    if now >= at:
        raise Problem(
            422,
            "coterm-period-over",
            "The term has ended",
            "Seats are co-termed with the current term, which has ended; renew first (R30).",
        )
    return now, at


def check_convertible(sub: Subscription) -> None:
    """R17: a trial converts in place, once."""
    check_changeable(sub)
    if not sub.trial:
        raise Problem(409, "not-a-trial", "Not a trial", "Only a trial can be converted (R17).")


def check_refundable(
    sub: Subscription, now: datetime
) -> tuple[Literal["order", "renewal"], datetime]:
    """R38: direct purchases only; monthly within 15 days, annual and three-year within 30 days
    of the purchase or renewal; never for non-refundable products."""
    check_changeable(sub)
    offering = catalogue().offerings.get(sub.offering)
    if sub.channel != "direct":
        raise Problem(
            422,
            "refund-partner-purchase",
            "Not refundable",
            "Only direct purchases can be refunded; ask your partner (R38).",
        )
    if offering is None or not offering.refundable:
        raise Problem(
            422,
            "refund-product-not-refundable",
            "Not refundable",
            "This product is never refundable (R38).",
        )
    if sub.trial:
        raise Problem(422, "refund-nothing-paid", "Not refundable", "A trial has not been paid.")
    days = REFUND_DAYS[sub.term]
    # Local calendar days, like every other window (R23), so DST never moves the deadline.
    if now > add_local_days(sub.purchased_at, days, sub.time_zone):
        raise Problem(
            422,
            "refund-window-closed",
            "Too late for a refund",
            f"A {sub.term} subscription can be refunded within {days} days of its purchase or"
            " renewal (R38).",
            purchased_at=sub.purchased_at.isoformat(),
        )
    return sub.purchase_kind, sub.purchased_at
