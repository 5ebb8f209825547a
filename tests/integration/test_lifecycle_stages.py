"""The expiry process and renewals on real PostgreSQL, driven to the exact second.

Events go through lifecycle's real consuming path (``ConsumerRuntime.handle``: parse, inbox,
handler, outbox in one transaction) and timers through the real ``TimerLoop`` with a
``FrozenClock``; only Kafka is left out here (tests/integration/test_lifecycle_service.py and
test_lifecycle_crash.py cover it).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from services.lifecycle.app import SPEC
from services.lifecycle.domain import renewal_id
from services.lifecycle.handlers import BATCH_TIMERS, TIMERS, consumer
from shared.contracts import (
    PRODUCER_OF,
    AutoRenewChanged,
    Contract,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    PaymentFailed,
    ProductSwitchScheduled,
    RefundApproved,
    RenewalRequested,
    SeatsAdded,
    TermChangeScheduled,
    TrialConverted,
    new_envelope,
)
from shared.db import create_pool, migrate
from shared.messaging import ConsumerRuntime
from shared.outbox import Outbox
from shared.time.calendar import local_midnight
from shared.time.clock import FrozenClock
from shared.timers import TimerLoop
from shared.topics import Topics
from tests.support import Backing, create_database, drop_database, unique

pytestmark = pytest.mark.integration
OSLO = ZoneInfo("Europe/Oslo")
SECOND = timedelta(seconds=1)
BOUGHT = datetime(2024, 6, 10, 12, 0, tzinfo=OSLO)
R35 = {  # DOMAIN.md's table, written out here so the data file is checked against it
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


def oslo(day: date) -> datetime:
    return local_midnight(day, OSLO)


class DeadLetterRaiser:
    """Stands in for the dead-letter producer: a failing handler fails the test instead."""

    async def send_and_wait(self, topic: str, **kw: Any) -> None:
        raise AssertionError(dict(kw["headers"])["x-dlq-error"].decode())


class Lifecycle:
    def __init__(self, pool: asyncpg.Pool, clock: FrozenClock) -> None:
        topics = Topics(unique("t") + ".")
        self.pool, self.clock = pool, clock
        outbox = Outbox("lifecycle", topics, clock)
        self.consumer = ConsumerRuntime(
            consumer,
            pool=pool,
            outbox=outbox,
            clock=clock,
            producer=DeadLetterRaiser(),
            topics=topics,
            max_attempts=1,
            backoff_seconds=0,
        )
        self.timers = TimerLoop(
            pool, TIMERS, batch_handlers=BATCH_TIMERS, outbox=outbox, clock=clock, batch_size=50
        )

    async def deliver(
        self, payload: Contract, account_id: uuid.UUID, subscription_id: uuid.UUID | None = None
    ) -> str:
        now = self.clock.now()
        envelope = new_envelope(
            event=payload,
            producer=PRODUCER_OF[type(payload).__name__],
            account_id=account_id,
            subscription_id=subscription_id,
            occurred_at=now,
            recorded_at=now,
        )
        return await self.consumer.handle(envelope.model_dump_json().encode(), None)

    async def at(self, instant: datetime, fire: bool = True) -> None:
        """Move the clock to ``instant`` and fire everything due by then."""
        self.clock.advance(instant - self.clock.now())
        while fire and await self.timers.fire_due():
            pass

    async def sub(self, subscription_id: uuid.UUID) -> asyncpg.Record:
        row = await self.pool.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)
        assert row is not None
        return row

    async def events(self, event_type: str, subscription_id: uuid.UUID) -> list[dict[str, Any]]:
        rows = await self.pool.fetch(
            "SELECT body FROM outbox WHERE event_type = $1 ORDER BY id", event_type
        )
        bodies = [json.loads(bytes(r["body"])) for r in rows]
        return [b["payload"] for b in bodies if b["subscription_id"] == str(subscription_id)]

    async def place(
        self,
        *,
        term: str = "annual",
        offering: str = "autocad",
        auto_renew: bool = False,
        payment_method: str = "card",
        placed_at: datetime = BOUGHT,
        trial: bool = False,
    ) -> tuple[uuid.UUID, uuid.UUID]:
        account, subscription = uuid.uuid4(), uuid.uuid4()
        await self.at(placed_at)
        order = OrderPlaced(
            order_id=uuid.uuid4(),
            order_number="ORD-1",
            subscription_id=subscription,
            offering=offering,
            term=term,
            seats=2,
            payment_method=payment_method,
            channel="direct",
            billing_country="NO",
            currency="NOK",
            time_zone="Europe/Oslo",
            placed_at=placed_at,
            auto_renew=auto_renew,
            buyer_email="buyer@example.com",
            trial=trial,
        )
        assert await self.deliver(order, account, subscription) == "done"
        return account, subscription


@pytest.fixture
async def lc(backing: Backing) -> AsyncIterator[Lifecycle]:
    name = unique("test_lifecycle_stages_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn, size=4)
    await migrate(pool, SPEC.migrations)
    try:
        # UTC: a FrozenClock in a DST zone would add wall-clock time across a DST change.
        yield Lifecycle(pool, FrozenClock(BOUGHT.astimezone(UTC)))
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


def invoice_issued(renewal: uuid.UUID, method: str, due: date, at: datetime) -> InvoiceIssued:
    return InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="INV-9",
        order_id=None,
        currency="NOK",
        net_total=Decimal("100.00"),
        vat_total=Decimal("25.00"),
        gross_total=Decimal("125.00"),
        lines=[],
        payment_method=method,
        issued_at=at,
        due_date=due,
        purpose="renewal",
        renewal_id=renewal,
    )


def paid(invoice: InvoiceIssued, at: datetime) -> InvoicePaid:
    return InvoicePaid(
        invoice_id=invoice.invoice_id,
        invoice_number=invoice.invoice_number,
        paid_at=at,
        purpose="renewal",
        renewal_id=invoice.renewal_id,
    )


async def lapse_on_failed_charge(lc: Lifecycle) -> tuple[uuid.UUID, uuid.UUID, InvoiceIssued]:
    """An annual card subscription whose renewal charge fails on the renewal date (R37)."""
    account, sub = await lc.place(auto_renew=True)
    renews = oslo(date(2025, 6, 10))
    await lc.at(renews)
    [due] = await lc.events("RenewalDue", sub)
    assert due["renewal_id"] == str(renewal_id(sub, renews))
    invoice = invoice_issued(uuid.UUID(due["renewal_id"]), "card", date(2025, 6, 10), renews)
    assert await lc.deliver(invoice, account, sub) == "done"
    await lc.at(renews + timedelta(minutes=1))
    failed = PaymentFailed(
        invoice_id=invoice.invoice_id,
        amount=Decimal("125.00"),
        currency="NOK",
        method="card",
        reason="card_declined",
        failed_at=renews + timedelta(minutes=1),
        purpose="renewal",
    )
    assert await lc.deliver(failed, account, sub) == "done"
    row = await lc.sub(sub)
    assert (row["stage"], row["stage_reason"]) == ("expired", "payment_failed")
    return account, sub, invoice


@pytest.mark.parametrize(
    ("term", "renews", "suspends", "cancels"),
    [
        ("annual", date(2025, 6, 10), date(2025, 6, 25), date(2025, 7, 25)),
        ("monthly", date(2024, 7, 10), date(2024, 7, 25), date(2024, 8, 9)),
    ],
)
# Proves R32, R33 (../shared/DOMAIN.md).
async def test_r31_r32_r33_r34_r35_each_boundary_at_the_exact_second(
    lc: Lifecycle, term: str, renews: date, suspends: date, cancels: date
) -> None:
    _, sub = await lc.place(term=term)
    boundaries = [
        ("active", "expired", oslo(renews), oslo(suspends)),
        ("expired", "suspended", oslo(suspends), oslo(cancels)),
        ("suspended", "cancelled", oslo(cancels), None),
    ]
    for before, after, at, next_at in boundaries:
        await lc.at(at - SECOND)
        assert (await lc.sub(sub))["stage"] == before
        await lc.at(at)
        row = await lc.sub(sub)
        assert row["stage"] == after
        assert row["next_stage_at"] == next_at
        change = (await lc.events("StageChanged", sub))[-1]
        assert (change["from_stage"], change["to_stage"]) == (before, after)
        assert datetime.fromisoformat(change["effective_at"]) == at
        assert tuple(change["entitlements"][c] for c in CAPABILITIES) == R35[after]
    assert len(await lc.events("StageChanged", sub)) == 3


async def test_r36_no_grace_offering_is_cancelled_at_expiry(lc: Lifecycle) -> None:
    _, sub = await lc.place(offering="docs")
    await lc.at(oslo(date(2025, 6, 10)) - SECOND)
    assert (await lc.sub(sub))["stage"] == "active"
    await lc.at(oslo(date(2025, 6, 10)))
    [change] = await lc.events("StageChanged", sub)
    assert (change["from_stage"], change["to_stage"]) == ("active", "cancelled")
    assert change["entitlements"]["product_access"] == "none"
    assert (await lc.sub(sub))["stage"] == "cancelled"


@pytest.mark.parametrize(
    ("stage", "last_second"),
    [
        ("expired", oslo(date(2025, 6, 25)) - SECOND),
        ("suspended", oslo(date(2025, 7, 25)) - SECOND),
    ],
)
# Proves R32, R33 (../shared/DOMAIN.md).
async def test_r27_r32_r33_r37_payment_in_the_last_second_of_a_window_reactivates(
    lc: Lifecycle, stage: str, last_second: datetime
) -> None:
    account, sub, invoice = await lapse_on_failed_charge(lc)
    await lc.at(last_second)
    assert (await lc.sub(sub))["stage"] == stage
    assert await lc.deliver(paid(invoice, last_second), account, sub) == "done"
    row = await lc.sub(sub)
    assert row["stage"] == "active"
    # R27: the new term keeps the original anniversary (10 June), not the payment day.
    assert row["renews_at"] == oslo(date(2026, 6, 10))
    assert row["expires_at"] == oslo(date(2026, 6, 10)) - SECOND
    [reactivated] = await lc.events("SubscriptionReactivated", sub)
    assert reactivated["from_stage"] == stage
    [renewed] = await lc.events("SubscriptionRenewed", sub)
    assert renewed["renewal_id"] == str(invoice.renewal_id)
    assert (await lc.events("StageChanged", sub))[-1]["to_stage"] == "active"
    await lc.at(oslo(date(2025, 12, 1)))  # the old boundaries no longer apply
    assert (await lc.sub(sub))["stage"] == "active"


async def test_r34_payment_one_second_after_the_window_closed_is_refused(lc: Lifecycle) -> None:
    account, sub, invoice = await lapse_on_failed_charge(lc)
    closed = oslo(date(2025, 7, 25))
    await lc.at(closed + SECOND, fire=False)  # the boundary's timer has not even fired yet
    assert await lc.deliver(paid(invoice, closed + SECOND), account, sub) == "done"
    row = await lc.sub(sub)
    assert row["stage"] == "cancelled"
    assert await lc.events("SubscriptionReactivated", sub) == []
    assert await lc.events("SubscriptionRenewed", sub) == []
    await lc.at(closed + 2 * SECOND)  # now the timers fire: nothing happens twice
    stages = [c["to_stage"] for c in await lc.events("StageChanged", sub)]
    assert stages == ["expired", "suspended", "cancelled"]


async def test_r33_paid_while_suspended_but_processed_after_cancellation_reactivates(
    lc: Lifecycle,
) -> None:
    """The payment was made two minutes before Suspended ended; lifecycle read it after the
    boundary's timer had cancelled the subscription. By business time it was in the window."""
    account, sub, invoice = await lapse_on_failed_charge(lc)
    closed = oslo(date(2025, 7, 25))
    await lc.at(closed)
    assert (await lc.sub(sub))["stage"] == "cancelled"
    paid_at = closed - timedelta(minutes=2)
    assert await lc.deliver(paid(invoice, paid_at), account, sub) == "done"
    row = await lc.sub(sub)
    assert (row["stage"], row["renews_at"]) == ("active", oslo(date(2026, 6, 10)))
    [reactivated] = await lc.events("SubscriptionReactivated", sub)
    assert reactivated["from_stage"] == "cancelled"
    stages = [c["to_stage"] for c in await lc.events("StageChanged", sub)]
    assert stages == ["expired", "suspended", "cancelled", "active"]


