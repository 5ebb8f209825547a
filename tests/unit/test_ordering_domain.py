"""Ordering's pure rules (services/ordering/domain.py) and the development token command."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.ordering import domain
from services.ordering.domain import Roles, Subscription
from shared.config import Settings
from shared.errors import DomainError
from shared.problems import Problem
from shared.time.clock import FrozenClock

T0 = datetime(2025, 6, 10, 12, 0, tzinfo=UTC)
RENEWS = datetime(2026, 6, 9, 22, 0, tzinfo=UTC)  # 2026-06-10 00:00 Europe/Oslo


def sub(**changes: object) -> Subscription:
    base = Subscription(
        id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=2,
        payment_method="card",
        channel="direct",
        auto_renew=True,
        trial=False,
        stage="active",
        time_zone="Europe/Oslo",
        purchased_at=T0,
        purchase_kind="order",
        renews_at=RENEWS,
        expires_at=RENEWS - timedelta(seconds=1),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def slug(error: pytest.ExceptionInfo[DomainError]) -> str:
    return error.value.slug


# --- roles ---------------------------------------------------------------------------------


def test_r1_first_user_is_buyer_and_primary_admin() -> None:
    buyer = uuid.uuid4()
    assert domain.first_roles(buyer) == Roles(buyer=buyer, primary_admin=buyer)


def test_r3_buyer_handing_over_primary_admin_becomes_secondary_admin() -> None:
    buyer, admin = uuid.uuid4(), uuid.uuid4()
    roles = domain.transfer_primary_admin(domain.first_roles(buyer), admin)
    assert roles == Roles(buyer=buyer, primary_admin=admin, secondary_admins=(buyer,))
    assert domain.transfer_primary_admin(roles, admin) == roles  # no change, no snapshot


def test_r4_secondary_admins_are_appointed_and_removed() -> None:
    buyer, helper = uuid.uuid4(), uuid.uuid4()
    roles = domain.appoint_secondary_admin(domain.first_roles(buyer), helper)
    assert roles.secondary_admins == (helper,)
    assert domain.remove_secondary_admin(roles, helper).secondary_admins == ()
    with pytest.raises(DomainError) as missing:
        domain.remove_secondary_admin(roles, uuid.uuid4())
    assert missing.value.status == 404


# Proves R5 (../shared/DOMAIN.md).
def test_r5_changing_the_buyer_keeps_the_old_buyers_admin_role() -> None:
    old, new = uuid.uuid4(), uuid.uuid4()
    roles = domain.change_buyer(domain.first_roles(old), new)
    assert (roles.buyer, roles.primary_admin) == (new, old)


@given(st.lists(st.uuids(), max_size=12))
def test_r6_property_never_more_than_five_payers(candidates: list[uuid.UUID]) -> None:
    """R6: whatever the sequence of registrations, at most five payers; refusals change nothing."""
    roles = domain.first_roles(uuid.uuid4())
    for candidate in candidates:
        before = roles
        try:
            roles = domain.add_payer(roles, candidate)
        except DomainError as refused:
            assert refused.slug == "payer-limit" and refused.status == 422
            assert roles == before and len(roles.payers) == 5
        assert len(roles.payers) <= domain.PAYER_LIMIT
    assert len(roles.payers) == min(5, len(set(candidates)))


def test_r8_operators_and_members_without_the_role_are_refused_with_a_stable_type() -> None:
    with pytest.raises(DomainError) as refused:
        domain.check_actor({"operator"}, {"buyer"}, "place orders", "R2")
    assert (refused.value.status, slug(refused)) == (403, "buyer-only")
    domain.check_actor({"buyer", "secondary_admin"}, {"buyer"}, "place orders", "R2")


# --- buying ----------------------------------------------------------------------------------


def test_r14_pay_by_invoice_needs_a_partner_quote_or_an_invoice_subscription() -> None:
    with pytest.raises(DomainError) as refused:
        domain.check_payment_method(
            "invoice", via_partner_quote=False, has_invoice_subscription=False
        )
    assert slug(refused) == "pay-by-invoice-not-allowed"
    domain.check_payment_method("invoice", via_partner_quote=True, has_invoice_subscription=False)
    domain.check_payment_method("invoice", via_partner_quote=False, has_invoice_subscription=True)


def test_r15_above_usd_25000_not_by_card_or_paypal_but_by_invoice() -> None:
    over = Decimal("25000.01")
    for method in ("card", "paypal"):
        with pytest.raises(DomainError) as refused:
            domain.check_payment_method(
                method,
                via_partner_quote=True,
                has_invoice_subscription=False,
                usd_value=over,
            )
        assert slug(refused) == "card-limit-exceeded"
    domain.check_payment_method(
        "card", via_partner_quote=False, has_invoice_subscription=False, usd_value=Decimal(25000)
    )
    domain.check_payment_method(
        "invoice", via_partner_quote=True, has_invoice_subscription=False, usd_value=over
    )


def test_r15_a_quote_in_another_currency_is_judged_by_its_usd_equivalent() -> None:
    # 13 x 1975 = 25,675 USD: over the limit, whatever currency the quote is written in.
    price = domain.price("autocad", "annual", 13, "NOK")
    assert price.usd_value == Decimal("25675.00")
    assert price.net_amount == Decimal("277290.00")  # 25,675 x 10.80 (indicative rate)
    assert domain.price("autocad", "annual", 12, "EUR").usd_value == Decimal("23700.00")


def test_ordering_prices_are_the_invoicing_price_book() -> None:
    """The list ordering quotes from is the list invoicing bills from (same numbers, USD)."""
    book = json.loads((Path(__file__).parents[2] / "shared/pricing/price_book.json").read_text())
    ours = domain.catalogue().prices_per_seat_usd
    assert {o: {t: str(p) for t, p in terms.items()} for o, terms in ours.items()} == book[
        "prices_per_seat"
    ]
    assert set(domain.catalogue().offerings) == set(ours)


# Proves R16 (../shared/DOMAIN.md).
def test_r16_a_quote_is_accepted_once_and_only_while_valid() -> None:
    domain.check_quote_acceptable(date(2025, 6, 10), False, T0, "Europe/Oslo")
    with pytest.raises(DomainError) as expired:
        domain.check_quote_acceptable(date(2025, 6, 9), False, T0, "Europe/Oslo")
    assert slug(expired) == "quote-expired"
    with pytest.raises(DomainError) as twice:
        domain.check_quote_acceptable(date(2025, 7, 1), True, T0, "Europe/Oslo")
    assert slug(twice) == "quote-already-accepted"


def test_quote_validity_dates_out_of_range_name_the_field() -> None:
    assert domain.quote_valid_until(None, T0, "Europe/Oslo") == date(2025, 7, 10)
    for wrong in (date(2025, 6, 9), date(2025, 9, 9), date(1900, 1, 1)):
        with pytest.raises(DomainError) as refused:
            domain.quote_valid_until(wrong, T0, "Europe/Oslo")
        assert refused.value.extensions["errors"][0]["field"] == "valid_until"


def test_r17_only_a_trial_converts_and_only_once() -> None:
    domain.check_convertible(sub(trial=True), T0)
    with pytest.raises(DomainError) as refused:
        domain.check_convertible(sub(trial=False), T0)
    assert slug(refused) == "not-a-trial"


def test_r17_a_trial_converts_only_while_it_runs_and_has_at_most_five_seats() -> None:
    """Issue 11, defect 7: the trial's end (lifecycle's renews_at) closes conversion; more than
    5 seats is a purchase, not a trial."""
    trial = sub(trial=True, renews_at=T0 + timedelta(days=30))
    domain.check_convertible(trial, T0 + timedelta(days=30) - timedelta(seconds=1))
    with pytest.raises(DomainError) as ended:
        domain.check_convertible(trial, T0 + timedelta(days=30))
    assert (slug(ended), ended.value.rule) == ("trial-ended", "R17")
    domain.check_trial_size(domain.TRIAL_MAX_SEATS)
    with pytest.raises(DomainError) as large:
        domain.check_trial_size(domain.TRIAL_MAX_SEATS + 1)
    assert (slug(large), large.value.rule) == ("trial-too-large", "R17")
    assert large.value.extensions["errors"][0]["field"] == "seats"


def test_unknown_offering_or_term_names_the_field() -> None:
    with pytest.raises(DomainError) as unknown:
        domain.check_offering("photoshop", "annual")
    assert unknown.value.extensions["errors"][0]["field"] == "offering"
    with pytest.raises(DomainError) as wrong_term:
        domain.check_offering("docs", "monthly")
    assert wrong_term.value.extensions["errors"][0]["field"] == "term"


# --- changes ---------------------------------------------------------------------------------


def test_r24_r34_auto_renew_changes_until_cancelled() -> None:
    domain.check_auto_renew_change(sub())
    with pytest.raises(DomainError) as refused:
        domain.check_auto_renew_change(sub(stage="cancelled"))
    assert (refused.value.status, slug(refused)) == (409, "subscription-cancelled")


def test_r28_term_change_takes_effect_at_renewal_and_is_refused_after_it() -> None:
    assert domain.term_change_effective_at(sub(), "monthly", RENEWS - timedelta(days=1)) == RENEWS
    assert domain.term_change_effective_at(sub(), None, T0) == RENEWS  # a withdrawal
    with pytest.raises(DomainError) as late:
        domain.term_change_effective_at(sub(), "monthly", RENEWS)
    assert slug(late) == "term-change-too-late"
    with pytest.raises(DomainError) as undated:
        domain.term_change_effective_at(sub(renews_at=None), "monthly", T0)
    assert slug(undated) == "subscription-not-active-yet"


# 90 local days before 2026-06-10 00:00 Oslo: 2026-03-12 00:00 CET, across the DST change (R23).
WINDOW_OPENS = datetime(2026, 3, 11, 23, 0, tzinfo=UTC)


# Proves R29 (../shared/DOMAIN.md).
def test_r29_product_switch_only_inside_the_90_day_window() -> None:
    opens = WINDOW_OPENS
    assert domain.product_switch_effective_at(sub(), "revit", opens) == RENEWS
    assert domain.product_switch_effective_at(sub(), "revit", RENEWS - timedelta(seconds=1))
    for outside in (opens - timedelta(seconds=1), RENEWS):
        with pytest.raises(DomainError) as refused:
            domain.product_switch_effective_at(sub(), "revit", outside)
        assert slug(refused) == "product-switch-outside-window"


# Proves R29 (../shared/DOMAIN.md).
def test_r29_product_switch_only_if_bought_or_renewed_after_2024_09_16() -> None:
    inside = RENEWS - timedelta(days=10)
    # 2024-09-16 23:30 in Oslo is still the 16th: not "after" it.
    on_the_day = datetime(2024, 9, 16, 21, 30, tzinfo=UTC)
    with pytest.raises(DomainError) as refused:
        domain.product_switch_effective_at(sub(purchased_at=on_the_day), "revit", inside)
    assert slug(refused) == "product-switch-not-eligible"
    after = datetime(2024, 9, 16, 22, 30, tzinfo=UTC)  # 00:30 on the 17th in Oslo
    assert domain.product_switch_effective_at(sub(purchased_at=after), "revit", inside) == RENEWS
    with pytest.raises(DomainError) as same:
        domain.product_switch_effective_at(sub(), "autocad", inside)
    assert same.value.extensions["errors"][0]["field"] == "new_offering"


@pytest.mark.parametrize(
    ("term", "late_days"), [("annual", 45), ("three_year", 45), ("monthly", 30)]
)
def test_r26_r27_renewal_windows(term: str, late_days: int) -> None:
    s = sub(term=term)
    assert domain.renewal_kind(s, WINDOW_OPENS) == "manual"
    assert domain.renewal_kind(s, RENEWS) == "late"
    assert domain.renewal_kind(s, RENEWS + timedelta(days=late_days, seconds=-1)) == "late"
    for closed in (WINDOW_OPENS - timedelta(seconds=1), RENEWS + timedelta(days=late_days)):
        with pytest.raises(DomainError) as refused:
            domain.renewal_kind(s, closed)
        assert slug(refused) == "renewal-window-closed"
    with pytest.raises(DomainError) as cancelled:
        domain.renewal_kind(sub(term=term, stage="cancelled"), RENEWS)
    assert slug(cancelled) == "subscription-cancelled"  # R34


def test_r26_r29_windows_count_local_days_across_dst_changes() -> None:
    """The window opens at the local midnight lifecycle announces (RenewalWindowOpened), not
    90 x 24 hours before the renewal: 2031-01-10 00:00 CET opens 2030-10-12 00:00 CEST. The
    late window closes when lifecycle cancels: 45 local days after 2030-09-20 00:00 CEST is
    2030-11-04 00:00 CET, an hour later than 45 x 24 hours."""
    winter = sub(renews_at=datetime(2031, 1, 9, 23, 0, tzinfo=UTC))
    opens = datetime(2030, 10, 11, 22, 0, tzinfo=UTC)  # 2030-10-12 00:00 CEST
    assert domain.renewal_kind(winter, opens) == "manual"
    assert domain.product_switch_effective_at(winter, "revit", opens) == winter.renews_at
    with pytest.raises(DomainError) as before:
        domain.product_switch_effective_at(winter, "revit", opens - timedelta(seconds=1))
    assert slug(before) == "product-switch-outside-window"
    assert "from 2030-10-12 until 2031-01-10, Europe/Oslo" in str(before.value.detail)
    autumn = sub(renews_at=datetime(2030, 9, 19, 22, 0, tzinfo=UTC))
    closes = datetime(2030, 11, 3, 23, 0, tzinfo=UTC)  # 2030-11-04 00:00 CET
    assert domain.renewal_kind(autumn, closes - timedelta(seconds=1)) == "late"
    with pytest.raises(DomainError) as closed:
        domain.renewal_kind(autumn, closes)
    assert slug(closed) == "renewal-window-closed"


def test_r30_added_seats_are_co_termed_until_the_renewal() -> None:
    now = RENEWS - timedelta(days=100)
    assert domain.coterm_period(sub(), now) == (now, RENEWS)
    with pytest.raises(DomainError) as over:
        domain.coterm_period(sub(), RENEWS)
    assert slug(over) == "coterm-period-over"
    with pytest.raises(DomainError) as trial:
        domain.coterm_period(sub(trial=True), now)
    assert slug(trial) == "trial-not-converted"


@pytest.mark.parametrize(("term", "days"), [("monthly", 15), ("annual", 30), ("three_year", 30)])
def test_r38_refund_windows(term: str, days: int) -> None:
    s = sub(term=term)
    assert domain.check_refundable(s, T0 + timedelta(days=days)) == ("order", T0)
    with pytest.raises(DomainError) as late:
        domain.check_refundable(s, T0 + timedelta(days=days, seconds=1))
    assert slug(late) == "refund-window-closed"
    renewed = sub(term=term, purchase_kind="renewal", purchased_at=RENEWS)
    assert domain.check_refundable(renewed, RENEWS + timedelta(days=1)) == ("renewal", RENEWS)


def test_r38_refund_window_counts_local_days_across_a_dst_change() -> None:
    """R38 with R23: 15 local days from 2030-03-20 10:00 CET end 2030-04-04 10:00 CEST, an hour
    before 15 x 24 hours would (the clocks went forward on 2030-03-31)."""
    bought = datetime(2030, 3, 20, 9, 0, tzinfo=UTC)  # 10:00 CET
    monthly = sub(term="monthly", purchased_at=bought)
    deadline = datetime(2030, 4, 4, 8, 0, tzinfo=UTC)  # 10:00 CEST
    assert domain.check_refundable(monthly, deadline) == ("order", bought)
    with pytest.raises(DomainError) as late:
        domain.check_refundable(monthly, deadline + timedelta(seconds=1))
    assert slug(late) == "refund-window-closed"


def test_r38_partner_purchases_and_non_refundable_products_are_never_refunded() -> None:
    with pytest.raises(DomainError) as partner:
        domain.check_refundable(sub(channel="partner"), T0)
    assert slug(partner) == "refund-partner-purchase"
    with pytest.raises(DomainError) as consulting:
        domain.check_refundable(sub(offering="consulting-day"), T0)
    assert slug(consulting) == "refund-product-not-refundable"
    with pytest.raises(DomainError) as twice:
        domain.check_refundable(sub(refunded_at=T0), T0)
    assert slug(twice) == "subscription-cancelled"


# --- tokens ------------------------------------------------------------------------------------


def test_the_mint_command_prints_a_token_the_services_accept(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from shared.auth import main, verify_token

    monkeypatch.setenv("PLATFORM_JWT_SECRET", "s" * 40)
    subject = uuid.uuid4()
    clock = FrozenClock(T0)
    main(["mint", "--kind", "operator", "--subject", str(subject), "--ttl", "60"], clock)
    printed = capsys.readouterr().out.strip()
    who = verify_token(Settings(), clock, f"Bearer {printed}")
    assert (who.kind, who.subject) == ("operator", subject)
    clock.advance(timedelta(seconds=60))
    with pytest.raises(Problem):
        verify_token(Settings(), clock, f"Bearer {printed}")


def test_r34_after_a_cancellation_on_unpaid_credit_only_prepayment() -> None:
    with pytest.raises(DomainError) as refused:
        domain.check_payment_method(
            "invoice", via_partner_quote=True, has_invoice_subscription=True, prepay_only=True
        )
    assert slug(refused) == "prepayment-required"
    for method in ("card", "paypal"):
        domain.check_payment_method(
            method, via_partner_quote=True, has_invoice_subscription=True, prepay_only=True
        )
