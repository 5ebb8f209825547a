"""Lifecycle's use cases: activation, renewals, the expiry process, and what the door reads.

One function per use case, each taking a unit of work (``UnitOfWork``: the repository on the
open transaction, the events it emits, and "now"). ``handlers.py`` calls them for events and
timers, ``api.py`` for HTTP.

Every change first catches the subscription up with the stage boundaries due at the event's
business time (so a payment one second after Suspended ended is refused even if the boundary's
timer has not fired yet), then applies the event. Timers and events share the same steps.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from shared import people
from shared.auth import Principal
from shared.contracts import (
    AutoRenewChanged,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    ProductSwitchScheduled,
    RefundApproved,
    RenewalDue,
    RenewalPaymentMethodChanged,
    RenewalReminderDue,
    RenewalRequested,
    RenewalWindowOpened,
    RolesChanged,
    SeatsAdded,
    SubscriptionActivated,
    SubscriptionRenewed,
    TermChangeScheduled,
    TrialConverted,
)
from shared.errors import not_found
from shared.time.calendar import local_date
from shared.timers import TimerRequest

from . import domain
from .consequences import INVOICE_OVERDUE, Consequences
from .domain import Invoice, Renewal, Subscription
from .repository import UnitOfWork
from .schemas import SubscriptionList, SubscriptionView, view_for

log = logging.getLogger(__name__)


async def current(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, at: datetime
) -> Subscription | None:
    """The subscription, locked, with every stage boundary due by ``at`` applied first."""
    if subscription_id is None:
        return None
    sub = await uow.repo.lock_subscription(subscription_id)
    if sub is None:
        return None
    steps = domain.steps_until(sub.state, at)
    if not steps:
        return sub
    consequences = Consequences()
    consequences.stage_steps(sub, steps)
    await consequences.record(uow)
    return await uow.repo.lock_subscription(subscription_id)


async def subscription_for(
    uow: UnitOfWork,
    named: uuid.UUID | None,
    renewal_id: uuid.UUID | None = None,
    order_id: uuid.UUID | None = None,
) -> uuid.UUID | None:
    """Which subscription an invoicing event is about (``named``: the one its envelope names)."""
    if renewal_id is not None:
        renewal = await uow.repo.get_renewal(renewal_id)
        if renewal is not None:
            return renewal.subscription_id
    if named is not None and await uow.repo.get_subscription(named) is not None:
        return named
    if order_id is not None:
        return await uow.repo.subscription_of_order(order_id)
    return None


async def announce_renewal(
    uow: UnitOfWork,
    consequences: Consequences,
    sub: Subscription,
    at: datetime,
    request: RenewalRequested | None = None,
) -> None:
    """R25: ``RenewalDue`` for the term that starts at the renewal date, with the pending term
    change (R28) and product switch (R29) applied; invoicing bills it. A renewal requested by
    accepting a partner's renewal quote (R27) carries the quote's priced lines on (R16)."""
    renewal, billing = domain.announced_renewal(sub, at, request)
    if request is None:
        # A renewal already requested for this date (a direct or partner-quote renewal, R27,
        # whose charge has not succeeded yet) is what was bought: the renewal-date timer or
        # auto-renew turned back on announces it again as it is, never with the
        # subscription's own term, product or seats.
        requested = await uow.repo.get_renewal(renewal.renewal_id)
        renewal = domain.announced_again(renewal, requested)
    await uow.repo.upsert_renewal(renewal)
    consequences.announce(
        sub,
        RenewalDue(
            renewal_id=renewal.renewal_id,
            offering=renewal.offering,
            term=renewal.term,
            seats=renewal.seats,
            payment_method=billing.payment_method,
            channel=billing.channel,
            time_zone=sub.time_zone,
            period_starts_at=renewal.period_starts_at,
            period_ends_at=renewal.period_ends_at,
            # R16, R27: a renewal bought through a partner's quote is billed as quoted.
            quote_id=request.quote_id if request else None,
            priced_lines=request.priced_lines if request else [],
        ),
        at,
    )


async def renew(
    uow: UnitOfWork, sub: Subscription, renewal: Renewal, at: datetime, reason: str
) -> None:
    """The term is renewed (on payment, or on issue for pay-by-invoice, R25): new dates that
    keep the original anniversary (R27), pending changes take effect (R28, R29); a lapsed
    subscription returns to Active (R32, R33). Cancelled refuses (R34)."""
    refusal = domain.renewal_refusal(sub, renewal, at)
    if refusal is not None:
        log.info("renewal %s of %s not applied: %s", renewal.renewal_id, sub.id, refusal)
        return
    term = domain.renewed_term(sub, renewal, at, reason)
    await uow.repo.start_term(sub.id, term)
    await uow.repo.mark_renewed(renewal.renewal_id, at)
    renewed = domain.with_term(sub, term)
    consequences = Consequences()
    consequences.announce(
        sub,
        SubscriptionRenewed(
            renewal_id=renewal.renewal_id,
            offering=term.offering,
            term=term.term,
            seats=term.seats,
            starts_at=term.starts_at,
            expires_at=term.expires_at,
            renews_at=term.renews_at,
        ),
        at,
    )
    if sub.stage != "active":  # lapsed (or cancelled after it was paid in time): back
        consequences.reactivated(sub, at, reason, renewed)
    consequences.term_timers(renewed, at)
    await consequences.record(uow)


# --- events ---------------------------------------------------------------------------------


async def remember_roles(uow: UnitOfWork, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
    """Who is who in the account (R8: what each role sees here)."""
    await uow.repo.remember_roles(account_id, snapshot)


@dataclass(frozen=True)
class Activated:
    """A subscription activated now; ``waited_for``: whether some event waits for the cause
    the caller named (``None`` asked: True, release to be sure)."""

    waited_for: bool = True


async def activate(
    uow: UnitOfWork, account_id: uuid.UUID, order: OrderPlaced, *, releases: str | None = None
) -> Activated | None:
    """Activate the subscription with its term dates in the purchase's time zone (R23); a
    trial is an active trial of 30 days (R17 [ours]). None when it was activated already.
    ``releases``: the cause the caller releases next, asked about in the insert's round trip
    (issue 17)."""
    dates = domain.first_term_dates(order.placed_at, order.term, order.time_zone, trial=order.trial)
    activated_at = await uow.time.now(account_id)  # business time: its test clock, if any
    sub = Subscription(
        id=order.subscription_id,
        account_id=account_id,
        order_id=order.order_id,
        offering=order.offering,
        term=order.term,
        seats=order.seats,
        time_zone=order.time_zone,
        auto_renew=order.auto_renew,
        stage="active",
        anniversary=domain.purchase_day(order.placed_at, order.time_zone),
        starts_at=dates.starts_at,
        expires_at=dates.expires_at,
        renews_at=dates.renews_at,
        activated_at=activated_at,
        payment_method=order.payment_method,
        channel=order.channel,
        trial=order.trial,
        stage_changed_at=activated_at,
    )
    inserted, waited_for = await uow.repo.insert_subscription_asking(sub, releases)
    if not inserted:
        return None
    consequences = Consequences()
    consequences.announce(
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
        activated_at,
    )
    consequences.term_timers(sub, order.placed_at)
    await consequences.record(uow)
    return Activated(waited_for=waited_for or releases is None)


async def convert_trial(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, converted: TrialConverted
) -> None:
    """R17: the same subscription, now paid; its paid term starts at the conversion."""
    sub = await current(uow, subscription_id, converted.converted_at)
    if sub is None or not domain.converts(sub, converted.converted_at):
        return
    term = domain.converted_term(sub, converted.term, converted.seats, converted.converted_at)
    await uow.repo.start_term(sub.id, term)
    await uow.repo.remember_billing(sub.id, converted.payment_method, None)
    paid = domain.with_term(sub, term)
    consequences = Consequences()
    consequences.announce(
        sub,
        SubscriptionActivated(
            order_id=converted.order_id,
            offering=sub.offering,
            term=converted.term,
            seats=converted.seats,
            time_zone=sub.time_zone,
            starts_at=term.starts_at,
            expires_at=term.expires_at,
            renews_at=term.renews_at,
            auto_renew=sub.auto_renew,
        ),
        await uow.time.now(sub.account_id),  # business time: its test clock, if any
    )
    if sub.stage != "active":  # its end was applied before the conversion made in time
        consequences.reactivated(sub, converted.converted_at, "trial_converted", paid)
    consequences.term_timers(paid, converted.converted_at)
    await consequences.record(uow)


async def change_renewal_payment_method(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, changed: RenewalPaymentMethodChanged
) -> None:
    """R14 judged by ordering, trusted here: the next RenewalDue carries the method chosen, so a
    renewal switched to pay-by-invoice is renewed on issue (R25) and billed net 30."""
    sub = await current(uow, subscription_id, changed.changed_at)
    if sub is None or domain.is_final(sub.stage):
        return
    await uow.repo.remember_billing(sub.id, changed.payment_method, None)


async def change_auto_renew(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, change: AutoRenewChanged
) -> None:
    """R24: off -> reminders (R26), no renewal; on -> renewal. Turned back on while Expired or
    Suspended, the lapsed term is billed (R27) and its payment reactivates."""
    sub = await current(uow, subscription_id, change.changed_at)
    if sub is None or domain.is_final(sub.stage):
        return
    await uow.repo.set_auto_renew(sub.id, change.auto_renew)
    sub = await current(uow, sub.id, change.changed_at)  # off after the renewal date: lapses
    if sub is None:
        return
    consequences = Consequences()
    if sub.stage == "active":
        consequences.term_timers(sub, change.changed_at)
    elif change.auto_renew and domain.may_reactivate(sub.stage):
        await announce_renewal(uow, consequences, sub, change.changed_at)
    await consequences.record(uow)


async def schedule_term_change(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, change: TermChangeScheduled
) -> None:
    """R28: pending until the next renewal; None withdraws it."""
    sub = await current(uow, subscription_id, change.effective_at)
    if sub is not None and not domain.is_final(sub.stage):
        await uow.repo.set_pending_term(sub.id, change.new_term)


async def schedule_product_switch(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, switch: ProductSwitchScheduled
) -> None:
    """R29: pending until the renewal date; None withdraws it."""
    sub = await current(uow, subscription_id, switch.effective_at)
    if sub is not None and not domain.is_final(sub.stage):
        await uow.repo.set_pending_offering(sub.id, switch.new_offering)


async def add_seats(uow: UnitOfWork, subscription_id: uuid.UUID | None, added: SeatsAdded) -> None:
    """R30: co-termed licences; the subscription now counts ``total_seats``."""
    sub = await current(uow, subscription_id, added.prorate_from)
    if sub is not None and not domain.is_final(sub.stage):
        await uow.repo.set_seats(sub.id, added.total_seats)


async def request_renewal(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, request: RenewalRequested
) -> None:
    """R27: a manual or late renewal is billed like the automatic one (``RenewalDue``, same
    renewal id for the same term); Cancelled refuses (R34)."""
    sub = await current(uow, subscription_id, request.requested_at)
    if sub is None or domain.is_final(sub.stage):
        log.warning("renewal request %s refused: no live subscription", request.request_id)
        return
    await uow.repo.remember_billing(sub.id, request.payment_method, request.channel)
    consequences = Consequences()
    await announce_renewal(uow, consequences, sub, request.requested_at, request)
    await consequences.record(uow)


async def record_invoice(uow: UnitOfWork, named: uuid.UUID | None, issued: InvoiceIssued) -> bool:
    """R25: a pay-by-invoice renewal is renewed on issue; R31: an invoice unpaid at the end of
    its due date starts the expiry process. False when its subscription is not known yet (its
    order was not read yet: the caller keeps the event until it is)."""
    invoice = Invoice(
        invoice_id=issued.invoice_id,
        subscription_id=uuid.UUID(int=0),  # the one found (``subscription_for``)
        purpose=issued.purpose,
        payment_method=issued.payment_method,
        renewal_id=issued.renewal_id,
        due_date=issued.due_date,
    )
    subscription_id = await uow.repo.file_invoice(invoice, named, issued.order_id)
    if subscription_id is None:
        return False
    if issued.payment_method != "invoice":
        return True  # card and PayPal: InvoicePaid or PaymentFailed decides
    sub = await current(uow, subscription_id, issued.issued_at)
    if sub is None or domain.is_final(sub.stage):
        return True
    if issued.purpose == "renewal" and issued.renewal_id is not None:
        renewal = await uow.repo.get_renewal(issued.renewal_id)
        if renewal is not None:
            await renew(uow, sub, renewal, issued.issued_at, "renewal_invoiced")
    overdue_at = domain.invoice_overdue_at(issued.due_date, sub.time_zone)
    await uow.repo.schedule_timers(
        [TimerRequest(INVOICE_OVERDUE, str(issued.invoice_id), overdue_at, sub.account_id, None)]
    )
    return True


async def record_payment(uow: UnitOfWork, named: uuid.UUID | None, paid: InvoicePaid) -> bool:
    """A paid renewal renews (R25); payment during Expired or Suspended reactivates (R32,
    R33) unless the subscription is Cancelled (R34) or another invoice is overdue (R31).
    False when its subscription is not known yet: the payment waits for it, so a first purchase
    paid before its order was read still cancels the R31 timer of a declined first charge."""
    # marked paid, its R31 timer dropped (when the invoice is known)
    overdue = [(INVOICE_OVERDUE, str(paid.invoice_id))]
    invoice = await uow.repo.pay_invoice(paid.invoice_id, paid.paid_at, overdue)
    subscription_id = (
        invoice.subscription_id if invoice else await subscription_for(uow, named, paid.renewal_id)
    )
    if subscription_id is None:
        return False
    sub = await current(uow, subscription_id, paid.paid_at)
    if sub is None:
        return False
    if domain.refuses_after_cancellation(sub, paid.paid_at):
        log.warning("payment of %s refused: %s is cancelled (R34)", paid.invoice_id, sub.id)
        return True
    renewal_id = paid.renewal_id or (invoice.renewal_id if invoice else None)
    renewal = await uow.repo.get_renewal(renewal_id) if renewal_id else None
    if renewal is not None and renewal.renewed_at is None:
        await renew(uow, sub, renewal, paid.paid_at, "renewal_paid")
        return True
    unpaid = await uow.repo.unpaid_invoice_dues(sub.id, paid.paid_at)
    if domain.another_invoice_overdue(unpaid, sub.time_zone, paid.paid_at):
        return True  # R31: paying this one is not enough
    if domain.reactivates_on_payment(sub, paid.paid_at):
        await uow.repo.reactivate(sub.id, paid.paid_at, "invoice_paid")
        consequences = Consequences()
        consequences.reactivated(sub, paid.paid_at, "invoice_paid", sub)
        consequences.term_timers(sub, paid.paid_at)
        await consequences.record(uow)
    return True


async def charge_failed(uow: UnitOfWork, named: uuid.UUID | None, failed: PaymentFailed) -> bool:
    """A card/PayPal charge failed; invoicing retries it (R37, every purpose) and a later
    payment reactivates (R32, R33).

    - A renewal's: the renewal date has come, so the subscription is Expired at once (R37).
    - Any other (the first purchase's, an installment's, a co-term's): the charge at issue failed
      on the invoice's due date (R21: the issue day), so the invoice is unpaid and R31 starts
      when that day ends, exactly as for an unpaid pay-by-invoice invoice (``invoice_overdue``)
      [ours, issue 11: a declined first purchase is activated but lapses from its due date; it
      never keeps a full term unpaid].

    False when its subscription is not known yet (the caller keeps the event until it is)."""
    invoice = await uow.repo.get_invoice(failed.invoice_id)
    subscription_id = invoice.subscription_id if invoice else await subscription_for(uow, named)
    sub = await current(uow, subscription_id, failed.failed_at)
    if sub is None:
        return False
    if failed.purpose == "renewal":
        if domain.charge_failure_lapses(sub, failed.failed_at):
            first = domain.lapse(sub.state, sub.renews_at, "payment_failed")
            consequences = Consequences()
            consequences.stage_steps(sub, domain.steps_until(sub.state, failed.failed_at, first))
            await consequences.record(uow)
        return True
    if failed.attempt != 1 or domain.is_final(sub.stage):
        return True  # a retry failing again: R31 is already on its way
    due_date = invoice.due_date if invoice else local_date(failed.failed_at, sub.time_zone)
    overdue_at = domain.invoice_overdue_at(due_date, sub.time_zone)
    await uow.repo.schedule_timers(
        [TimerRequest(INVOICE_OVERDUE, str(failed.invoice_id), overdue_at, sub.account_id, None)]
    )
    return True


async def refund(
    uow: UnitOfWork, subscription_id: uuid.UUID | None, refund: RefundApproved
) -> None:
    """R39: a refund ends all access at once."""
    sub = await current(uow, subscription_id, refund.approved_at)
    if sub is None or domain.is_final(sub.stage):
        return
    step = domain.StageStep(sub.stage, "cancelled", refund.approved_at, "refunded", None)
    consequences = Consequences()
    consequences.stage_steps(sub, [step])
    await consequences.record(uow)


# --- timers (each at its due time) ------------------------------------------------------------

Due = tuple[uuid.UUID, datetime]  # (subscription id, due time)


async def at_renewal_dates(uow: UnitOfWork, due: list[Due]) -> None:
    """The renewal date: auto-renew on -> ``RenewalDue`` (R25); off -> Expired (R24, R31), or
    Cancelled for the offerings of R36."""
    subs = await uow.repo.lock_subscriptions([subscription_id for subscription_id, _ in due])
    consequences = Consequences()
    for subscription_id, due_at in due:
        sub = subs.get(subscription_id)
        if sub is None or sub.stage != "active" or sub.renews_at != due_at:
            continue  # a stale timer: the term moved on
        if domain.renews_itself(sub.state):
            await announce_renewal(uow, consequences, sub, due_at)
        else:
            consequences.stage_steps(sub, domain.steps_until(sub.state, due_at))
    await consequences.record(uow)


async def at_stage_boundaries(uow: UnitOfWork, due: list[Due]) -> None:
    """Expired -> Suspended -> Cancelled (R32-R34)."""
    subs = await uow.repo.lock_subscriptions([subscription_id for subscription_id, _ in due])
    consequences = Consequences()
    for subscription_id, due_at in due:
        sub = subs.get(subscription_id)
        if sub is not None:
            consequences.stage_steps(sub, domain.steps_until(sub.state, due_at))
    await consequences.record(uow)


async def open_renewal_window(
    uow: UnitOfWork, subscription_id: uuid.UUID, due_at: datetime
) -> None:
    """R26: the buyer is told when a renewal can be bought (90 days before)."""
    sub = await uow.repo.get_subscription(subscription_id)
    if sub is None or sub.stage != "active":
        return
    if domain.renewal_window_opens_at(sub.renews_at, sub.time_zone) != due_at:
        return
    await uow.events.emit(
        RenewalWindowOpened(
            renews_at=sub.renews_at, expires_at=sub.expires_at, auto_renew=sub.auto_renew
        ),
        account_id=sub.account_id,
        subscription_id=sub.id,
        occurred_at=due_at,
    )


async def remind_of_renewal(
    uow: UnitOfWork, subscription_id: uuid.UUID, days_before: int, due_at: datetime
) -> None:
    """R26: reminders 45, 30 and 4 days before expiry while auto-renew is off."""
    sub = await uow.repo.get_subscription(subscription_id)
    if sub is None or sub.stage != "active" or domain.renews_itself(sub.state):
        return
    if domain.reminder_times(sub.expires_at, sub.time_zone).get(days_before) != due_at:
        return
    await uow.events.emit(
        RenewalReminderDue(days_before=days_before, expires_at=sub.expires_at),
        account_id=sub.account_id,
        subscription_id=sub.id,
        occurred_at=due_at,
    )


async def invoice_overdue(uow: UnitOfWork, invoice_id: uuid.UUID, due_at: datetime) -> None:
    """R31: an invoice still unpaid when its due date has ended starts the expiry process
    (unless the expiry date came first): a pay-by-invoice invoice (net 30, R21), or a card/PayPal
    charge declined at issue (its due date is the issue day)."""
    invoice = await uow.repo.get_invoice(invoice_id)
    if invoice is None or invoice.paid_at is not None:
        return
    sub = await uow.repo.lock_subscription(invoice.subscription_id)
    if sub is None or sub.stage != "active":
        return
    first = domain.lapse(sub.state, due_at, "invoice_unpaid")
    consequences = Consequences()
    consequences.stage_steps(sub, domain.steps_until(sub.state, due_at, first))
    await consequences.record(uow)


# --- what the door reads (R8) -----------------------------------------------------------------


async def roles_of(uow: UnitOfWork, caller: Principal, account_id: uuid.UUID) -> set[str]:
    if caller.kind == "operator":
        return {"operator"}
    if caller.kind != "user":
        return set()
    return await uow.repo.roles_of(account_id, caller.subject)


async def view_subscription(
    uow: UnitOfWork, caller: Principal, subscription_id: uuid.UUID
) -> SubscriptionView:
    """R8: the buyer's view (term, dates, renewal) or the product view."""
    sub = await uow.repo.get_subscription(subscription_id)
    if sub is None:
        raise not_found("subscription")
    roles = await roles_of(uow, caller, sub.account_id)
    people.check_role(roles, domain.READERS, "subscription")
    return view_for(roles, sub)


async def list_subscriptions(
    uow: UnitOfWork, caller: Principal, account_id: uuid.UUID
) -> SubscriptionList:
    roles = await roles_of(uow, caller, account_id)
    people.check_role(roles, domain.READERS, "account")
    subs = await uow.repo.list_subscriptions(account_id)
    return SubscriptionList(items=[view_for(roles, sub) for sub in subs])
