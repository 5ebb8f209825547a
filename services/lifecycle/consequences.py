"""What one change of a subscription causes, written together: its stage record, its timers
(the renewal date, the window, reminders, the next stage boundary) and its events.

A use case (``service.py``) collects them in ``Consequences`` while it decides, then ``record``s
them once: stages in one statement, the timers dropped and scheduled in one (a batch of timers
changes many subscriptions at once), events through ``uow.events`` in the order they happened.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from shared.contracts import Contract, StageChanged, SubscriptionReactivated
from shared.timers import TimerRequest

from . import domain
from .domain import Subscription
from .repository import StageChange, TimerKey, UnitOfWork

# Timer kinds; the key is the subscription id (reminders: "<id>:<days>", overdue: invoice id).
RENEWAL_DATE = "renewal-date"
STAGE_BOUNDARY = "stage-boundary"
RENEWAL_WINDOW = "renewal-window"
RENEWAL_REMINDER = "renewal-reminder"
INVOICE_OVERDUE = "invoice-overdue"


def timers_of(subscription_id: uuid.UUID) -> list[TimerKey]:
    key = str(subscription_id)
    reminders = [(RENEWAL_REMINDER, f"{key}:{days}") for days in domain.REMINDER_DAYS]
    return [(RENEWAL_DATE, key), (STAGE_BOUNDARY, key), (RENEWAL_WINDOW, key), *reminders]


def stage_changed(step: domain.StageStep) -> StageChanged:
    return StageChanged(
        from_stage=step.from_stage,
        to_stage=step.to_stage,
        reason=step.reason,
        entitlements=domain.entitlements(step.to_stage),
        effective_at=step.at,
        next_stage_at=step.next_stage_at,
    )


@dataclass
class Consequences:
    """What one change (or one batch of timers) causes: stages, timers and events, written
    together by ``record`` (stages and timers in one statement each)."""

    stages: list[StageChange] = field(default_factory=list)
    timers: list[TimerRequest] = field(default_factory=list)
    dropped_timers: list[TimerKey] = field(default_factory=list)
    events: list[tuple[Subscription, Contract, datetime]] = field(default_factory=list)

    def announce(self, sub: Subscription, event: Contract, at: datetime) -> None:
        self.events.append((sub, event, at))

    def stage_steps(self, sub: Subscription, steps: list[domain.StageStep]) -> None:
        """R31-R36: record the steps and announce each with what its stage allows (R35)."""
        if not steps:
            return
        for step in steps:
            self.announce(sub, stage_changed(step), step.at)
        last = steps[-1]
        self.stages.append(
            StageChange(sub.id, last.to_stage, last.at, last.next_stage_at, last.reason)
        )
        if last.next_stage_at is not None:
            self.timers.append(
                TimerRequest(
                    STAGE_BOUNDARY, str(sub.id), last.next_stage_at, sub.account_id, sub.clock_id
                )
            )
        if domain.is_final(last.to_stage):
            self.dropped_timers += timers_of(sub.id)

    def reactivated(self, sub: Subscription, at: datetime, reason: str, term: Subscription) -> None:
        """R32, R33: back to Active from Expired or Suspended (``term``: the term that runs)."""
        step = domain.StageStep(sub.stage, "active", at, reason, None)
        self.announce(sub, stage_changed(step), at)
        self.announce(
            sub,
            SubscriptionReactivated(
                from_stage=sub.stage,
                reason=reason,
                expires_at=term.expires_at,
                renews_at=term.renews_at,
            ),
            at,
        )
        self.dropped_timers.append((STAGE_BOUNDARY, str(sub.id)))

    def term_timers(self, sub: Subscription, now: datetime) -> None:
        """The current term's timers: the renewal date, the window opening (R26) and, with
        auto-renew off, the reminders 45, 30 and 4 days before expiry (R26)."""
        key, account, clock = str(sub.id), sub.account_id, sub.clock_id
        self.timers.append(TimerRequest(RENEWAL_DATE, key, sub.renews_at, account, clock))
        opens = domain.renewal_window_opens_at(sub.renews_at, sub.time_zone)
        if opens > now:
            self.timers.append(TimerRequest(RENEWAL_WINDOW, key, opens, account, clock))
        remind = not domain.renews_itself(sub.state)
        for days, at in domain.reminder_times(sub.expires_at, sub.time_zone).items():
            reminder_key = f"{key}:{days}"
            if remind and at > now:
                payload = {"days_before": days}
                self.timers.append(
                    TimerRequest(RENEWAL_REMINDER, reminder_key, at, account, clock, payload)
                )
            else:
                self.dropped_timers.append((RENEWAL_REMINDER, reminder_key))

    async def record(self, uow: UnitOfWork) -> None:
        await uow.repo.save_stages(self.stages)
        await uow.repo.schedule_timers(self.timers, cancel=self.dropped_timers)
        # By account (a stable sort: each account's events keep their order): the outbox locks
        # one key per account as it emits, and a timer batch's subscriptions are in date order,
        # so emitting as collected could take two accounts' keys in the opposite order to a
        # consumer batch (shared/messaging.py, sorted by account) and deadlock with it.
        for sub, event, at in sorted(self.events, key=lambda e: str(e[0].account_id)):
            await uow.events.emit(
                event, account_id=sub.account_id, subscription_id=sub.id, occurred_at=at
            )
