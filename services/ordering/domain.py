"""Ordering's rules, with no I/O: who may do what, roles, payment methods, changes and refunds.

Every refusal is a ``shared.errors`` kind carrying its slug and, where one applies, its rule id;
the HTTP door turns it into a problem document. Local dates and windows are computed with the
one calendar (``shared.time.calendar``, R23).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from functools import cache
from typing import Literal
from zoneinfo import available_timezones

from shared.contracts import PaymentMethod, PricedLine, Term
from shared.errors import Conflict, Forbidden, Invalid, invalid_field
from shared.time.calendar import add_local_days, local_date, zone

from .catalogue import Catalogue as Catalogue
from .catalogue import Offering as Offering
from .catalogue import Price as Price
from .catalogue import catalogue as catalogue
from .catalogue import check_offering as check_offering
from .catalogue import price as price
from .roles import PAYER_LIMIT as PAYER_LIMIT
from .roles import Roles as Roles
from .roles import add_payer as add_payer
from .roles import appoint_secondary_admin as appoint_secondary_admin
from .roles import change_buyer as change_buyer
from .roles import first_roles as first_roles
from .roles import remove_payer as remove_payer
from .roles import remove_secondary_admin as remove_secondary_admin
from .roles import roles_from_rows as roles_from_rows
from .roles import snapshot as snapshot
from .roles import transfer_primary_admin as transfer_primary_admin
from .roles import user_of_account as user_of_account

CARD_LIMIT_USD = Decimal("25000")  # R15 [public]
# R17 [ours]: a trial is a look at the product, not a free term: at most 5 seats (its length, 30
# days whatever the term ordered, is lifecycle's, which dates every term).
TRIAL_MAX_SEATS = 5
RENEWAL_WINDOW_DAYS = 90  # R26, R29: local calendar days, as lifecycle counts them
LATE_RENEWAL_DAYS: dict[str, int] = {"monthly": 30, "annual": 45, "three_year": 45}  # R27
REFUND_DAYS: dict[str, int] = {"monthly": 15, "annual": 30, "three_year": 30}  # R38
SWITCH_CUTOFF = date(2024, 9, 16)  # R29: bought or renewed *after* this date (seed: "etter")
# R14 (seed: "Fra og med 16. september 2024"): from this local date on, a renewal may be switched
# to pay-by-invoice by the buyer, only with another subscription already paid by invoice.
INVOICE_SWITCH_FROM = date(2024, 9, 16)
QUOTE_VALIDITY = timedelta(days=30)  # [ours] when the partner names no date
QUOTE_MAX_VALIDITY = timedelta(days=90)  # [ours]
MAX_SEATS = 10_000  # [ours] a sanity bound on one order line

# --- accounts ---------------------------------------------------------------------------------


def check_account_fields(country: str, currency: str, time_zone: str) -> None:
    cat = catalogue()
    if country not in cat.countries:
        raise invalid_field("country", f"Billing country {country!r} is not served.")
    if currency not in cat.currencies:
        raise invalid_field("currency", f"Currency {currency!r} is not offered.")
    if time_zone not in _time_zones():
        raise invalid_field("time_zone", f"{time_zone!r} is not an IANA time zone.")


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


def check_test_clocks_enabled(test_clocks_enabled: bool) -> None:
    """A new account follows a test clock only where test clocks are enabled (DESIGN.md)."""
    if not test_clocks_enabled:
        raise Invalid(
            "test-clocks-disabled",
            "Test clocks are disabled",
            "Set PLATFORM_TEST_CLOCKS_ENABLED=true on every service to use test clocks.",
            errors=[{"field": "test_clock_id", "message": "test clocks are disabled"}],
        )


def check_operator_attaches_test_clock(caller_kind: str) -> None:
    """Only an operator attaches an account to a test clock."""
    if caller_kind != "operator":
        raise Forbidden(
            "operator-only",
            "Operators only",
            "Only an operator attaches an account to a test clock.",
        )


def test_clock_time(now: datetime | None) -> datetime:
    """The time of the test clock a new account follows; it must be known here already."""
    if now is None:
        raise Conflict(
            "test-clock-unknown",
            "Test clock not known (yet)",
            "Create the clock on lifecycle and wait until it is ready, then try again.",
            errors=[{"field": "test_clock_id", "message": "unknown test clock"}],
        )
    return now


def check_new_user(existing_user: object | None) -> None:
    """R4: one user per e-mail address in an account."""
    if existing_user is not None:
        raise Conflict(
            "user-exists", "User exists", "A user with that e-mail already exists.", rule="R4"
        )


# --- who may do what -------------------------------------------------------------------------


def check_actor(held: set[str], allowed: set[str], what: str, rule: str) -> None:
    """Operators read everything but act in a customer's name only where ``allowed`` says so."""
    if held & allowed:
        return
    raise Forbidden(
        f"{'-or-'.join(sorted(a.replace('_', '-') for a in allowed))}-only",
        "Your role does not allow this",
        f"Only the {' or '.join(sorted(allowed))} may {what} ({rule}).",
        rule=rule,
        required_roles=sorted(allowed),
    )


