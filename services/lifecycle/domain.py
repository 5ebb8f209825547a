"""Lifecycle's rules, with no I/O: term dates in the purchase's time zone (R23), renewals that
keep the original anniversary (R27), the expiry process and what each stage allows (R31-R36).

Decisions of ours, written down here because the sources are silent:
- An invoice due on day D is unpaid once D has ended in the subscription's time zone: the
  expiry process starts at 00:00:00 local on D + 1 (R31).
- A card/PayPal charge is due on its issue day (R21). One declined at issue (invoicing's
  ``PaymentFailed``, attempt 1) makes its invoice unpaid on that day: a declined first purchase
  (or installment, or co-term) is activated but starts R31 at 00:00 local the next day, exactly
  like an unpaid invoice; invoicing retries it on the R37 days meanwhile, and a payment returns
  it to Active (R32, R33). A declined renewal lapses at once (its renewal date has come, R37).
  Invoicing alone decides which charges are retried; lifecycle trusts its events.
- Stage lengths count local calendar days from the instant a stage began (a DST change does not
  move a boundary off midnight).
- Reminders "N days before expiry" (R26) are due at 00:00 local on the day N days before the
  expiry date (expiry 2025-06-09 -> the 4-day reminder on 2025-06-05 00:00).
- The late-renewal windows of R27 (45 days annual/three-year, 30 monthly) are exactly Expired
  (15) + Suspended (30 or 15): renewing or paying is accepted while the subscription is Expired
  or Suspended and refused once it is Cancelled.
- A trial (R17) lasts 30 days from its local start day, whatever term was ordered (ordering
  caps it at 5 seats), never renews itself (nothing to charge), and at its end goes straight to
  Cancelled (reason ``trial_ended``): the Expired and Suspended grace of R32/R33 is for paid
  terms, so a trial never gets 15 more days of full access. Issue 11, defect 7.
- A trial converted (R17) starts its paid term at the conversion, same subscription id; a
  conversion made before the trial ended converts it even when the end was applied first
  (business time decides, as for payments in R33).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Final

from shared.contracts import Channel, PaymentMethod, RenewalRequested, Stage, Term
from shared.errors import Forbidden, Invalid, NotFound
from shared.time.calendar import (
    TERM_MONTHS,
    add_local_days,
    add_months,
    local_date,
    local_midnight,
    term_renews_at,
    zone,
)

REMINDER_DAYS: Final = (45, 30, 4)  # R26, when auto-renew is off
RENEWAL_WINDOW_DAYS: Final = 90  # R26, R29
TRIAL_DAYS: Final = 30  # R17 [ours]: a trial's length, whatever the term ordered
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


# --- dates (R23): the calendar is shared.time.calendar -----------------------------------


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
    renews_at = term_renews_at(purchased_at, term, time_zone)
    return TermDates(
        starts_at=purchased_at,
        renews_at=renews_at,
        expires_at=renews_at - timedelta(seconds=1),
    )


def first_term_dates(
    purchased_at: datetime, term: Term, time_zone: str, *, trial: bool
) -> TermDates:
    """R23 for a purchase; R17 [ours]: a trial ends ``TRIAL_DAYS`` local days after its start
    day (at local midnight), not after the term it was ordered with."""
    if not trial:
        return term_dates(purchased_at, term, time_zone)
    ends_at = local_midnight(
        local_date(purchased_at, time_zone) + timedelta(days=TRIAL_DAYS), time_zone
    )
    return TermDates(
        starts_at=purchased_at, renews_at=ends_at, expires_at=ends_at - timedelta(seconds=1)
    )


def renewed_term_dates(
    renews_at: datetime, term: Term, time_zone: str, anniversary: date
) -> TermDates:
    """R27: the next term starts at the old renewal instant and ends on the original
    anniversary's day of month (monthly from 01-31: 02-28, then 03-31 again)."""
    renewal_day = local_date(renews_at, time_zone)
    next_day = add_months(renewal_day, TERM_MONTHS[term], anniversary.day)
    next_renews_at = local_midnight(next_day, time_zone)
    return TermDates(
        starts_at=renews_at,
        renews_at=next_renews_at,
        expires_at=next_renews_at - timedelta(seconds=1),
    )


def purchase_day(purchased_at: datetime, time_zone: str) -> date:
    return local_date(purchased_at, time_zone)


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
    tz = zone(time_zone)
    expiry_day = local_date(expires_at, tz)
    return {n: local_midnight(expiry_day - timedelta(days=n), tz) for n in REMINDER_DAYS}


def invoice_overdue_at(due_date: date, time_zone: str) -> datetime:
    """R31: the first instant after the due date has ended in the subscription's time zone."""
    return local_midnight(due_date + timedelta(days=1), time_zone)


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
    """R31: Active -> Expired (15 days, R32); R36: no-grace offerings go straight to Cancelled;
    R17 [ours]: so does a trial at its end (nothing was paid, no grace is owed)."""
    if state.trial:
        return StageStep("active", "cancelled", at, "trial_ended", None)
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


