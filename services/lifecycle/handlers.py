"""Lifecycle's Kafka entrance and its timers: activation, renewals, the expiry process.

Every change first catches the subscription up with the stage boundaries due at the event's
business time (so a payment one second after Suspended ended is refused even if the boundary's
timer has not fired yet), then applies the event. Timers and events share the same steps.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta
from typing import Any, Protocol

import asyncpg

from shared import people
from shared.contracts import (
    AutoRenewChanged,
    Contract,
    Envelope,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    ProductSwitchScheduled,
    RefundApproved,
    RenewalDue,
    RenewalReminderDue,
    RenewalRequested,
    RenewalWindowOpened,
    RolesChanged,
    SeatsAdded,
    StageChanged,
    SubscriptionActivated,
    SubscriptionReactivated,
    SubscriptionRenewed,
    TermChangeScheduled,
    TrialConverted,
)
from shared.db import Conn
from shared.messaging import EventConsumer, HandlerContext
from shared.outbox import Emission, Outbox
from shared.timers import (
    BatchTimerHandler,
    TimerBatchContext,
    TimerContext,
    TimerHandler,
    TimerRequest,
    schedule_many,
)

from . import domain, repository

log = logging.getLogger(__name__)
consumer = EventConsumer("lifecycle")

# Timer kinds; the key is the subscription id (reminders: "<id>:<days>", overdue: invoice id).
RENEWAL_DATE = "renewal-date"
STAGE_BOUNDARY = "stage-boundary"
RENEWAL_WINDOW = "renewal-window"
RENEWAL_REMINDER = "renewal-reminder"
INVOICE_OVERDUE = "invoice-overdue"


class Sub(Protocol):
    """A subscription row (an asyncpg record or a dict with the same keys)."""

    def __getitem__(self, key: str, /) -> Any: ...


def state_of(sub: Sub) -> domain.SubscriptionState:
    return domain.SubscriptionState(
        stage=sub["stage"],
        term=sub["term"],
        offering=sub["offering"],
        time_zone=sub["time_zone"],
        auto_renew=sub["auto_renew"],
        trial=sub["trial"],
        renews_at=sub["renews_at"],
        next_stage_at=sub["next_stage_at"],
    )


def timers_of(subscription_id: uuid.UUID) -> list[tuple[str, str]]:
    key = str(subscription_id)
    reminders = [(RENEWAL_REMINDER, f"{key}:{days}") for days in domain.REMINDER_DAYS]
    return [(RENEWAL_DATE, key), (STAGE_BOUNDARY, key), (RENEWAL_WINDOW, key), *reminders]


class Effects:
    """What one change (or one batch of timers) causes, written with few round trips."""

    def __init__(self, causation: Envelope | None = None) -> None:
        self.causation = causation
        self.stages: list[tuple[uuid.UUID, str, datetime, datetime | None, str]] = []
        self.emissions: list[Emission] = []
        self.timers: list[TimerRequest] = []
        self.dropped_timers: list[tuple[str, str]] = []

    def emit(self, sub: Sub, event: Contract, occurred_at: datetime | None = None) -> None:
        self.emissions.append(
            Emission(event, sub["account_id"], sub["id"], occurred_at, self.causation)
        )

    def stage_steps(self, sub: Sub, steps: list[domain.StageStep]) -> None:
        """R31-R36: record the steps and announce each with what its stage allows (R35)."""
        if not steps:
            return
        for step in steps:
            self.emit(sub, stage_changed(step), occurred_at=step.at)
        last = steps[-1]
        self.stages.append((sub["id"], last.to_stage, last.at, last.next_stage_at, last.reason))
        if last.next_stage_at is not None:
            self.timers.append(
                TimerRequest(
                    STAGE_BOUNDARY,
                    str(sub["id"]),
                    last.next_stage_at,
                    sub["account_id"],
                    sub["clock_id"],
                )
            )
        if domain.is_final(last.to_stage):
            self.dropped_timers += timers_of(sub["id"])

    def reactivated(self, sub: Sub, at: datetime, reason: str, term: Sub) -> None:
        """R32, R33: back to Active from Expired or Suspended."""
        step = domain.StageStep(sub["stage"], "active", at, reason, None)
        self.emit(sub, stage_changed(step), occurred_at=at)
        self.emit(
            sub,
            SubscriptionReactivated(
                from_stage=sub["stage"],
                reason=reason,
                expires_at=term["expires_at"],
                renews_at=term["renews_at"],
            ),
            occurred_at=at,
        )
        self.dropped_timers.append((STAGE_BOUNDARY, str(sub["id"])))

    def term_timers(self, sub: Sub, now: datetime) -> None:
        """The current term's timers: the renewal date, the window opening (R26) and, with
        auto-renew off, the reminders 45, 30 and 4 days before expiry (R26)."""
        key, tz = str(sub["id"]), sub["time_zone"]
        account, clock = sub["account_id"], sub["clock_id"]
        self.timers.append(TimerRequest(RENEWAL_DATE, key, sub["renews_at"], account, clock))
        opens = domain.renewal_window_opens_at(sub["renews_at"], tz)
        if opens > now:
            self.timers.append(TimerRequest(RENEWAL_WINDOW, key, opens, account, clock))
        remind = not domain.renews_itself(state_of(sub))
        for days, at in domain.reminder_times(sub["expires_at"], tz).items():
            reminder_key = f"{key}:{days}"
            if remind and at > now:
                payload = {"days_before": days}
                self.timers.append(
                    TimerRequest(RENEWAL_REMINDER, reminder_key, at, account, clock, payload)
                )
            else:
                self.dropped_timers.append((RENEWAL_REMINDER, reminder_key))

    async def commit(self, conn: Conn, outbox: Outbox) -> None:
        await repository.save_stages(conn, self.stages)
        await repository.cancel_timers(conn, self.dropped_timers)
        await schedule_many(conn, self.timers)
        await outbox.emit_many(conn, self.emissions)


def stage_changed(step: domain.StageStep) -> StageChanged:
    return StageChanged(
        from_stage=step.from_stage,
        to_stage=step.to_stage,
        reason=step.reason,
        entitlements=domain.entitlements(step.to_stage),
        effective_at=step.at,
        next_stage_at=step.next_stage_at,
    )


async def current(
    ctx: HandlerContext, subscription_id: uuid.UUID | None, at: datetime
) -> asyncpg.Record | None:
    """The subscription, locked, with every stage boundary due by ``at`` applied first."""
    if subscription_id is None:
        return None
    sub = await repository.lock_subscription(ctx.conn, subscription_id)
    if sub is None:
        return None
    steps = domain.steps_until(state_of(sub), at)
    if not steps:
        return sub
    effects = Effects(ctx.envelope)
    effects.stage_steps(sub, steps)
    await effects.commit(ctx.conn, ctx.outbox)
    return await repository.lock_subscription(ctx.conn, subscription_id)


async def subscription_for(
    ctx: HandlerContext, renewal_id: uuid.UUID | None = None, order_id: uuid.UUID | None = None
) -> uuid.UUID | None:
    """Which subscription an invoicing event is about."""
    if renewal_id is not None:
        renewal = await repository.get_renewal(ctx.conn, renewal_id)
        if renewal is not None:
            found: uuid.UUID = renewal["subscription_id"]
            return found
    named = ctx.envelope.subscription_id
    if named is not None and await repository.get_subscription(ctx.conn, named) is not None:
        return named
    if order_id is not None:
        return await repository.subscription_of_order(ctx.conn, order_id)
    return None


async def announce_renewal(
    conn: Conn,
    effects: Effects,
    sub: Sub,
    at: datetime,
    request: RenewalRequested | None = None,
) -> None:
    """R25: ``RenewalDue`` for the term that starts at the renewal date, with the pending term
    change (R28) and product switch (R29) applied; invoicing bills it."""
    term = request.term if request else (sub["pending_term"] or sub["term"])
    offering = request.offering if request else (sub["pending_offering"] or sub["offering"])
    seats = request.seats if request else sub["seats"]
    payment_method = request.payment_method if request else sub["payment_method"]
    channel = request.channel if request else sub["channel"]
    dates = domain.renewed_term_dates(sub["renews_at"], term, sub["time_zone"], sub["anniversary"])
    renewal_id = domain.renewal_id(sub["id"], sub["renews_at"])
    await repository.upsert_renewal(
        conn,
        {
            "renewal_id": renewal_id,
            "subscription_id": sub["id"],
            "offering": offering,
            "term": term,
            "seats": seats,
            "period_starts_at": dates.starts_at,
            "period_ends_at": dates.expires_at,
            "announced_at": at,
        },
    )
    effects.emit(
        sub,
        RenewalDue(
            renewal_id=renewal_id,
            offering=offering,
            term=term,
            seats=seats,
            payment_method=payment_method,
            channel=channel,
            time_zone=sub["time_zone"],
            period_starts_at=dates.starts_at,
            period_ends_at=dates.expires_at,
        ),
        occurred_at=at,
    )


async def renew(ctx: HandlerContext, sub: Sub, renewal: Sub, at: datetime, reason: str) -> None:
    """The term is renewed (on payment, or on issue for pay-by-invoice, R25): new dates that
    keep the original anniversary (R27), pending changes take effect (R28, R29); a lapsed
    subscription returns to Active (R32, R33). Cancelled refuses (R34)."""
    if renewal["renewed_at"] is not None:
        return
    if domain.is_final(sub["stage"]) and not domain.paid_before_cancellation(
        sub["stage"], sub["stage_reason"], sub["stage_changed_at"], at
    ):
        log.warning("renewal %s refused: subscription %s is cancelled (R34)", renewal, sub["id"])
        return
    if sub["renews_at"] != renewal["period_starts_at"]:
        log.warning(
            "renewal %s is not for the current term of %s", renewal["renewal_id"], sub["id"]
        )
        return
    term = {
        "offering": renewal["offering"],
        "term": renewal["term"],
        "seats": renewal["seats"],
        "starts_at": renewal["period_starts_at"],
        "expires_at": renewal["period_ends_at"],
        "renews_at": renewal["period_ends_at"] + timedelta(seconds=1),
        "anniversary": sub["anniversary"],
        "trial": False,
        "changed_at": at,
        "reason": reason,
    }
    await repository.start_term(ctx.conn, sub["id"], term)
    await repository.mark_renewed(ctx.conn, renewal["renewal_id"], at)
    effects = Effects(ctx.envelope)
    effects.emit(
        sub,
        SubscriptionRenewed(
            renewal_id=renewal["renewal_id"],
            offering=term["offering"],
            term=term["term"],
            seats=term["seats"],
            starts_at=term["starts_at"],
            expires_at=term["expires_at"],
            renews_at=term["renews_at"],
        ),
        occurred_at=at,
    )
    if sub["stage"] != "active":  # lapsed (or cancelled after it was paid in time): back
        effects.reactivated(sub, at, reason, term)
    renewed = await repository.get_subscription(ctx.conn, sub["id"])
    assert renewed is not None
    effects.term_timers(renewed, at)
    await effects.commit(ctx.conn, ctx.outbox)


# --- Kafka ----------------------------------------------------------------------------------


@consumer.on(RolesChanged)
async def remember_roles(ctx: HandlerContext, snapshot: RolesChanged) -> None:
    await people.apply_snapshot(ctx.conn, ctx.envelope.account_id, snapshot)


@consumer.on(OrderPlaced)
async def activate(ctx: HandlerContext, order: OrderPlaced) -> None:
    """Activate the subscription with its term dates in the purchase's time zone (R23); a
    trial is an active trial (R17)."""
    dates = domain.term_dates(order.placed_at, order.term, order.time_zone)
    sub = {
        "id": order.subscription_id,
        "account_id": ctx.envelope.account_id,
        "order_id": order.order_id,
        "offering": order.offering,
        "term": order.term,
        "seats": order.seats,
        "time_zone": order.time_zone,
        "auto_renew": order.auto_renew,
        "anniversary": domain.purchase_day(order.placed_at, order.time_zone),
        "starts_at": dates.starts_at,
        "expires_at": dates.expires_at,
        "renews_at": dates.renews_at,
        "activated_at": ctx.clock.now(),
        "payment_method": order.payment_method,
        "channel": order.channel,
        "trial": order.trial,
        "clock_id": None,  # test clocks come later; the column is there
        "stage": "active",
        "next_stage_at": None,
    }
    if not await repository.insert_subscription(ctx.conn, sub):
        return
    effects = Effects(ctx.envelope)
    effects.emit(
        sub,
        SubscriptionActivated(
            order_id=order.order_id,
            offering=order.offering,
            term=order.term,
            seats=order.seats,
            time_zone=order.time_zone,
            starts_at=dates.starts_at,
            expires_at=dates.expires_at,
            renews_at=dates.renews_at,
            auto_renew=order.auto_renew,
            trial=order.trial,
        ),
        occurred_at=ctx.clock.now(),  # business time: the account's test clock, if any
    )
    effects.term_timers(sub, order.placed_at)
    await effects.commit(ctx.conn, ctx.outbox)
    await apply_early_invoice_events(ctx, order.subscription_id)


async def apply_early_invoice_events(ctx: HandlerContext, subscription_id: uuid.UUID) -> None:
    """Apply the InvoiceIssued events that arrived before this subscription existed."""
    for envelope in await repository.take_early_invoice_events(ctx.conn, subscription_id):
        early = HandlerContext(
            conn=ctx.conn,
            envelope=envelope,
            outbox=ctx.outbox,
            clock=ctx.clock,
            wall_clock=ctx.wall_clock,
        )
        await invoice_issued(early, envelope.payload_as(InvoiceIssued))


@consumer.on(TrialConverted)
async def convert_trial(ctx: HandlerContext, converted: TrialConverted) -> None:
    """R17: the same subscription, now paid; its paid term starts at the conversion."""
    sub = await current(ctx, ctx.envelope.subscription_id, converted.converted_at)
    if sub is None or not sub["trial"] or domain.is_final(sub["stage"]):
        return
    dates = domain.term_dates(converted.converted_at, converted.term, sub["time_zone"])
    term = {
        "offering": sub["offering"],
        "term": converted.term,
        "seats": converted.seats,
        "starts_at": dates.starts_at,
        "expires_at": dates.expires_at,
        "renews_at": dates.renews_at,
        "anniversary": domain.purchase_day(converted.converted_at, sub["time_zone"]),
        "trial": False,
        "changed_at": converted.converted_at,
        "reason": "trial_converted",
    }
    await repository.start_term(ctx.conn, sub["id"], term)
    await repository.remember_billing(ctx.conn, sub["id"], converted.payment_method, None)
    effects = Effects(ctx.envelope)
    effects.emit(
        sub,
        SubscriptionActivated(
            order_id=converted.order_id,
            offering=sub["offering"],
            term=converted.term,
            seats=converted.seats,
            time_zone=sub["time_zone"],
            starts_at=dates.starts_at,
            expires_at=dates.expires_at,
            renews_at=dates.renews_at,
            auto_renew=sub["auto_renew"],
        ),
        occurred_at=ctx.clock.now(),  # business time: the account's test clock, if any
    )
    if domain.may_reactivate(sub["stage"]):
        effects.reactivated(sub, converted.converted_at, "trial_converted", term)
    paid = await repository.get_subscription(ctx.conn, sub["id"])
    assert paid is not None
    effects.term_timers(paid, converted.converted_at)
    await effects.commit(ctx.conn, ctx.outbox)


@consumer.on(AutoRenewChanged)
async def change_auto_renew(ctx: HandlerContext, change: AutoRenewChanged) -> None:
    """R24: off -> reminders (R26), no renewal; on -> renewal. Turned back on while Expired or
    Suspended, the lapsed term is billed (R27) and its payment reactivates."""
    sub = await current(ctx, ctx.envelope.subscription_id, change.changed_at)
    if sub is None or domain.is_final(sub["stage"]):
        return
    await repository.set_auto_renew(ctx.conn, sub["id"], change.auto_renew)
    sub = await current(ctx, sub["id"], change.changed_at)  # off after the renewal date: lapses
    assert sub is not None
    effects = Effects(ctx.envelope)
    if sub["stage"] == "active":
        effects.term_timers(sub, change.changed_at)
    elif change.auto_renew and domain.may_reactivate(sub["stage"]):
        await announce_renewal(ctx.conn, effects, sub, change.changed_at)
    await effects.commit(ctx.conn, ctx.outbox)


@consumer.on(TermChangeScheduled)
async def schedule_term_change(ctx: HandlerContext, change: TermChangeScheduled) -> None:
    """R28: pending until the next renewal; None withdraws it."""
    sub = await current(ctx, ctx.envelope.subscription_id, change.effective_at)
    if sub is not None and not domain.is_final(sub["stage"]):
        await repository.set_pending_term(ctx.conn, sub["id"], change.new_term)


@consumer.on(ProductSwitchScheduled)
async def schedule_product_switch(ctx: HandlerContext, switch: ProductSwitchScheduled) -> None:
    """R29: pending until the renewal date; None withdraws it."""
    sub = await current(ctx, ctx.envelope.subscription_id, switch.effective_at)
    if sub is not None and not domain.is_final(sub["stage"]):
        await repository.set_pending_offering(ctx.conn, sub["id"], switch.new_offering)


@consumer.on(SeatsAdded)
async def add_seats(ctx: HandlerContext, added: SeatsAdded) -> None:
    """R30: co-termed licences; the subscription now counts ``total_seats``."""
    sub = await current(ctx, ctx.envelope.subscription_id, added.prorate_from)
    if sub is not None and not domain.is_final(sub["stage"]):
        await repository.set_seats(ctx.conn, sub["id"], added.total_seats)


@consumer.on(RenewalRequested)
async def request_renewal(ctx: HandlerContext, request: RenewalRequested) -> None:
    """R27: a manual or late renewal is billed like the automatic one (``RenewalDue``, same
    renewal id for the same term); Cancelled refuses (R34)."""
    sub = await current(ctx, ctx.envelope.subscription_id, request.requested_at)
    if sub is None or domain.is_final(sub["stage"]):
        log.warning("renewal request %s refused: no live subscription", request.request_id)
        return
    await repository.remember_billing(ctx.conn, sub["id"], request.payment_method, request.channel)
    effects = Effects(ctx.envelope)
    await announce_renewal(ctx.conn, effects, sub, request.requested_at, request)
    await effects.commit(ctx.conn, ctx.outbox)


@consumer.on(InvoiceIssued)
async def invoice_issued(ctx: HandlerContext, issued: InvoiceIssued) -> None:
    """R25: a pay-by-invoice renewal is renewed on issue; R31: an invoice unpaid at the end of
    its due date starts the expiry process."""
    subscription_id = await subscription_for(ctx, issued.renewal_id, issued.order_id)
    if subscription_id is None:
        if ctx.envelope.subscription_id is not None:  # its order is not here yet: keep it
            await repository.keep_early_invoice_event(ctx.conn, ctx.envelope)
        return
    await repository.upsert_invoice(
        ctx.conn,
        {
            "invoice_id": issued.invoice_id,
            "subscription_id": subscription_id,
            "purpose": issued.purpose,
            "payment_method": issued.payment_method,
            "renewal_id": issued.renewal_id,
            "due_date": issued.due_date,
        },
    )
    if issued.payment_method != "invoice":
        return  # card and PayPal: InvoicePaid or PaymentFailed decides
    sub = await current(ctx, subscription_id, issued.issued_at)
    if sub is None or domain.is_final(sub["stage"]):
        return
    if issued.purpose == "renewal" and issued.renewal_id is not None:
        renewal = await repository.get_renewal(ctx.conn, issued.renewal_id)
        if renewal is not None:
            await renew(ctx, sub, renewal, issued.issued_at, "renewal_invoiced")
    overdue_at = domain.invoice_overdue_at(issued.due_date, sub["time_zone"])
    await schedule_many(
        ctx.conn,
        [
            TimerRequest(
                INVOICE_OVERDUE, str(issued.invoice_id), overdue_at, sub["account_id"], None
            )
        ],
    )


@consumer.on(InvoicePaid)
async def invoice_paid(ctx: HandlerContext, paid: InvoicePaid) -> None:
    """A paid renewal renews (R25); payment during Expired or Suspended reactivates (R32,
    R33) unless the subscription is Cancelled (R34)."""
    invoice = await repository.get_invoice(ctx.conn, paid.invoice_id)
    subscription_id = (
        invoice["subscription_id"] if invoice else await subscription_for(ctx, paid.renewal_id)
    )
    if subscription_id is None:
        return
    if invoice is not None:
        await repository.mark_invoice_paid(ctx.conn, paid.invoice_id, paid.paid_at)
        await repository.cancel_timers(ctx.conn, [(INVOICE_OVERDUE, str(paid.invoice_id))])
    sub = await current(ctx, subscription_id, paid.paid_at)
    if sub is None:
        return
    if domain.is_final(sub["stage"]) and not domain.paid_before_cancellation(
        sub["stage"], sub["stage_reason"], sub["stage_changed_at"], paid.paid_at
    ):
        log.warning("payment of %s refused: %s is cancelled (R34)", paid.invoice_id, sub["id"])
        return
    renewal_id = paid.renewal_id or (invoice["renewal_id"] if invoice else None)
    renewal = await repository.get_renewal(ctx.conn, renewal_id) if renewal_id else None
    if renewal is not None and renewal["renewed_at"] is None:
        await renew(ctx, sub, renewal, paid.paid_at, "renewal_paid")
        return
    overdue_left = [
        due
        for due in await repository.unpaid_invoice_dues(ctx.conn, sub["id"], paid.paid_at)
        if domain.invoice_overdue_at(due, sub["time_zone"]) <= paid.paid_at
    ]
    if overdue_left:
        return  # R31: another invoice is still overdue; paying this one is not enough
    if domain.may_reactivate(sub["stage"]) and sub["renews_at"] > paid.paid_at:
        # The overdue invoice is paid and its term still runs: back to Active.
        await repository.reactivate(ctx.conn, sub["id"], paid.paid_at, "invoice_paid")
        effects = Effects(ctx.envelope)
        effects.reactivated(sub, paid.paid_at, "invoice_paid", sub)
        effects.term_timers(sub, paid.paid_at)
        await effects.commit(ctx.conn, ctx.outbox)


@consumer.on(PaymentFailed)
async def renewal_charge_failed(ctx: HandlerContext, failed: PaymentFailed) -> None:
    """R37: a failed card/PayPal renewal charge puts the subscription into Expired (invoicing
    retries the charge; a later payment reactivates)."""
    if failed.purpose != "renewal":
        return
    invoice = await repository.get_invoice(ctx.conn, failed.invoice_id)
    subscription_id = invoice["subscription_id"] if invoice else await subscription_for(ctx)
    sub = await current(ctx, subscription_id, failed.failed_at)
    if sub is None or sub["stage"] != "active" or sub["renews_at"] > failed.failed_at:
        return  # already lapsing, or a manual renewal before the term ended
    state = state_of(sub)
    first = domain.lapse(state, sub["renews_at"], "payment_failed")
    effects = Effects(ctx.envelope)
    effects.stage_steps(sub, domain.steps_until(state, failed.failed_at, first))
    await effects.commit(ctx.conn, ctx.outbox)


@consumer.on(RefundApproved)
async def refunded(ctx: HandlerContext, refund: RefundApproved) -> None:
    """R39: a refund ends all access at once."""
    sub = await current(ctx, ctx.envelope.subscription_id, refund.approved_at)
    if sub is None or domain.is_final(sub["stage"]):
        return
    step = domain.StageStep(sub["stage"], "cancelled", refund.approved_at, "refunded", None)
    effects = Effects(ctx.envelope)
    effects.stage_steps(sub, [step])
    await effects.commit(ctx.conn, ctx.outbox)


# --- timers ---------------------------------------------------------------------------------


async def at_renewal_dates(batch: TimerBatchContext) -> None:
    """The renewal date: auto-renew on -> ``RenewalDue`` (R25); off -> Expired (R24, R31), or
    Cancelled for the offerings of R36."""
    subs = await repository.lock_subscriptions(batch.conn, [uuid.UUID(t.key) for t in batch.timers])
    effects = Effects()
    for timer in batch.timers:
        sub = subs.get(uuid.UUID(timer.key))
        if sub is None or sub["stage"] != "active" or sub["renews_at"] != timer.due_at:
            continue  # a stale timer: the term moved on
        state = state_of(sub)
        if domain.renews_itself(state):
            await announce_renewal(batch.conn, effects, sub, timer.due_at)
        else:
            effects.stage_steps(sub, domain.steps_until(state, timer.due_at))
    await effects.commit(batch.conn, batch.outbox)


async def at_stage_boundaries(batch: TimerBatchContext) -> None:
    """Expired -> Suspended -> Cancelled (R32-R34)."""
    subs = await repository.lock_subscriptions(batch.conn, [uuid.UUID(t.key) for t in batch.timers])
    effects = Effects()
    for timer in batch.timers:
        sub = subs.get(uuid.UUID(timer.key))
        if sub is not None:
            effects.stage_steps(sub, domain.steps_until(state_of(sub), timer.due_at))
    await effects.commit(batch.conn, batch.outbox)


async def renewal_window_opens(ctx: TimerContext) -> None:
    """R26: the buyer is told when a renewal can be bought (90 days before)."""
    sub = await repository.get_subscription(ctx.conn, uuid.UUID(ctx.timer.key))
    if sub is None or sub["stage"] != "active":
        return
    if domain.renewal_window_opens_at(sub["renews_at"], sub["time_zone"]) != ctx.timer.due_at:
        return
    await ctx.emit(
        RenewalWindowOpened(
            renews_at=sub["renews_at"], expires_at=sub["expires_at"], auto_renew=sub["auto_renew"]
        ),
        subscription_id=sub["id"],
    )


async def renewal_reminder(ctx: TimerContext) -> None:
    """R26: reminders 45, 30 and 4 days before expiry while auto-renew is off."""
    subscription_key, _, days = ctx.timer.key.partition(":")
    sub = await repository.get_subscription(ctx.conn, uuid.UUID(subscription_key))
    if sub is None or sub["stage"] != "active" or domain.renews_itself(state_of(sub)):
        return
    due = domain.reminder_times(sub["expires_at"], sub["time_zone"]).get(int(days))
    if due != ctx.timer.due_at:
        return
    await ctx.emit(
        RenewalReminderDue(days_before=int(days), expires_at=sub["expires_at"]),
        subscription_id=sub["id"],
    )


async def invoice_overdue(ctx: TimerContext) -> None:
    """R31: an invoice still unpaid when its due date has ended starts the expiry process
    (unless the expiry date came first)."""
    invoice = await repository.get_invoice(ctx.conn, uuid.UUID(ctx.timer.key))
    if invoice is None or invoice["paid_at"] is not None:
        return
    sub = await repository.lock_subscription(ctx.conn, invoice["subscription_id"])
    if sub is None or sub["stage"] != "active":
        return
    state = state_of(sub)
    first = domain.lapse(state, ctx.timer.due_at, "invoice_unpaid")
    effects = Effects()
    effects.stage_steps(sub, domain.steps_until(state, ctx.timer.due_at, first))
    await effects.commit(ctx.conn, ctx.outbox)


TIMERS: dict[str, TimerHandler] = {
    RENEWAL_WINDOW: renewal_window_opens,
    RENEWAL_REMINDER: renewal_reminder,
    INVOICE_OVERDUE: invoice_overdue,
}
BATCH_TIMERS: dict[str, BatchTimerHandler] = {
    RENEWAL_DATE: at_renewal_dates,
    STAGE_BOUNDARY: at_stage_boundaries,
}