def check_partner(caller_kind: str) -> None:
    """R16: quotes are issued by partners."""
    if caller_kind != "partner":
        raise Forbidden(
            "partner-only", "Partners only", "Quotes are issued by partners (R16).", rule="R16"
        )


def partner_sees_quote(partner_id: uuid.UUID, issued_by: uuid.UUID) -> bool:
    """[ours] a partner reads only the quotes it issued (a stranger's quote is not found)."""
    return partner_id == issued_by


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
        raise Invalid(
            "prepayment-required",
            "Pay by card or PayPal",
            "A subscription of this account was cancelled on an unpaid invoice: later orders are"
            " paid up front by card or PayPal (R34).",
            rule="R34",
        )
    if method == "invoice":
        if via_partner_quote or has_invoice_subscription:
            return
        raise Invalid(
            "pay-by-invoice-not-allowed",
            "Pay by invoice is not available",
            "Pay by invoice needs a partner quote or an existing subscription paid by invoice"
            " (R14).",
            rule="R14",
        )
    if usd_value is not None and usd_value > CARD_LIMIT_USD:
        raise Invalid(
            "card-limit-exceeded",
            "Too large for card or PayPal",
            f"Purchases above USD {CARD_LIMIT_USD:,} cannot be paid by card or PayPal (R15);"
            " pay by invoice through a partner quote.",
            usd_value=str(usd_value),
            limit_usd=str(CARD_LIMIT_USD),
            rule="R15",
        )


def check_renewal_switch_to_invoice(
    today: date, *, has_other_invoice_subscription: bool, prepay_only: bool
) -> None:
    """R14 for a renewal (the seed's "Endre til en annen betalingsmåte"): from 2024-09-16 (the
    buyer's local date, inclusive) a renewal may be switched to pay-by-invoice only when the
    account already has ANOTHER live subscription paid by invoice; otherwise, and before that
    date, it is renewed through a partner quote. R34: an account that must prepay never is."""
    check_payment_method(
        "invoice", via_partner_quote=True, has_invoice_subscription=True, prepay_only=prepay_only
    )
    if today >= INVOICE_SWITCH_FROM and has_other_invoice_subscription:
        return
    reason = (
        "Before 2024-09-16 a renewal is switched to pay-by-invoice"
        if today < INVOICE_SWITCH_FROM
        else "This account has no other subscription paid by invoice, so this renewal is paid"
    )
    raise Invalid(
        "pay-by-invoice-not-allowed",
        "Pay by invoice is not available for this renewal",
        f"{reason} through a partner quote: ask your partner for a renewal quote and choose"
        " pay by invoice there (R14).",
        rule="R14",
        renew_via="partner-quote",
    )


