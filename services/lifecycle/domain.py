"""Lifecycle's rules, with no I/O: term dates in the purchase's time zone (R23), renewals that
keep the original anniversary (R27), the expiry process and what each stage allows (R31-R36).

Decisions of ours, written down here because the sources are silent:
- An invoice due on day D is unpaid once D has ended in the subscription's time zone: the
  expiry process starts at 00:00:00 local on D + 1 (R31).
- Stage lengths count local calendar days from the instant a stage began (a DST change does not
  move a boundary off midnight).
- Reminders "N days before expiry" (R26) are due at 00:00 local on the day N days before the
  expiry date (expiry 2025-06-09 -> the 4-day reminder on 2025-06-05 00:00).
- The late-renewal windows of R27 (45 days annual/three-year, 30 monthly) are exactly Expired
  (15) + Suspended (30 or 15): renewing or paying is accepted while the subscription is Expired
  or Suspended and refused once it is Cancelled.
- A trial never renews itself (nothing to charge): at its end it lapses like auto-renew off.
- A trial converted (R17) starts its paid term at the conversion, same subscription id.
"""

from __future__ import annotations

import calendar
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any, Final
from zoneinfo import ZoneInfo

from shared.contracts import Stage, Term

TERM_MONTHS: dict[Term, int] = {"monthly": 1, "annual": 12, "three_year": 36}
REMINDER_DAYS: Final = (45, 30, 4)  # R26, when auto-renew is off
RENEWAL_WINDOW_DAYS: Final = 90  # R26, R29
_DATA = Path(__file__).parent


def _load(name: str) -> Any:
    return json.loads((_DATA / name).read_text())


_STAGES = _load("stages.json")
EXPIRED_DAYS: Final[int] = _STAGES["expired_days"]  # R32
SUSPENDED_DAYS: Final[dict[str, int]] = _STAGES["suspended_days"]  # R33
ENTITLEMENTS: Final[dict[str, dict[str, str]]] = _STAGES["entitlements"]  # R35
NO_GRACE_OFFERINGS: Final[frozenset[str]] = frozenset(
    _load("no_grace_offerings.json")["offerings"]
)  # R36
RENEWAL_NAMESPACE: Final = uuid.UUID("6f1f7c9e-5a0b-4a53-9a52-1c1e7b0c2d11")


# --- dates (R23) ----------------------------------------------------------------------------


def add_months(start: date, months: int, day_of_month: int | None = None) -> date:
    """``months`` later on ``day_of_month`` (default: ``start``'s), clamped to the month's end
    (R23: 01-31 -> 02-28). Passing the anniversary's day brings a renewal back to the 31st
    after a short month (R27: the original anniversary is kept)."""
    month_index = start.month - 1 + months
    year, month = start.year + month_index // 12, month_index % 12 + 1
    day = day_of_month or start.day
    return date(year, month, min(day, calendar.monthrange(year, month)[1]))


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    """The first instant of ``day`` in ``zone`` (in UTC); where midnight does not exist (a DST
    jump at 00:00), the first instant that does."""
    naive = datetime.combine(day, time(0))
    candidate = naive.replace(tzinfo=zone)
    round_trip = candidate.astimezone(UTC).astimezone(zone)
    if round_trip.replace(tzinfo=None) != naive:  # skipped by a DST jump
        return round_trip.astimezone(UTC)
    # In UTC: arithmetic between datetimes of one ZoneInfo ignores DST offsets.
    return candidate.astimezone(UTC)


def add_local_days(instant: datetime, days: int, time_zone: str) -> datetime:
    """``days`` calendar days later at the same local time of day (a DST change in between
    does not shift it)."""
    zone = ZoneInfo(time_zone)
    local = instant.astimezone(zone)
    naive = local.replace(tzinfo=None) + timedelta(days=days)
    if naive.time() == time(0):
        return local_midnight(naive.date(), zone)
    return naive.replace(tzinfo=zone).astimezone(UTC)


@dataclass(frozen=True)
class TermDates:
    starts_at: datetime
    renews_at: datetime  # first instant of the renewal day, local time
    expires_at: datetime  # last second before it (R23: 23:59:59 local)

    @property
    def renewal_date(self) -> date:
        return self.renews_at.date()


def term_dates(purchased_at: datetime, term: Term, time_zone: str) -> TermDates:
    """R23: dates of a term bought at ``purchased_at``, computed in the purchase's time zone.

    Bought 2024-06-10 (Europe/Oslo), annual: renews 2025-06-10 00:00:00 local, and without
    auto-renew expires 2025-06-09 23:59:59 local.
    """
    zone = ZoneInfo(time_zone)
    start_day = purchased_at.astimezone(zone).date()
    renews_at = local_midnight(add_months(start_day, TERM_MONTHS[term]), zone)
    return TermDates(
        starts_at=purchased_at,
        renews_at=renews_at,
        expires_at=renews_at - timedelta(seconds=1),
    )


def renewed_term_dates(
    renews_at: datetime, term: Term, time_zone: str, anniversary: date
) -> TermDates:
    """R27: the next term starts at the old renewal instant and ends on the original
    anniversary's day of month (monthly from 01-31: 02-28, then 03-31 again)."""
    zone = ZoneInfo(time_zone)
    renewal_day = renews_at.astimezone(zone).date()
    next_day = add_months(renewal_day, TERM_MONTHS[term], anniversary.day)
    next_renews_at = local_midnight(next_day, zone)
    return TermDates(
        starts_at=renews_at,
        renews_at=next_renews_at,
        expires_at=next_renews_at - timedelta(seconds=1),
    )