async def test_r34_cancelled_refuses_everything(lc: Lifecycle) -> None:
    account, sub = await lc.place(offering="docs")
    await lc.at(oslo(date(2025, 6, 10)))
    before = await lc.sub(sub)
    assert before["stage"] == "cancelled"
    events_before = await lc.pool.fetchval("SELECT count(*) FROM outbox")
    now = lc.clock.now()
    attempts: list[Contract] = [
        AutoRenewChanged(auto_renew=True, changed_at=now),
        RenewalRequested(
            request_id=uuid.uuid4(),
            kind="late",
            offering="docs",
            term="annual",
            seats=2,
            payment_method="card",
            channel="direct",
            requested_at=now,
        ),
        TermChangeScheduled(new_term="monthly", effective_at=now),
        ProductSwitchScheduled(new_offering="revit", effective_at=now),
        SeatsAdded(
            order_id=uuid.uuid4(),
            order_number="ORD-2",
            offering="docs",
            term="annual",
            seats_added=3,
            total_seats=5,
            prorate_from=now,
            coterm_until=now,
            payment_method="card",
            billing_country="NO",
            currency="NOK",
            time_zone="Europe/Oslo",
        ),
        TrialConverted(
            order_id=uuid.uuid4(),
            order_number="ORD-3",
            term="annual",
            seats=2,
            payment_method="card",
            converted_at=now,
        ),
        RefundApproved(
            refund_id=uuid.uuid4(),
            purchase_kind="order",
            purchased_at=BOUGHT,
            reason="late",
            approved_at=now,
        ),
        paid(invoice_issued(renewal_id(sub, before["renews_at"]), "card", now.date(), now), now),
    ]
    for attempt in attempts:
        assert await lc.deliver(attempt, account, sub) == "done"
    after = await lc.sub(sub)
    assert dict(after) == dict(before)
    assert await lc.pool.fetchval("SELECT count(*) FROM outbox") == events_before
    assert await lc.pool.fetchval("SELECT count(*) FROM timers WHERE status = 'pending'") == 0