def check_order_payment(
    method: PaymentMethod,
    *,
    trial: bool,
    has_invoice_subscription: bool,
    usd_value: Decimal,
    prepay_only: bool,
) -> None:
    """A direct order: R14, R15 and R34 apply, except to a trial, which is not charged (they
    apply when it converts, R17)."""
    if trial:
        return
    check_payment_method(
        method,
        via_partner_quote=False,
        has_invoice_subscription=has_invoice_subscription,
        usd_value=usd_value,
        prepay_only=prepay_only,
    )


def quoted_line(offering: str, term: Term, seats: int, net_amount: Decimal) -> PricedLine:
    """R16: the quote's line as the customer accepts it; invoicing bills it as it is (a quote's
    net is ``unit x seats`` exactly, ``catalogue.price``)."""
    return PricedLine(
        offering=offering,
        term=term,
        quantity=seats,
        unit_price=net_amount / seats,
        net_amount=net_amount,
    )


def order_number(sequence_value: int) -> str:
    return f"ORD-{sequence_value:08d}"


def quote_number(sequence_value: int) -> str:
    return f"Q-{sequence_value:08d}"


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
        raise invalid_field(
            "valid_until",
            f"valid_until must be between {today} and {today + QUOTE_MAX_VALIDITY}.",
        )
    return requested


