"""Lifecycle's use cases through ``service.py`` over in-memory fakes: no database, no broker.

The fakes keep what the real repository keeps (subscriptions, renewals, invoices, timers) as
plain dicts; ``RecordedEvents`` keeps what would go to the outbox. The integration tests
(tests/integration/test_lifecycle_stages.py) run the same use cases over PostgreSQL and Kafka's
consuming path.
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from services.lifecycle import domain, service, test_clocks
from services.lifecycle.consequences import (
    INVOICE_OVERDUE,
    RENEWAL_DATE,
    RENEWAL_REMINDER,
    STAGE_BOUNDARY,
)
from services.lifecycle.domain import Invoice, NewTerm, Renewal, Subscription
from services.lifecycle.repository import StageChange, TestClock, TimerKey, UnitOfWork
from services.lifecycle.schemas import Advance, NewClock, SubscriptionFull, SubscriptionProduct
from shared.auth import Principal
from shared.contracts import (
    AutoRenewChanged,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    PricedLine,
    RefundApproved,
    RenewalRequested,
    RolesChanged,
    TermChangeScheduled,
    TrialConverted,
)
from shared.errors import Forbidden, Invalid, NotFound
from shared.people import roles_by_person
from shared.time.calendar import local_midnight
from shared.time.clock import FrozenClock
from shared.timers import TimerRequest
from shared.unit_of_work import FixedTime, RecordedEvents

OSLO = "Europe/Oslo"
SECOND = timedelta(seconds=1)
BOUGHT = datetime(2024, 6, 10, 10, 0, tzinfo=UTC)  # 12:00 in Oslo


def oslo(day: date) -> datetime:
    return local_midnight(day, OSLO)


class FakeRepository:
    """``Repository`` in memory."""

    def __init__(self) -> None:
        self.subscriptions: dict[uuid.UUID, Subscription] = {}
        self.renewals: dict[uuid.UUID, Renewal] = {}
        self.invoices: dict[uuid.UUID, Invoice] = {}
        self.timers: dict[TimerKey, TimerRequest] = {}
        self.roles: dict[tuple[uuid.UUID, uuid.UUID], set[str]] = {}
        self.clocks: dict[uuid.UUID, TestClock] = {}

    def _change(self, subscription_id: uuid.UUID, **changes: Any) -> None:
        sub = self.subscriptions[subscription_id]
        self.subscriptions[subscription_id] = dataclasses.replace(sub, **changes)

    async def insert_subscription(self, sub: Subscription) -> bool:
        if sub.id in self.subscriptions:
            return False
        self.subscriptions[sub.id] = sub
        return True

    async def insert_subscription_asking(
        self, sub: Subscription, cause: str | None
    ) -> tuple[bool, bool]:
        return await self.insert_subscription(sub), True

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        return self.subscriptions.get(subscription_id)

    lock_subscription = get_subscription

    async def lock_subscriptions(
        self, subscription_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Subscription]:
        return {i: self.subscriptions[i] for i in subscription_ids if i in self.subscriptions}

    async def subscription_of_order(self, order_id: uuid.UUID) -> uuid.UUID | None:
        found = [s.id for s in self.subscriptions.values() if s.order_id == order_id]
        return found[0] if found else None

    async def list_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.account_id == account_id]

    async def save_stages(self, changes: list[StageChange]) -> None:
        for c in changes:
            self._change(
                c.subscription_id,
                stage=c.stage,
                stage_changed_at=c.changed_at,
                next_stage_at=c.next_stage_at,
                stage_reason=c.reason,
            )

    async def set_auto_renew(self, subscription_id: uuid.UUID, auto_renew: bool) -> None:
        self._change(subscription_id, auto_renew=auto_renew)

    async def set_pending_term(self, subscription_id: uuid.UUID, term: str | None) -> None:
        self._change(subscription_id, pending_term=term)

    async def set_pending_offering(self, subscription_id: uuid.UUID, offering: str | None) -> None:
        self._change(subscription_id, pending_offering=offering)

    async def set_seats(self, subscription_id: uuid.UUID, seats: int) -> None:
        self._change(subscription_id, seats=seats)

    async def remember_billing(
        self, subscription_id: uuid.UUID, payment_method: str, channel: str | None
    ) -> None:
        sub = self.subscriptions[subscription_id]
        self._change(subscription_id, payment_method=payment_method, channel=channel or sub.channel)

    async def start_term(self, subscription_id: uuid.UUID, term: NewTerm) -> None:
        self.subscriptions[subscription_id] = domain.with_term(
            self.subscriptions[subscription_id], term
        )

    async def reactivate(self, subscription_id: uuid.UUID, at: datetime, reason: str) -> None:
        self._change(
            subscription_id,
            stage="active",
            stage_changed_at=at,
            stage_reason=reason,
            next_stage_at=None,
        )

    async def upsert_renewal(self, renewal: Renewal) -> None:
        known = self.renewals.get(renewal.renewal_id)
        if known is None or known.renewed_at is None:
            self.renewals[renewal.renewal_id] = renewal

    async def get_renewal(self, renewal_id: uuid.UUID) -> Renewal | None:
        return self.renewals.get(renewal_id)

    async def mark_renewed(self, renewal_id: uuid.UUID, at: datetime) -> None:
        self.renewals[renewal_id] = dataclasses.replace(self.renewals[renewal_id], renewed_at=at)

    async def upsert_invoice(self, invoice: Invoice) -> None:
        self.invoices.setdefault(invoice.invoice_id, invoice)

    async def file_invoice(
        self, invoice: Invoice, named: uuid.UUID | None, order_id: uuid.UUID | None
    ) -> uuid.UUID | None:
        found = None  # as service.subscription_for finds it
        if invoice.renewal_id is not None:
            renewal = await self.get_renewal(invoice.renewal_id)
            found = renewal.subscription_id if renewal else None
        if found is None and named is not None and await self.get_subscription(named):
            found = named
        if found is None and order_id is not None:
            found = await self.subscription_of_order(order_id)
        if found is not None:
            await self.upsert_invoice(dataclasses.replace(invoice, subscription_id=found))
        return found

    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        return self.invoices.get(invoice_id)

    async def pay_invoice(
        self, invoice_id: uuid.UUID, at: datetime, cancel: list[TimerKey]
    ) -> Invoice | None:
        if invoice_id not in self.invoices:
            return None
        await self.mark_invoice_paid(invoice_id, at)
        await self.cancel_timers(cancel)
        return self.invoices[invoice_id]

    async def unpaid_invoice_dues(
        self, subscription_id: uuid.UUID, paid_at: datetime
    ) -> list[date]:
        return [
            i.due_date
            for i in self.invoices.values()
            if i.subscription_id == subscription_id
            and i.payment_method == "invoice"
            and (i.paid_at is None or i.paid_at > paid_at)
        ]

    async def mark_invoice_paid(self, invoice_id: uuid.UUID, at: datetime) -> None:
        invoice = self.invoices[invoice_id]
        self.invoices[invoice_id] = dataclasses.replace(invoice, paid_at=invoice.paid_at or at)

    async def schedule_timers(
        self, timers: list[TimerRequest], cancel: list[TimerKey] | None = None
    ) -> None:
        await self.cancel_timers(cancel or [])
        self.timers.update({(t.kind, t.key): t for t in timers})

    async def cancel_timers(self, timers: list[TimerKey]) -> None:
        for timer in timers:
            self.timers.pop(timer, None)

    async def remember_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        for user_id, (_, roles) in roles_by_person(snapshot).items():
            self.roles[(account_id, user_id)] = roles

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return self.roles.get((account_id, user_id), set())

    async def insert_test_clock(self, clock: TestClock) -> None:
        self.clocks[clock.id] = clock

    async def get_test_clock(self, clock_id: uuid.UUID) -> TestClock | None:
        return self.clocks.get(clock_id)

    async def set_test_clock_target(self, clock_id: uuid.UUID, target: datetime) -> None:
        clock = self.clocks[clock_id]
        self.clocks[clock_id] = dataclasses.replace(clock, target=target, status="advancing")


class Lifecycle:
    """One account's lifecycle over the fakes, with a clock the test moves."""

    def __init__(self) -> None:
        self.clock = FrozenClock(BOUGHT)
        self.repo = FakeRepository()
        self.events = RecordedEvents("lifecycle", self.clock)
        self.uow = UnitOfWork(self.repo, self.events, FixedTime(self.clock))
        self.account = uuid.uuid4()

    def payloads(self, event_type: str) -> list[dict[str, Any]]:
        return [e.payload for e in self.events.emitted if e.event_type == event_type]

    def sub(self, subscription_id: uuid.UUID) -> Subscription:
        return self.repo.subscriptions[subscription_id]

    async def place(self, **changes: Any) -> uuid.UUID:
        order = OrderPlaced(
            order_id=uuid.uuid4(),
            order_number="ORD-1",
            subscription_id=uuid.uuid4(),
            offering="autocad",
            term="annual",
            seats=2,
            payment_method="card",
            channel="direct",
            billing_country="NO",
            currency="NOK",
            time_zone=OSLO,
            placed_at=BOUGHT,
            auto_renew=False,
            buyer_email="buyer@example.com",
        ).model_copy(update=changes)
        assert await service.activate(self.uow, self.account, order)
        return order.subscription_id

    async def renewal_date(self, subscription_id: uuid.UUID) -> None:
        """The renewal-date timer fires."""
        due = self.sub(subscription_id).renews_at
        await service.at_renewal_dates(self.uow, [(subscription_id, due)])

    async def issue(
        self, subscription_id: uuid.UUID, due: date, method: str = "card", **changes: Any
    ) -> InvoiceIssued:
        invoice = InvoiceIssued(
            invoice_id=uuid.uuid4(),
            invoice_number="INV-1",
            order_id=None,
            currency="NOK",
            net_total=Decimal("100.00"),
            vat_total=Decimal("25.00"),
            gross_total=Decimal("125.00"),
            lines=[],
            payment_method=method,
            issued_at=self.clock.now(),
            due_date=due,
        ).model_copy(update=changes)
        assert await service.record_invoice(self.uow, subscription_id, invoice)
        return invoice

    async def pay(self, subscription_id: uuid.UUID, invoice: InvoiceIssued, at: datetime) -> None:
        paid = InvoicePaid(
            invoice_id=invoice.invoice_id,
            invoice_number=invoice.invoice_number,
            paid_at=at,
            purpose=invoice.purpose,
            renewal_id=invoice.renewal_id,
        )
        await service.record_payment(self.uow, subscription_id, paid)