def converts(sub: Subscription, at: datetime) -> bool:
    """R17: a trial converts in place while it runs; a conversion made before its end converts
    it even when the end was applied first (the events travel apart)."""
    if not sub.trial:
        return False
    if not is_final(sub.stage):
        return True
    return (
        sub.stage_reason == "trial_ended"
        and sub.stage_changed_at is not None
        and at < sub.stage_changed_at
    )


def refuses_after_cancellation(sub: Subscription, at: datetime) -> bool:
    """R34: Cancelled refuses a renewal or a payment, unless it was paid in time (above)."""
    return is_final(sub.stage) and not paid_before_cancellation(
        sub.stage, sub.stage_reason, sub.stage_changed_at, at
    )


# --- what lifecycle remembers -----------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    """A subscription as lifecycle keeps it (one row of ``subscriptions``)."""

    id: uuid.UUID
    account_id: uuid.UUID
    order_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    time_zone: str
    auto_renew: bool
    stage: Stage
    anniversary: date
    starts_at: datetime
    expires_at: datetime
    renews_at: datetime
    activated_at: datetime
    payment_method: PaymentMethod = "card"
    channel: Channel = "direct"
    trial: bool = False
    pending_term: Term | None = None
    pending_offering: str | None = None
    stage_changed_at: datetime | None = None
    stage_reason: str | None = None
    next_stage_at: datetime | None = None
    clock_id: uuid.UUID | None = None

    @property
    def state(self) -> SubscriptionState:
        return SubscriptionState(
            stage=self.stage,
            term=self.term,
            offering=self.offering,
            time_zone=self.time_zone,
            auto_renew=self.auto_renew,
            trial=self.trial,
            renews_at=self.renews_at,
            next_stage_at=self.next_stage_at,
        )


@dataclass(frozen=True)
class Renewal:
    """A renewal announced with ``RenewalDue``; ``renewed_at`` once its term started."""

    renewal_id: uuid.UUID
    subscription_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    period_starts_at: datetime
    period_ends_at: datetime  # the new expiry instant
    announced_at: datetime
    renewed_at: datetime | None = None


@dataclass(frozen=True)
class Invoice:
    """Invoicing's invoice of a subscription, as far as the expiry process needs it (R31)."""

    invoice_id: uuid.UUID
    subscription_id: uuid.UUID
    purpose: str
    payment_method: str
    renewal_id: uuid.UUID | None
    due_date: date
    paid_at: datetime | None = None


@dataclass(frozen=True)
class NewTerm:
    """A term that starts (a renewal, or a trial converted): dates and what it covers."""

    offering: str
    term: Term
    seats: int
    starts_at: datetime
    expires_at: datetime
    renews_at: datetime
    anniversary: date
    trial: bool
    changed_at: datetime
    reason: str


@dataclass(frozen=True)
class Billing:
    """How a renewal is paid: remembered from the purchase, changed by a renewal request."""

    payment_method: PaymentMethod
    channel: Channel


# --- renewals (R25, R27-R29) ------------------------------------------------------------------

RENEWAL_STARTS_AFTER_EXPIRY: Final = timedelta(seconds=1)  # R23: expiry is 23:59:59 local


def announced_renewal(
    sub: Subscription, at: datetime, request: RenewalRequested | None = None
) -> tuple[Renewal, Billing]:
    """R25, R27: the renewal of the term that starts at the renewal date, with the pending term
    change (R28) and product switch (R29) applied, or what a renewal request asks for.

    One renewal per renewal date: its id comes from (subscription, period start), so announcing
    it again (a manual request, auto-renew turned back on) names the same renewal and invoicing
    bills it once."""
    term = request.term if request else (sub.pending_term or sub.term)
    offering = request.offering if request else (sub.pending_offering or sub.offering)
    seats = request.seats if request else sub.seats
    billing = (
        Billing(request.payment_method, request.channel)
        if request
        else Billing(sub.payment_method, sub.channel)
    )
    dates = renewed_term_dates(sub.renews_at, term, sub.time_zone, sub.anniversary)
    renewal = Renewal(
        renewal_id=renewal_id(sub.id, sub.renews_at),
        subscription_id=sub.id,
        offering=offering,
        term=term,
        seats=seats,
        period_starts_at=dates.starts_at,
        period_ends_at=dates.expires_at,
        announced_at=at,
    )
    return renewal, billing


def announced_again(renewal: Renewal, earlier: Renewal | None) -> Renewal:
    """R27: a renewal announced earlier for the same renewal date and not renewed yet keeps what
    it was announced with (what a renewal request or partner quote bought); only its
    announcement time moves."""
    if earlier is None or earlier.renewed_at is not None:
        return renewal
    return replace(earlier, announced_at=renewal.announced_at)