# Proves R29 (../shared/DOMAIN.md).
async def test_r25_r27_r28_r29_renewal_applies_pending_changes_on_the_anniversary(
    lc: Lifecycle,
) -> None:
    account, sub = await lc.place(
        term="monthly", auto_renew=True, placed_at=datetime(2025, 1, 31, 9, 0, tzinfo=OSLO)
    )
    first = oslo(date(2025, 2, 28))  # R23: clamped
    await lc.at(first)
    [due] = await lc.events("RenewalDue", sub)
    invoice = invoice_issued(uuid.UUID(due["renewal_id"]), "card", date(2025, 2, 28), first)
    assert await lc.deliver(invoice, account, sub) == "done"
    assert await lc.deliver(paid(invoice, first), account, sub) == "done"
    row = await lc.sub(sub)
    assert row["renews_at"] == oslo(date(2025, 3, 31))  # R27: back on the 31st
    for change in (
        TermChangeScheduled(new_term="monthly", effective_at=first),
        TermChangeScheduled(new_term="annual", effective_at=first),  # R28: changed again
        ProductSwitchScheduled(new_offering="revit", effective_at=first),
    ):
        assert await lc.deliver(change, account, sub) == "done"
    await lc.at(oslo(date(2025, 3, 31)))
    second = (await lc.events("RenewalDue", sub))[-1]
    assert (second["term"], second["offering"]) == ("annual", "revit")
    assert datetime.fromisoformat(second["period_ends_at"]) == oslo(date(2026, 3, 31)) - SECOND
    assert (await lc.sub(sub))["term"] == "monthly"  # nothing changes before payment
    invoice = invoice_issued(uuid.UUID(second["renewal_id"]), "card", date(2025, 3, 31), first)
    assert await lc.deliver(invoice, account, sub) == "done"
    assert await lc.deliver(paid(invoice, lc.clock.now()), account, sub) == "done"
    assert await lc.deliver(paid(invoice, lc.clock.now()), account, sub) == "done"  # twice
    row = await lc.sub(sub)
    assert (row["term"], row["offering"], row["pending_term"]) == ("annual", "revit", None)
    assert row["renews_at"] == oslo(date(2026, 3, 31))
    assert len(await lc.events("SubscriptionRenewed", sub)) == 2