@pytest.fixture
def lc() -> Lifecycle:
    return Lifecycle()


async def test_r23_r26_activation_announces_the_term_and_schedules_its_timers(
    lc: Lifecycle,
) -> None:
    sub = await lc.place()
    [activated] = lc.payloads("SubscriptionActivated")
    assert datetime.fromisoformat(activated["renews_at"]) == oslo(date(2025, 6, 10))
    assert datetime.fromisoformat(activated["expires_at"]) == oslo(date(2025, 6, 10)) - SECOND
    assert lc.events.emitted[0].occurred_at == BOUGHT  # business time
    assert (RENEWAL_DATE, str(sub)) in lc.repo.timers
    reminders = [k for k, _ in lc.repo.timers if k == RENEWAL_REMINDER]
    assert len(reminders) == 3  # R26: auto-renew off -> 45, 30 and 4 days before expiry
    order = lc.repo.subscriptions[sub]
    again = OrderPlaced(
        order_id=order.order_id,
        order_number="ORD-1",
        subscription_id=sub,
        offering="autocad",
        term="annual",
        seats=2,
        payment_method="card",
        channel="direct",
        billing_country="NO",
        currency="NOK",
        time_zone=OSLO,
        placed_at=BOUGHT,
        buyer_email="buyer@example.com",
    )
    assert not await service.activate(lc.uow, lc.account, again)  # once
    assert lc.events.types() == ["SubscriptionActivated"]