def purchase_day(purchased_at: datetime, time_zone: str) -> date:
    return purchased_at.astimezone(ZoneInfo(time_zone)).date()


def renewal_id(subscription_id: uuid.UUID, period_starts_at: datetime) -> uuid.UUID:
    """The same renewal (subscription, period) always has the same id, so invoicing can bill
    it once however often it is announced."""
    return uuid.uuid5(
        RENEWAL_NAMESPACE, f"{subscription_id}/{period_starts_at.astimezone(UTC).isoformat()}"
    )


def renewal_window_opens_at(renews_at: datetime, time_zone: str) -> datetime:
    """R26: a renewal can be bought from 90 days before the renewal date."""
    return add_local_days(renews_at, -RENEWAL_WINDOW_DAYS, time_zone)


def reminder_times(expires_at: datetime, time_zone: str) -> dict[int, datetime]:
    """R26: 00:00 local on the days 45, 30 and 4 days before the expiry date."""
    zone = ZoneInfo(time_zone)
    expiry_day = expires_at.astimezone(zone).date()
    return {n: local_midnight(expiry_day - timedelta(days=n), zone) for n in REMINDER_DAYS}


def invoice_overdue_at(due_date: date, time_zone: str) -> datetime:
    """R31: the first instant after the due date has ended in the subscription's time zone."""
    return local_midnight(due_date + timedelta(days=1), ZoneInfo(time_zone))


# --- stages (R31-R36) ------------------------------------------------------------------------


def entitlements(stage: Stage) -> dict[str, str]:
    """R35: what a stage still allows."""
    return dict(ENTITLEMENTS[stage])


def skips_expiry_process(offering: str) -> bool:
    """R36: these offerings lose product access at expiry (straight to Cancelled)."""
    return offering in NO_GRACE_OFFERINGS


@dataclass(frozen=True)
class SubscriptionState:
    """What the stage rules look at."""

    stage: Stage
    term: Term
    offering: str
    time_zone: str
    auto_renew: bool
    trial: bool
    renews_at: datetime
    next_stage_at: datetime | None = None


@dataclass(frozen=True)
class StageStep:
    from_stage: Stage
    to_stage: Stage
    at: datetime
    reason: str
    next_stage_at: datetime | None


def renews_itself(state: SubscriptionState) -> bool:
    """R25: with auto-renew on, the renewal date bills a renewal instead of lapsing (R24)."""
    return state.auto_renew and not state.trial


def lapse(state: SubscriptionState, at: datetime, reason: str) -> StageStep:
    """R31: Active -> Expired (15 days, R32); R36: no-grace offerings go straight to Cancelled."""
    if skips_expiry_process(state.offering):
        return StageStep("active", "cancelled", at, reason, None)
    ends = add_local_days(at, EXPIRED_DAYS, state.time_zone)
    return StageStep("active", "expired", at, reason, ends)


def following_step(state: SubscriptionState) -> StageStep | None:
    """The boundary after a grace stage: Expired -> Suspended -> Cancelled (R32-R34)."""
    at = state.next_stage_at
    if at is None:
        return None
    if state.stage == "expired":
        ends = add_local_days(at, SUSPENDED_DAYS[state.term], state.time_zone)
        return StageStep("expired", "suspended", at, "expired_period_ended", ends)
    if state.stage == "suspended":
        return StageStep("suspended", "cancelled", at, "suspended_period_ended", None)
    return None


def _after(state: SubscriptionState, step: StageStep) -> SubscriptionState:
    return replace(state, stage=step.to_stage, next_stage_at=step.next_stage_at)


def steps_until(
    state: SubscriptionState, until: datetime, first: StageStep | None = None
) -> list[StageStep]:
    """Every stage change due at or before ``until``, in order. ``first`` forces a lapse that
    is not the renewal date's (a failed charge, an unpaid invoice); otherwise an Active
    subscription lapses at its renewal date only when it does not renew itself (R24)."""
    steps: list[StageStep] = []
    if state.stage == "active":
        if not renews_itself(state) and state.renews_at <= until:
            natural = lapse(state, state.renews_at, "not_renewed")
            if first is None or natural.at <= first.at:  # R31: whichever comes first
                first = natural
        if first is None:
            return steps
        steps.append(first)
        state = _after(state, first)
    step = following_step(state)
    while step is not None and step.at <= until:
        steps.append(step)
        state = _after(state, step)
        step = following_step(state)
    return steps


def stage_at(state: SubscriptionState, instant: datetime) -> Stage:
    """The stage the subscription is in at ``instant`` if nothing else happens."""
    steps = steps_until(state, instant)
    return steps[-1].to_stage if steps else state.stage


def may_reactivate(stage: Stage) -> bool:
    """R32, R33: renewal or payment during Expired or Suspended returns it to Active; R34:
    Cancelled is final."""
    return stage in ("expired", "suspended")


def is_final(stage: Stage) -> bool:
    return stage == "cancelled"  # R34


def paid_before_cancellation(
    stage: Stage, reason: str | None, cancelled_at: datetime | None, paid_at: datetime
) -> bool:
    """A payment made while Suspended but processed after the end of Suspended had already been
    applied (the events travel on different topics and timers fire on their own): by business
    time it was in the window, so it still reactivates (R33). Cancelled stays final (R34) for
    anything done after the cancellation, and for refunds and no-grace cancellations."""
    return (
        stage == "cancelled"
        and reason == "suspended_period_ended"
        and cancelled_at is not None
        and paid_at < cancelled_at
    )
