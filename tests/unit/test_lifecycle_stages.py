"""R31-R36: the expiry process as pure rules, to the second."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.lifecycle.domain import (
    SubscriptionState,
    entitlements,
    lapse,
    may_reactivate,
    stage_at,
    steps_until,
)
from shared.time.calendar import local_midnight

OSLO = ZoneInfo("Europe/Oslo")
SECOND = timedelta(seconds=1)
RENEWS = local_midnight(date(2025, 6, 10), OSLO)

# R35, copied from DOMAIN.md (not from the data file it is meant to check).
R35 = {
    "active": ("full", "full", "full", "full", "full"),
    "expired": ("full", "full", "no_upgrades", "none", "self_help"),
    "suspended": ("none", "assignments_preserved", "none", "none", "self_help"),
    "cancelled": ("none", "assignments_deleted", "none", "none", "self_help"),
}
CAPABILITIES = (
    "product_access",
    "user_management",
    "downloads_uploads",
    "insight_reporting",
    "product_support",
)


def state(term: str = "annual", offering: str = "autocad", **kw: object) -> SubscriptionState:
    values: dict[str, object] = {
        "stage": "active",
        "term": term,
        "offering": offering,
        "time_zone": "Europe/Oslo",
        "auto_renew": False,
        "trial": False,
        "renews_at": RENEWS,
    }
    values.update(kw)
    return SubscriptionState(**values)  # type: ignore[arg-type]


def day(d: date) -> datetime:
    return local_midnight(d, OSLO)


@pytest.mark.parametrize(
    ("term", "suspended_at", "cancelled_at"),
    [
        ("annual", day(date(2025, 6, 25)), day(date(2025, 7, 25))),  # 15 + 30 days
        ("three_year", day(date(2025, 6, 25)), day(date(2025, 7, 25))),
        ("monthly", day(date(2025, 6, 25)), day(date(2025, 7, 10))),  # 15 + 15 days
    ],
)
# Proves R32, R33 (../shared/DOMAIN.md).
def test_r31_r32_r33_r34_each_boundary_to_the_second(
    term: str, suspended_at: datetime, cancelled_at: datetime
) -> None:
    sub = state(term)
    expected = [
        (RENEWS - SECOND, "active"),
        (RENEWS, "expired"),
        (suspended_at - SECOND, "expired"),
        (suspended_at, "suspended"),
        (cancelled_at - SECOND, "suspended"),
        (cancelled_at, "cancelled"),
        (cancelled_at + timedelta(days=400), "cancelled"),
    ]
    assert [(at, stage_at(sub, at)) for at, _ in expected] == expected
    steps = steps_until(sub, cancelled_at)
    assert [(s.from_stage, s.to_stage, s.at) for s in steps] == [
        ("active", "expired", RENEWS),
        ("expired", "suspended", suspended_at),
        ("suspended", "cancelled", cancelled_at),
    ]
    assert [s.next_stage_at for s in steps] == [suspended_at, cancelled_at, None]


def test_r36_no_grace_offerings_go_straight_to_cancelled_at_expiry() -> None:
    docs = state(offering="docs")
    assert stage_at(docs, RENEWS - SECOND) == "active"
    assert stage_at(docs, RENEWS) == "cancelled"
    [step] = steps_until(docs, RENEWS + timedelta(days=100))
    assert (step.from_stage, step.to_stage, step.next_stage_at) == ("active", "cancelled", None)


def test_r24_r25_auto_renew_on_does_not_lapse_at_the_renewal_date() -> None:
    """With auto-renew on the renewal date bills (R25); only the outcome can lapse it."""
    assert stage_at(state(auto_renew=True), RENEWS + timedelta(days=60)) == "active"
    # trials don't bill; R17 [ours, issue 11]: a trial's end is Cancelled, no Expired grace
    assert stage_at(state(auto_renew=True, trial=True), RENEWS) == "cancelled"


def test_r31_whichever_comes_first_the_unpaid_invoice_or_the_expiry_date() -> None:
    overdue = day(date(2025, 5, 1))
    sub = state(auto_renew=False)
    steps = steps_until(sub, overdue, lapse(sub, overdue, "invoice_unpaid"))
    assert [(s.to_stage, s.at, s.reason) for s in steps] == [("expired", overdue, "invoice_unpaid")]
    assert steps[0].next_stage_at == day(date(2025, 5, 16))
    late = day(date(2025, 7, 1))  # the expiry date came first
    steps = steps_until(sub, late, lapse(sub, late, "invoice_unpaid"))
    assert (steps[0].at, steps[0].reason) == (RENEWS, "not_renewed")


# Proves R32 (../shared/DOMAIN.md).
def test_r32_stage_lengths_count_local_days_across_dst() -> None:
    """Expired from 2025-03-20 00:00 Oslo; 15 days later DST has started, still midnight."""
    renews = day(date(2025, 3, 20))
    [step] = steps_until(state(renews_at=renews), renews)
    assert step.next_stage_at == day(date(2025, 4, 4))
    assert step.next_stage_at is not None
    assert step.next_stage_at - renews == timedelta(days=15, hours=-1)


@pytest.mark.parametrize("stage", ["active", "expired", "suspended", "cancelled"])
def test_r35_entitlements_of_each_stage(stage: str) -> None:
    allowed = entitlements(stage)  # type: ignore[arg-type]
    assert tuple(allowed[c] for c in CAPABILITIES) == R35[stage]
    assert set(allowed) == set(CAPABILITIES)


# Proves R32, R33 (../shared/DOMAIN.md).
def test_r32_r33_r34_who_may_be_reactivated() -> None:
    assert may_reactivate("expired") and may_reactivate("suspended")
    assert not may_reactivate("cancelled")
    assert not may_reactivate("active")


def test_r33_r34_only_a_lapse_paid_in_time_undoes_a_cancellation() -> None:
    from datetime import UTC, datetime, timedelta

    from services.lifecycle.domain import paid_before_cancellation

    cancelled_at = datetime(2025, 7, 24, 22, 0, tzinfo=UTC)
    before, after = cancelled_at - timedelta(minutes=2), cancelled_at + timedelta(seconds=1)
    lapse = "suspended_period_ended"
    assert paid_before_cancellation("cancelled", lapse, cancelled_at, before)
    assert not paid_before_cancellation("cancelled", lapse, cancelled_at, after)  # R34
    assert not paid_before_cancellation("cancelled", "refunded", cancelled_at, before)  # R39
    assert not paid_before_cancellation("cancelled", "no_grace_expired", cancelled_at, before)
    assert not paid_before_cancellation("suspended", lapse, cancelled_at, before)