async def test_r24_r31_r32_not_renewed_lapses_at_the_renewal_date(lc: Lifecycle) -> None:
    sub = await lc.place()
    await lc.renewal_date(sub)
    [change] = lc.payloads("StageChanged")
    assert (change["from_stage"], change["to_stage"], change["reason"]) == (
        "active",
        "expired",
        "not_renewed",
    )
    assert lc.sub(sub).next_stage_at == oslo(date(2025, 6, 25))  # R32: 15 days
    assert lc.repo.timers[(STAGE_BOUNDARY, str(sub))].due_at == oslo(date(2025, 6, 25))


async def test_r25_r28_r29_renewal_due_applies_pending_changes_once_per_date(
    lc: Lifecycle,
) -> None:
    sub = await lc.place(auto_renew=True)
    change = TermChangeScheduled(new_term="monthly", effective_at=BOUGHT)
    await service.schedule_term_change(lc.uow, sub, change)
    await lc.renewal_date(sub)
    await lc.renewal_date(sub)  # a timer firing twice announces the same renewal
    first, second = lc.payloads("RenewalDue")
    assert (
        first["renewal_id"]
        == second["renewal_id"]
        == str(domain.renewal_id(sub, oslo(date(2025, 6, 10))))
    )
    assert first["term"] == "monthly"  # R28
    assert datetime.fromisoformat(first["period_ends_at"]) == oslo(date(2025, 7, 10)) - SECOND
    assert lc.sub(sub).term == "annual"  # nothing changes before payment