def renewal_refusal(sub: Subscription, renewal: Renewal, at: datetime) -> str | None:
    """Why ``renewal`` cannot renew ``sub`` now, or None: renewed already (once per renewal),
    Cancelled (R34), or announced for another term than the current one."""
    if renewal.renewed_at is not None:
        return "already renewed"
    if refuses_after_cancellation(sub, at):
        return "the subscription is cancelled (R34)"
    if sub.renews_at != renewal.period_starts_at:
        return "not for the current term"
    return None


def renewed_term(sub: Subscription, renewal: Renewal, at: datetime, reason: str) -> NewTerm:
    """R27: the renewed term keeps the original anniversary; pending changes take effect (R28,
    R29); the next renewal is one second after the new expiry (local midnight)."""
    return NewTerm(
        offering=renewal.offering,
        term=renewal.term,
        seats=renewal.seats,
        starts_at=renewal.period_starts_at,
        expires_at=renewal.period_ends_at,
        renews_at=renewal.period_ends_at + RENEWAL_STARTS_AFTER_EXPIRY,
        anniversary=sub.anniversary,
        trial=False,
        changed_at=at,
        reason=reason,
    )


def converted_term(sub: Subscription, term: Term, seats: int, converted_at: datetime) -> NewTerm:
    """R17: a converted trial starts its paid term at the conversion, same subscription."""
    dates = term_dates(converted_at, term, sub.time_zone)
    return NewTerm(
        offering=sub.offering,
        term=term,
        seats=seats,
        starts_at=dates.starts_at,
        expires_at=dates.expires_at,
        renews_at=dates.renews_at,
        anniversary=purchase_day(converted_at, sub.time_zone),
        trial=False,
        changed_at=converted_at,
        reason="trial_converted",
    )


# --- payments and the expiry process (R31, R37) -----------------------------------------------


def another_invoice_overdue(unpaid_due_dates: list[date], time_zone: str, at: datetime) -> bool:
    """R31: a subscription lapsed on unpaid invoices stays lapsed while any of its other
    pay-by-invoice invoices is still overdue at ``at``; paying one is not enough."""
    return any(invoice_overdue_at(due, time_zone) <= at for due in unpaid_due_dates)


def reactivates_on_payment(sub: Subscription, paid_at: datetime) -> bool:
    """R32, R33: the overdue invoice is paid while Expired or Suspended and the term still
    runs: back to Active."""
    return may_reactivate(sub.stage) and sub.renews_at > paid_at


def charge_failure_lapses(sub: Subscription, failed_at: datetime) -> bool:
    """R37: a failed renewal charge lapses an Active subscription whose term has ended (not one
    already lapsing, nor a manual renewal charged before the term ended)."""
    return sub.stage == "active" and sub.renews_at <= failed_at


# --- who sees what (R8) -----------------------------------------------------------------------

READERS: Final = frozenset({"buyer", "primary_admin", "secondary_admin"})
RENEWAL_READERS: Final = frozenset({"buyer", "operator"})  # R8: renewal data is the buyer's


def sees_renewal_data(roles: set[str]) -> bool:
    """R8: the buyer (and support) sees term, dates, auto-renew and pending changes."""
    return bool(roles & RENEWAL_READERS)


# --- test clocks ------------------------------------------------------------------------------


def operator_only(kind: str) -> None:
    if kind != "operator":
        raise Forbidden("operator-only", "Operators only", "Test clocks are for operators.")


def clocks_disabled() -> NotFound:
    return NotFound(
        "test-clocks-disabled",
        "Test clocks are disabled",
        "Set PLATFORM_TEST_CLOCKS_ENABLED=true on every service to use test clocks.",
    )


def check_forward(target: datetime, to: datetime) -> None:
    """A test clock only moves forward."""
    if to <= target:
        raise Invalid(
            "clock-forward-only",
            "A test clock only moves forward",
            f"Advance to a time after {target.isoformat()}.",
            errors=[{"field": "to", "message": "must be later than the clock's time"}],
        )


def with_term(sub: Subscription, term: NewTerm) -> Subscription:
    """``sub`` once ``term`` has started: Active, pending changes consumed (R28, R29)."""
    lapsed = sub.stage != "active"
    return replace(
        sub,
        offering=term.offering,
        term=term.term,
        seats=term.seats,
        starts_at=term.starts_at,
        expires_at=term.expires_at,
        renews_at=term.renews_at,
        anniversary=term.anniversary,
        trial=term.trial,
        pending_term=None,
        pending_offering=None,
        stage="active",
        stage_changed_at=term.changed_at if lapsed else sub.stage_changed_at,
        stage_reason=term.reason if lapsed else sub.stage_reason,
        next_stage_at=None,
    )