async def test_r21_r25_r31_invoice_renewal_renews_on_issue_and_lapses_after_due_date(
    lc: Lifecycle,
) -> None:
    account, sub = await lc.place(auto_renew=True, payment_method="invoice")
    renews = oslo(date(2025, 6, 10))
    await lc.at(renews)
    [due] = await lc.events("RenewalDue", sub)
    assert due["payment_method"] == "invoice"
    invoice = invoice_issued(uuid.UUID(due["renewal_id"]), "invoice", date(2025, 7, 10), renews)
    assert await lc.deliver(invoice, account, sub) == "done"
    assert (await lc.sub(sub))["renews_at"] == oslo(date(2026, 6, 10))  # renewed on issue
    overdue = oslo(date(2025, 7, 11))  # the due date has ended in Oslo
    await lc.at(overdue - SECOND)
    assert (await lc.sub(sub))["stage"] == "active"
    await lc.at(overdue)
    row = await lc.sub(sub)
    assert (row["stage"], row["stage_reason"]) == ("expired", "invoice_unpaid")
    assert row["next_stage_at"] == oslo(date(2025, 7, 26))
    await lc.at(oslo(date(2025, 7, 20)))
    assert await lc.deliver(paid(invoice, lc.clock.now()), account, sub) == "done"
    row = await lc.sub(sub)
    assert (row["stage"], row["renews_at"]) == ("active", oslo(date(2026, 6, 10)))
    [reactivated] = await lc.events("SubscriptionReactivated", sub)
    assert (reactivated["from_stage"], reactivated["reason"]) == ("expired", "invoice_paid")
    await lc.at(oslo(date(2025, 9, 1)))
    assert (await lc.sub(sub))["stage"] == "active"