async def test_r25_r27_payment_renews_once_keeping_the_anniversary(lc: Lifecycle) -> None:
    """The next renewal is one second after the new expiry (local midnight)."""
    sub = await lc.place(auto_renew=True)
    await lc.renewal_date(sub)
    [due] = lc.payloads("RenewalDue")
    invoice = await lc.issue(
        sub, date(2025, 6, 10), purpose="renewal", renewal_id=uuid.UUID(due["renewal_id"])
    )
    at = oslo(date(2025, 6, 10)) + timedelta(minutes=1)
    await lc.pay(sub, invoice, at)
    await lc.pay(sub, invoice, at)  # redelivered
    renewed = lc.sub(sub)
    assert renewed.renews_at == oslo(date(2026, 6, 10))
    assert renewed.renews_at == renewed.expires_at + SECOND
    assert len(lc.payloads("SubscriptionRenewed")) == 1


async def test_r37_r33_failed_charge_lapses_and_a_later_payment_reactivates(
    lc: Lifecycle,
) -> None:
    sub = await lc.place(auto_renew=True)
    await lc.renewal_date(sub)
    [due] = lc.payloads("RenewalDue")
    invoice = await lc.issue(
        sub, date(2025, 6, 10), purpose="renewal", renewal_id=uuid.UUID(due["renewal_id"])
    )
    failed_at = oslo(date(2025, 6, 10)) + timedelta(minutes=1)
    failed = PaymentFailed(
        invoice_id=invoice.invoice_id,
        amount=Decimal("125.00"),
        currency="NOK",
        method="card",
        reason="card_declined",
        failed_at=failed_at,
        purpose="renewal",
    )
    await service.charge_failed(lc.uow, sub, failed)
    assert (lc.sub(sub).stage, lc.sub(sub).stage_reason) == ("expired", "payment_failed")
    await lc.pay(sub, invoice, oslo(date(2025, 7, 1)))  # R33: Suspended by then
    assert lc.sub(sub).stage == "active"
    [reactivated] = lc.payloads("SubscriptionReactivated")
    assert reactivated["from_stage"] == "suspended"
    assert lc.payloads("StageChanged")[-1]["to_stage"] == "active"


async def test_r34_payment_after_cancellation_is_refused(lc: Lifecycle) -> None:
    sub = await lc.place(auto_renew=True)
    await lc.renewal_date(sub)
    [due] = lc.payloads("RenewalDue")
    invoice = await lc.issue(
        sub, date(2025, 6, 10), purpose="renewal", renewal_id=uuid.UUID(due["renewal_id"])
    )
    failed = PaymentFailed(
        invoice_id=invoice.invoice_id,
        amount=Decimal("125.00"),
        currency="NOK",
        method="card",
        reason="card_declined",
        failed_at=oslo(date(2025, 6, 10)),
        purpose="renewal",
    )
    await service.charge_failed(lc.uow, sub, failed)
    closed = oslo(date(2025, 7, 25))
    await lc.pay(sub, invoice, closed + SECOND)  # caught up to Cancelled first
    assert lc.sub(sub).stage == "cancelled"
    assert lc.payloads("SubscriptionRenewed") == []
    assert [c["to_stage"] for c in lc.payloads("StageChanged")] == [
        "expired",
        "suspended",
        "cancelled",
    ]
    assert not [k for k in lc.repo.timers if k[1].startswith(str(sub))]  # none left