def check_quote_acceptable(
    valid_until: date,
    accepted: bool,
    now: datetime,
    time_zone: str,
    superseded_by: uuid.UUID | None = None,
) -> None:
    """R16: a quote is accepted once, while it is valid (its last day included); R27 [ours]: a
    renewal quote replaced by a later one for the same subscription is not accepted."""
    if superseded_by is not None and not accepted:
        raise Conflict(
            "quote-superseded",
            "The quote was replaced",
            f"The partner issued a new renewal quote ({superseded_by}) for this subscription;"
            " accept that one (R27).",
            superseded_by=str(superseded_by),
            rule="R27",
        )
    if accepted:
        raise Conflict(
            "quote-already-accepted",
            "Quote already accepted",
            "A quote is accepted once.",
            rule="R16",
        )
    if local_date(now, time_zone) > valid_until:
        raise Invalid(
            "quote-expired",
            "The quote has expired",
            f"The quote was valid until {valid_until}.",
            rule="R16",
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
    renewal_charge_failed: bool = False  # R37: its renewal invoice is open


LAPSED_ON_UNPAID_INVOICE = "invoice_unpaid"  # lifecycle's StageChanged reason (R31)
LAPSED_ON_FAILED_CHARGE = "payment_failed"  # lifecycle's StageChanged reason (R37)


def renewal_charge_failed(to_stage: str, reason: str | None) -> bool | None:
    """R37: whether the subscription lapsed because its renewal charge was declined (so its
    renewal invoice is open and retried), remembered until it is active again; None: unchanged."""
    if to_stage == "expired" and reason == LAPSED_ON_FAILED_CHARGE:
        return True
    if to_stage in ("active", "cancelled"):
        return False
    return None


def lapsed_unpaid(to_stage: str, reason: str | None) -> bool | None:
    """R34: whether a subscription lapsed on an unpaid invoice, remembered until it is active
    again (False) or cancelled (the account then prepays); None: unchanged."""
    if to_stage in ("expired", "cancelled") and reason == LAPSED_ON_UNPAID_INVOICE:
        return True  # R36: a no-grace offering goes from Active straight to Cancelled
    if to_stage == "active":
        return False
    return None


def check_changeable(sub: Subscription) -> None:
    """R34: Cancelled is final (a refunded subscription is cancelled at once, R39)."""
    if sub.stage == "cancelled" or sub.refunded_at is not None:
        raise Conflict(
            "subscription-cancelled",
            "The subscription is cancelled",
            "A cancelled subscription cannot be changed or renewed; buy a new one (R34).",
            rule="R34",
        )


def renews_at(sub: Subscription) -> datetime:
    """The dates come from lifecycle's SubscriptionActivated; until then nothing is dated."""
    if sub.renews_at is None:
        raise Conflict(
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
        raise Invalid(
            "term-change-too-late",
            "Too late to change the term",
            "The renewal date has passed; renew first (R28).",
            rule="R28",
        )
    if new_term is not None:
        if new_term == sub.term:
            raise invalid_field("new_term", f"The subscription already has the {new_term} term.")
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
        raise invalid_field("new_offering", f"The subscription already is {new_offering!r}.")
    check_offering(new_offering, sub.term, field="new_offering")
    if local_date(sub.purchased_at, sub.time_zone) <= SWITCH_CUTOFF:
        raise Invalid(
            "product-switch-not-eligible",
            "This subscription cannot switch product",
            "Only subscriptions bought or renewed after 2024-09-16 can switch product (R29).",
            rule="R29",
        )
    opens, _ = renewal_window(sub, at)
    if not opens <= now < at:
        raise Invalid(
            "product-switch-outside-window",
            "Outside the renewal window",
            f"A product switch is possible only in the 90 days before the renewal date"
            f" (from {_local_bound(opens, sub.time_zone)} until {_local_bound(at, sub.time_zone)},"
            f" {sub.time_zone}) (R29).",
            window_opens_at=opens.isoformat(),
            renews_at=at.isoformat(),
            rule="R29",
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
    raise Invalid(
        "renewal-window-closed",
        "Renewal is not possible now",
        f"A renewal can be bought from 90 days before the renewal date until"
        f" {LATE_RENEWAL_DAYS[sub.term]} days after it (R26, R27).",
        window_opens_at=opens.isoformat(),
        window_closes_at=closes.isoformat(),
        rule="R27",
    )


def renewal_quote_kind(
    sub: Subscription, renews_as: str, offering: str, now: datetime
) -> tuple[Literal["manual", "late"], datetime]:
    """R27 [ours, issue 11]: a partner quotes the renewal of a subscription inside the renewal
    window (R26: from 90 days before the renewal date) or the late window after it (R27: 45 days
    annual/three-year, 30 monthly); never a Cancelled one (R34). The quote renews the same
    product (``renews_as``: a pending product switch applied, R29); its term and seats are the
    partner's to quote. Also refused while the renewal's own invoice is open after a declined
    charge (R37): the quote would invoice that renewal twice."""
    kind = renewal_kind(sub, now)
    if sub.trial:
        raise Conflict(
            "trial-not-converted",
            "Convert the trial first",
            "A trial is converted in place (R17), not renewed.",
            rule="R17",
        )
    if offering != renews_as:
        raise invalid_field(
            "offering",
            f"A renewal quote renews {renews_as!r} (the product it renews as; a product switch"
            " is the buyer's, R29).",
        )
    check_renewal_not_invoiced(sub)
    return kind, renews_at(sub)


def check_renewal_not_invoiced(sub: Subscription) -> None:
    """R37 [ours]: a renewal already invoiced, whose charge was declined, is paid (the open
    invoice, with another method), not bought again through a quote."""
    if sub.renewal_charge_failed:
        raise Conflict(
            "renewal-invoice-open",
            "The renewal is already invoiced",
            "This renewal was invoiced and its charge was declined; pay the open renewal invoice"
            " instead (R37).",
            rule="R37",
        )


def check_quote_renews_current_term(quoted: datetime | None, current: datetime | None) -> None:
    """R27: a renewal quote renews the renewal date it was issued for; renewed since (the
    auto-renewal paid, a direct renewal), it renews nothing more."""
    if quoted != current:
        raise Conflict(
            "quote-outdated",
            "The subscription was renewed since",
            "The renewal this quote was issued for has happened; ask the partner for a new"
            " quote (R27).",
            rule="R27",
        )


def renewed_as(
    sub: Subscription, pending_offering: str | None, pending_term: Term | None
) -> tuple[str, Term]:
    """R28, R29: a pending term change or product switch applies from the renewal it renews."""
    return pending_offering or sub.offering, pending_term or sub.term


def total_seats(current: int, added: int) -> int:
    """R30: added licences join the subscription; [ours] at most ``MAX_SEATS`` in all."""
    total = current + added
    if total > MAX_SEATS:
        raise invalid_field("seats", f"At most {MAX_SEATS} seats a subscription.")
    return total


def check_renewal_not_requested(already_requested: bool) -> None:
    """R27: one renewal request per renewal date."""
    if already_requested:
        raise Conflict(
            "renewal-already-requested",
            "Renewal already requested",
            "This renewal date already has a renewal request.",
            rule="R27",
        )


def coterm_period(sub: Subscription, now: datetime) -> tuple[datetime, datetime]:
    """R30: added licences end with the subscription: pro rata from now to its renewal."""
    check_changeable(sub)
    if sub.trial:
        raise Conflict(
            "trial-not-converted",
            "Convert the trial first",
            "Trials take no extra seats.",
            rule="R30",
        )
    at = renews_at(sub)
    if now >= at:
        raise Invalid(
            "coterm-period-over",
            "The term has ended",
            "Seats are co-termed with the current term, which has ended; renew first (R30).",
            rule="R30",
        )
    return now, at


def check_trial_size(seats: int) -> None:
    """R17 [ours]: a trial has at most ``TRIAL_MAX_SEATS`` seats; more are bought, not tried."""
    if seats > TRIAL_MAX_SEATS:
        raise Invalid(
            "trial-too-large",
            "Too many seats for a trial",
            f"A trial has at most {TRIAL_MAX_SEATS} seats (R17); buy the subscription instead.",
            limit=TRIAL_MAX_SEATS,
            rule="R17",
            errors=[{"field": "seats", "message": f"at most {TRIAL_MAX_SEATS} for a trial"}],
        )


def check_convertible(sub: Subscription, now: datetime) -> None:
    """R17: a trial converts in place, once, while it runs: its end is lifecycle's
    (``SubscriptionActivated``: 30 days [ours]); after it, a new purchase."""
    check_changeable(sub)
    if not sub.trial:
        raise Conflict(
            "not-a-trial", "Not a trial", "Only a trial can be converted (R17).", rule="R17"
        )
    if sub.renews_at is not None and now >= sub.renews_at:
        raise Conflict(
            "trial-ended",
            "The trial has ended",
            "The trial has ended and cannot be converted; buy a new subscription (R17).",
            rule="R17",
        )


def check_refundable(
    sub: Subscription, now: datetime
) -> tuple[Literal["order", "renewal"], datetime]:
    """R38: direct purchases only; monthly within 15 days, annual and three-year within 30 days
    of the purchase or renewal; never for non-refundable products."""
    check_changeable(sub)
    offering = catalogue().offerings.get(sub.offering)
    if sub.channel != "direct":
        raise Invalid(
            "refund-partner-purchase",
            "Not refundable",
            "Only direct purchases can be refunded; ask your partner (R38).",
            rule="R38",
        )
    if offering is None or not offering.refundable:
        raise Invalid(
            "refund-product-not-refundable",
            "Not refundable",
            "This product is never refundable (R38).",
            rule="R38",
        )
    if sub.trial:
        raise Invalid(
            "refund-nothing-paid", "Not refundable", "A trial has not been paid.", rule="R38"
        )
    days = REFUND_DAYS[sub.term]
    # Local calendar days, like every other window (R23), so DST never moves the deadline.
    if now > add_local_days(sub.purchased_at, days, sub.time_zone):
        raise Invalid(
            "refund-window-closed",
            "Too late for a refund",
            f"A {sub.term} subscription can be refunded within {days} days of its purchase or"
            " renewal (R38).",
            purchased_at=sub.purchased_at.isoformat(),
            rule="R38",
        )
    return sub.purchase_kind, sub.purchased_at