async def test_r31_an_order_invoice_read_before_its_order_still_starts_the_clock(
    lc: Lifecycle,
) -> None:
    """Kafka orders events per topic only: invoicing's InvoiceIssued can be read before
    ordering's OrderPlaced. It waits for its cause (shared ``deferred_events``) and is applied
    when the activation releases it; unpaid, it lapses (R31)."""
    account, subscription = uuid.uuid4(), uuid.uuid4()
    await lc.at(BOUGHT)
    order_id = uuid.uuid4()
    invoice = invoice_issued(uuid.uuid4(), "invoice", date(2024, 7, 10), BOUGHT).model_copy(
        update={"purpose": "order", "renewal_id": None, "order_id": order_id}
    )
    # before its order: consumed (inbox) but kept until the subscription is activated
    assert await lc.deliver(invoice, account, subscription) == "deferred"
    waiting = "SELECT cause FROM deferred_events WHERE consumer = 'lifecycle'"
    assert [r["cause"] for r in await lc.pool.fetch(waiting)] == [f"subscription:{subscription}"]
    order = OrderPlaced(
        order_id=order_id,
        order_number="ORD-EARLY",
        subscription_id=subscription,
        offering="autocad",
        term="annual",
        seats=1,
        payment_method="invoice",
        channel="partner",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
        placed_at=BOUGHT,
        auto_renew=True,
        buyer_email="buyer@example.com",
    )
    assert await lc.deliver(order, account, subscription) == "done"
    assert await lc.pool.fetch(waiting) == []  # released by the activation, in its transaction
    overdue = oslo(date(2024, 7, 11))
    await lc.at(overdue - SECOND)
    assert (await lc.sub(subscription))["stage"] == "active"
    await lc.at(overdue)
    row = await lc.sub(subscription)
    assert (row["stage"], row["stage_reason"]) == ("expired", "invoice_unpaid")