async def test_r31_paying_one_of_two_overdue_invoices_does_not_reactivate(lc: Lifecycle) -> None:
    sub = await lc.place(payment_method="invoice")
    first = await lc.issue(sub, date(2024, 7, 10), "invoice", purpose="co_term")
    second = await lc.issue(sub, date(2024, 7, 12), "invoice", purpose="co_term")
    await service.invoice_overdue(lc.uow, first.invoice_id, oslo(date(2024, 7, 11)))
    assert (lc.sub(sub).stage, lc.sub(sub).stage_reason) == ("expired", "invoice_unpaid")
    await lc.pay(sub, first, oslo(date(2024, 7, 13)))
    assert lc.sub(sub).stage == "expired"  # the second is overdue too
    assert (INVOICE_OVERDUE, str(first.invoice_id)) not in lc.repo.timers
    await lc.pay(sub, second, oslo(date(2024, 7, 14)))
    assert lc.sub(sub).stage == "active"
    [reactivated] = lc.payloads("SubscriptionReactivated")
    assert reactivated["reason"] == "invoice_paid"


async def test_r31_an_invoice_of_an_unknown_subscription_waits(lc: Lifecycle) -> None:
    """The handler turns False into ``WaitForCause("subscription:<id>")``."""
    invoice = InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="INV-1",
        order_id=uuid.uuid4(),
        currency="NOK",
        net_total=Decimal("100.00"),
        vat_total=Decimal("25.00"),
        gross_total=Decimal("125.00"),
        lines=[],
        payment_method="invoice",
        issued_at=BOUGHT,
        due_date=date(2024, 7, 10),
    )
    assert not await service.record_invoice(lc.uow, uuid.uuid4(), invoice)
    assert lc.repo.invoices == {} and lc.events.emitted == []


async def test_r24_turning_auto_renew_on_drops_the_reminders(lc: Lifecycle) -> None:
    sub = await lc.place()
    change = AutoRenewChanged(auto_renew=True, changed_at=BOUGHT + timedelta(days=1))
    await service.change_auto_renew(lc.uow, sub, change)
    assert not [k for k, _ in lc.repo.timers if k == RENEWAL_REMINDER]
    await lc.renewal_date(sub)
    assert len(lc.payloads("RenewalDue")) == 1


async def test_r39_refund_cancels_at_once_and_nothing_is_due_any_more(lc: Lifecycle) -> None:
    sub = await lc.place(auto_renew=True)
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=BOUGHT,
        reason="changed mind",
        approved_at=BOUGHT + timedelta(days=3),
    )
    await service.refund(lc.uow, sub, refund)
    [change] = lc.payloads("StageChanged")
    assert (change["to_stage"], change["reason"]) == ("cancelled", "refunded")
    assert lc.repo.timers == {}


async def test_r17_trial_converts_in_place(lc: Lifecycle) -> None:
    sub = await lc.place(term="monthly", trial=True)
    converted_at = BOUGHT + timedelta(days=10)
    conversion = TrialConverted(
        order_id=uuid.uuid4(),
        order_number="ORD-7",
        term="annual",
        seats=4,
        payment_method="card",
        converted_at=converted_at,
    )
    await service.convert_trial(lc.uow, sub, conversion)
    paid = lc.sub(sub)
    assert (paid.trial, paid.term, paid.seats) == (False, "annual", 4)
    assert paid.renews_at == oslo(date(2025, 6, 20))
    assert [a["trial"] for a in lc.payloads("SubscriptionActivated")] == [True, False]


async def test_r8_r35_each_role_sees_its_part(lc: Lifecycle) -> None:
    sub = await lc.place()
    buyer, admin, payer, stranger = (uuid.uuid4() for _ in range(4))
    lc.repo.roles.update(
        {
            (lc.account, buyer): {"buyer", "primary_admin"},
            (lc.account, admin): {"secondary_admin"},
            (lc.account, payer): {"payer"},
        }
    )

    def user(subject: uuid.UUID) -> Principal:
        return Principal(subject=subject, kind="user", account_id=lc.account)

    full = await service.view_subscription(lc.uow, user(buyer), sub)
    assert isinstance(full, SubscriptionFull) and full.entitlements["product_access"] == "full"
    product = await service.view_subscription(lc.uow, user(admin), sub)
    assert type(product) is SubscriptionProduct
    listed = await service.list_subscriptions(lc.uow, user(admin), lc.account)
    assert listed.items == [product]
    with pytest.raises(Forbidden) as refused:
        await service.view_subscription(lc.uow, user(payer), sub)
    assert (refused.value.slug, refused.value.rule) == ("role-required", "R8")
    with pytest.raises(NotFound):  # R8: ids leak nothing
        await service.view_subscription(lc.uow, user(stranger), sub)


async def test_test_clocks_are_for_operators_and_only_move_forward(lc: Lifecycle) -> None:
    operator = Principal(subject=uuid.uuid4(), kind="operator", account_id=None)
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    clock = await test_clocks.create_test_clock(lc.uow, operator, NewClock(frozen_time=t0))
    assert (clock.now, clock.status, clock.step) == (t0, "advancing", 0)
    with pytest.raises(Forbidden):
        user = Principal(subject=uuid.uuid4(), kind="user", account_id=None)
        await test_clocks.get_test_clock(lc.uow, user, clock.id)
    later = t0 + timedelta(days=10)
    moved = await test_clocks.advance_test_clock(lc.uow, operator, clock.id, Advance(to=later))
    assert moved.target == later
    with pytest.raises(Invalid) as back:
        await test_clocks.advance_test_clock(lc.uow, operator, clock.id, Advance(to=t0))
    assert back.value.slug == "clock-forward-only"


async def test_r31_r32_a_declined_first_purchase_lapses_when_its_due_date_ends(
    lc: Lifecycle,
) -> None:
    """Issue 11, defect 1: the order's card is declined at issue (due that day, R21); R31 starts
    at the end of that day, a retry that pays returns it to Active (R32), and a failed retry
    changes nothing more. An unknown subscription answers False (the event waits for it)."""
    sub = await lc.place(auto_renew=True)
    order_invoice = await lc.issue(sub, date(2024, 6, 10), purpose="order")
    declined = PaymentFailed(
        invoice_id=order_invoice.invoice_id,
        amount=Decimal("125.00"),
        currency="NOK",
        method="card",
        reason="card_declined",
        failed_at=BOUGHT,
        purpose="order",
    )
    assert await service.charge_failed(lc.uow, sub, declined)
    assert lc.sub(sub).stage == "active"
    overdue = lc.repo.timers[(INVOICE_OVERDUE, str(order_invoice.invoice_id))]
    assert overdue.due_at == oslo(date(2024, 6, 11))
    await service.invoice_overdue(lc.uow, order_invoice.invoice_id, overdue.due_at)
    assert (lc.sub(sub).stage, lc.sub(sub).stage_reason) == ("expired", "invoice_unpaid")
    retry = declined.model_copy(update={"attempt": 2, "failed_at": oslo(date(2024, 6, 11))})
    assert await service.charge_failed(lc.uow, sub, retry)
    assert lc.sub(sub).stage == "expired"
    await lc.pay(sub, order_invoice, oslo(date(2024, 6, 13)))  # the day-3 retry charged it
    assert lc.sub(sub).stage == "active"
    assert (INVOICE_OVERDUE, str(order_invoice.invoice_id)) not in lc.repo.timers
    assert not await service.charge_failed(
        lc.uow, uuid.uuid4(), declined.model_copy(update={"invoice_id": uuid.uuid4()})
    )


async def test_r17_a_trial_lasts_30_days_ends_cancelled_and_a_timely_conversion_still_counts(
    lc: Lifecycle,
) -> None:
    """Issue 11, defect 7: an annual trial ends 30 local days after its start day, straight to
    Cancelled (no Expired grace); a conversion made before the end but read after it converts
    in place all the same (business time decides)."""
    sub = await lc.place(term="annual", trial=True, seats=5)
    ends = oslo(date(2024, 7, 10))
    assert lc.sub(sub).renews_at == ends
    await service.at_renewal_dates(lc.uow, [(sub, ends)])
    assert (lc.sub(sub).stage, lc.sub(sub).stage_reason) == ("cancelled", "trial_ended")
    [ended] = lc.payloads("StageChanged")
    assert ended["entitlements"]["product_access"] == "none"
    conversion = TrialConverted(
        order_id=uuid.uuid4(),
        order_number="ORD-8",
        term="annual",
        seats=5,
        payment_method="card",
        converted_at=ends - SECOND,
    )
    await service.convert_trial(lc.uow, sub, conversion)
    assert (lc.sub(sub).stage, lc.sub(sub).trial) == ("active", False)
    assert lc.payloads("SubscriptionReactivated")[0]["reason"] == "trial_converted"
    late = conversion.model_copy(update={"order_id": uuid.uuid4(), "converted_at": ends})
    other = await lc.place(term="annual", trial=True)
    await service.at_renewal_dates(lc.uow, [(other, ends)])
    await service.convert_trial(lc.uow, other, late)
    assert (lc.sub(other).stage, lc.sub(other).trial) == ("cancelled", True)  # too late