async def test_r31_paying_one_of_two_overdue_invoices_does_not_reactivate(lc: Lifecycle) -> None:
    """R31, R32: the subscription lapsed on unpaid invoices; it returns to Active only when no
    invoice is overdue any more."""
    account, sub = await lc.place(payment_method="invoice")
    first, second = (
        invoice_issued(uuid.uuid4(), "invoice", due, BOUGHT).model_copy(
            update={"purpose": "co_term", "renewal_id": None}
        )
        for due in (date(2024, 7, 10), date(2024, 7, 12))
    )
    for invoice in (first, second):
        assert await lc.deliver(invoice, account, sub) == "done"
    await lc.at(oslo(date(2024, 7, 13)))
    assert (await lc.sub(sub))["stage"] == "expired"
    assert await lc.deliver(paid(first, lc.clock.now()), account, sub) == "done"
    assert (await lc.sub(sub))["stage"] == "expired"  # the second is still overdue
    await lc.at(oslo(date(2024, 7, 14)))
    assert await lc.deliver(paid(second, lc.clock.now()), account, sub) == "done"
    assert (await lc.sub(sub))["stage"] == "active"


async def test_r24_r26_window_and_reminders_only_without_auto_renew(lc: Lifecycle) -> None:
    _, off = await lc.place(auto_renew=False)
    _, on = await lc.place(auto_renew=True)
    account, turned_on = await lc.place(auto_renew=False)
    await lc.at(oslo(date(2025, 5, 1)))  # after the 45-day reminder, before the 30-day one
    turn_on = AutoRenewChanged(auto_renew=True, changed_at=lc.clock.now())
    assert await lc.deliver(turn_on, account, turned_on) == "done"
    await lc.at(oslo(date(2025, 6, 10)) - SECOND)
    for sub in (off, on, turned_on):
        [window] = await lc.events("RenewalWindowOpened", sub)
        assert datetime.fromisoformat(window["renews_at"]) == oslo(date(2025, 6, 10))
    reminders = await lc.events("RenewalReminderDue", off)
    assert [r["days_before"] for r in reminders] == [45, 30, 4]
    assert await lc.events("RenewalReminderDue", on) == []
    assert [r["days_before"] for r in await lc.events("RenewalReminderDue", turned_on)] == [45]
    assert (await lc.sub(off))["stage"] == "active"  # R24: full access until expiry


async def test_r39_refund_ends_all_access_at_once(lc: Lifecycle) -> None:
    account, sub = await lc.place(auto_renew=True)
    await lc.at(BOUGHT + timedelta(days=3))
    refund = RefundApproved(
        refund_id=uuid.uuid4(),
        purchase_kind="order",
        purchased_at=BOUGHT,
        reason="changed mind",
        approved_at=lc.clock.now(),
    )
    assert await lc.deliver(refund, account, sub) == "done"
    [change] = await lc.events("StageChanged", sub)
    assert (change["to_stage"], change["reason"]) == ("cancelled", "refunded")
    assert change["entitlements"]["product_access"] == "none"
    await lc.at(oslo(date(2025, 6, 10)))
    assert await lc.events("RenewalDue", sub) == []  # never charged again


async def test_r17_trial_converts_in_place(lc: Lifecycle) -> None:
    account, sub = await lc.place(term="monthly", trial=True)
    converted_at = BOUGHT + timedelta(days=10)
    await lc.at(converted_at)
    conversion = TrialConverted(
        order_id=uuid.uuid4(),
        order_number="ORD-7",
        term="annual",
        seats=4,
        payment_method="card",
        converted_at=converted_at,
    )
    assert await lc.deliver(conversion, account, sub) == "done"
    row = await lc.sub(sub)
    assert (row["id"], row["trial"], row["term"], row["seats"]) == (sub, False, "annual", 4)
    assert row["renews_at"] == oslo(date(2025, 6, 20))
    activations = await lc.events("SubscriptionActivated", sub)
    assert [a["trial"] for a in activations] == [True, False]
    assert datetime.fromisoformat(activations[1]["starts_at"]).astimezone(UTC) == converted_at