async def test_r27_r16_r32_a_late_renewal_quote_is_billed_as_quoted_and_keeps_the_anniversary(
    lc: Lifecycle,
) -> None:
    """R27 [ours]: a partner's renewal quote accepted in the late window (Expired, R32): the
    RenewalDue of the lapsed renewal date carries the quote's line (R16); the pay-by-invoice
    invoice renews on issue (R25) from the original anniversary and returns it to Active."""
    sub = await lc.place()
    await lc.renewal_date(sub)  # auto-renew off: Expired (R31)
    assert lc.sub(sub).stage == "expired"
    accepted_at = oslo(date(2025, 6, 20)) + timedelta(hours=10)
    line = PricedLine(
        offering="autocad",
        term="annual",
        quantity=3,
        unit_price=Decimal("1234.50"),
        net_amount=Decimal("3703.50"),
    )
    quote_id = uuid.uuid4()
    request = RenewalRequested(
        request_id=uuid.uuid4(),
        kind="late",
        offering="autocad",
        term="annual",
        seats=3,
        payment_method="invoice",
        channel="partner",
        requested_at=accepted_at,
        quote_id=quote_id,
        priced_lines=[line],
    )
    await service.request_renewal(lc.uow, sub, request)
    [due] = lc.payloads("RenewalDue")
    assert (due["quote_id"], due["priced_lines"]) == (str(quote_id), [line.model_dump(mode="json")])
    assert datetime.fromisoformat(due["period_starts_at"]) == oslo(date(2025, 6, 10))
    lc.clock.advance(accepted_at - lc.clock.now())
    await lc.issue(
        sub,
        date(2025, 7, 20),
        method="invoice",
        purpose="renewal",
        renewal_id=uuid.UUID(due["renewal_id"]),
    )
    renewed = lc.sub(sub)
    assert (renewed.stage, renewed.seats, renewed.channel) == ("active", 3, "partner")
    assert renewed.starts_at == oslo(date(2025, 6, 10))  # R27: the original anniversary
    assert renewed.renews_at == oslo(date(2026, 6, 10))
    assert lc.payloads("SubscriptionReactivated")


async def test_r27_a_requested_renewal_keeps_what_was_bought_when_the_renewal_date_comes(
    lc: Lifecycle,
) -> None:
    """R27, R16: a renewal bought before its date (a partner quote for 5 seats, three-year)
    whose card charge has not succeeded yet is announced again at the renewal date as it was
    bought, not with the subscription's own 2 seats and annual term; renewing it gives the
    bought term."""
    sub = await lc.place(auto_renew=True)
    renews_at = lc.sub(sub).renews_at
    request = RenewalRequested(
        request_id=uuid.uuid4(),
        kind="manual",
        offering="autocad",
        term="three_year",
        seats=5,
        payment_method="card",
        channel="partner",
        requested_at=renews_at - timedelta(days=40),
        quote_id=uuid.uuid4(),
    )
    await service.request_renewal(lc.uow, sub, request)
    await lc.renewal_date(sub)  # the charge was declined meanwhile: nothing renewed yet
    first, again = lc.payloads("RenewalDue")
    assert first["renewal_id"] == again["renewal_id"]
    assert (again["seats"], again["term"]) == (5, "three_year")
    renewal = lc.repo.renewals[uuid.UUID(first["renewal_id"])]
    assert (renewal.seats, renewal.term) == (5, "three_year")


async def test_r24_a_timer_batch_emits_by_account_so_it_cannot_deadlock_with_a_consumer_batch(
    lc: Lifecycle,
) -> None:
    """Issue 17: subscriptions of several accounts reach their renewal date in one timer batch
    (date order); their events are emitted by account (sorted, as the consumer's batch takes
    the accounts' locks), each account's in its own order."""
    accounts = sorted((uuid.uuid4() for _ in range(3)), key=str, reverse=True)
    due: list[tuple[uuid.UUID, datetime]] = []
    for account in accounts:  # the batch's date order is the reverse of the accounts' order
        lc.account = account
        sub = await lc.place()
        due.append((sub, lc.sub(sub).renews_at))
    lc.events.emitted.clear()
    await service.at_renewal_dates(lc.uow, due)
    emitted = [e.account_id for e in lc.events.emitted]
    assert len(emitted) == 3
    assert emitted == sorted(accounts, key=str)
