"""Issue 17: how many SQL statements (round trips to PostgreSQL) lifecycle sends for each event
of a purchase it consumes, counted on the real consumer path (``ConsumerRuntime`` over a real
PostgreSQL) with asyncpg's query logger."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from services.lifecycle.app import SPEC
from services.lifecycle.handlers import consumer
from shared.contracts import (
    PRODUCER_OF,
    AccountOpened,
    Contract,
    Envelope,
    InvoiceIssued,
    InvoicePaid,
    OrderPlaced,
    Person,
    RolesChanged,
    new_envelope,
)
from shared.messaging import ConsumerRuntime
from shared.outbox import Outbox
from shared.time.clock import SystemClock
from shared.timers import NOTIFY_CHANNEL, TimerRequest, schedule_many
from shared.topics import Topics
from tests.integration.test_notifications_deferred import DeadLetterRaiser
from tests.integration.test_notifications_statements import (
    NOT_THE_HANDLERS,
    Counted,
    counting,
)
from tests.support import Backing, unique

pytestmark = pytest.mark.integration


@pytest.fixture
async def counted(backing: Backing) -> AsyncIterator[Counted]:
    async with counting(backing, "test_lifecycle_statements_", SPEC.migrations) as counted:
        yield counted


def purchase(account: uuid.UUID) -> list[Envelope]:
    """What lifecycle consumes of one purchase by card, in the order it is produced."""
    now = datetime.now(UTC)
    buyer = Person(user_id=uuid.uuid4(), email="kari@example.com", name="Kari", language="nb")
    order = OrderPlaced(
        order_id=uuid.uuid4(),
        order_number="ORD-1",
        subscription_id=uuid.uuid4(),
        offering="revit",
        term="annual",
        seats=1,
        payment_method="card",
        channel="direct",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
        placed_at=now,
        auto_renew=True,
        buyer_email=buyer.email,
    )
    issued = InvoiceIssued(
        invoice_id=uuid.uuid4(),
        invoice_number="INV-1",
        order_id=order.order_id,
        currency="NOK",
        net_total=Decimal("100.00"),
        vat_total=Decimal("25.00"),
        gross_total=Decimal("125.00"),
        lines=[],
        payment_method="card",
        issued_at=now,
        due_date=now.date(),
        offering="revit",
    )
    paid = InvoicePaid(invoice_id=issued.invoice_id, invoice_number="INV-1", paid_at=now)
    events: list[Contract] = [
        AccountOpened(
            name="Nordmann AS", country="NO", currency="NOK", language="nb", time_zone="UTC"
        ),
        RolesChanged(buyer=buyer, primary_admin=buyer),
        order,
        issued,
        paid,
    ]
    return [
        new_envelope(
            event=event,
            producer=PRODUCER_OF[type(event).__name__],
            account_id=account,
            subscription_id=order.subscription_id,
            occurred_at=now,
            recorded_at=now,
        )
        for event in events
    ]


def consuming(pool: asyncpg.Pool) -> ConsumerRuntime:
    topics = Topics(unique("t") + ".")
    clock = SystemClock()
    return ConsumerRuntime(
        consumer,
        pool=pool,
        outbox=Outbox("lifecycle", topics, clock),
        clock=clock,
        producer=DeadLetterRaiser(),
        topics=topics,
        max_attempts=1,
        backoff_seconds=0,
    )


async def test_statements_per_event_of_a_purchase(counted: Counted) -> None:
    """Issue 17: a roles snapshot is one statement (``shared.people.apply_snapshot``), an
    activation's timers (dropped and scheduled) and their wake-up one, its release of waiting
    invoice events none when none waits (asked in the insert's statement), an invoice filed
    with the look-up of its subscription in one, a payment with its invoice's look-up and the
    R31 timer's cancel in one. Before: RolesChanged 6, OrderPlaced 12, InvoiceIssued 6,
    InvoicePaid 9 (37 for the purchase, now 29); the same effects."""
    runtime = consuming(counted.pool)
    sent: dict[str, list[str]] = {}
    for envelope in purchase(uuid.uuid4()):
        counted.sent.clear()
        assert await runtime.handle(envelope.model_dump_json().encode(), None) == "done"
        sent[envelope.event_type] = [q for q in counted.sent if not q.startswith(NOT_THE_HANDLERS)]
    counts = {event_type: len(statements) for event_type, statements in sent.items()}
    assert counts == {
        "AccountOpened": 4,
        "RolesChanged": 5,
        "OrderPlaced": 8,
        "InvoiceIssued": 5,
        "InvoicePaid": 7,
    }, sent
    assert not [q for q in sent["OrderPlaced"] if q.startswith("DELETE FROM deferred_events")]
    # the effects, as before
    timers = await counted.pool.fetch("SELECT kind, status FROM timers ORDER BY kind")
    assert [tuple(t.values()) for t in timers] == [
        ("renewal-date", "pending"),
        ("renewal-window", "pending"),
    ]
    outbox = await counted.pool.fetch("SELECT event_type FROM outbox ORDER BY id")
    assert [r["event_type"] for r in outbox] == ["SubscriptionActivated"]
    invoices = await counted.pool.fetch("SELECT purpose, paid_at IS NOT NULL AS paid FROM invoices")
    assert [tuple(r.values()) for r in invoices] == [("order", True)]
    subscriptions = await counted.pool.fetch("SELECT stage, auto_renew FROM subscriptions")
    assert [tuple(r.values()) for r in subscriptions] == [("active", True)]
    people = await counted.pool.fetch("SELECT email, roles FROM account_people")
    assert [tuple(r.values()) for r in people] == [("kari@example.com", ["buyer", "primary_admin"])]


async def test_invoice_events_read_before_their_order_are_released_by_the_activation(
    counted: Counted,
) -> None:
    """R31: the invoice and its payment, read before the order (another topic), wait for the
    subscription; the activation, which asked in its insert whether anything waits, releases
    them: the invoice is filed and paid, nothing waits any more."""
    runtime = consuming(counted.pool)
    opened, roles, placed, issued, paid = purchase(uuid.uuid4())

    async def handle(envelope: Envelope) -> str:
        return await runtime.handle(envelope.model_dump_json().encode(), None)

    assert [await handle(e) for e in (opened, roles, issued, paid)] == [
        "done",
        "done",
        "deferred",
        "deferred",
    ]
    assert await handle(placed) == "done"
    assert await counted.pool.fetchval("SELECT count(*) FROM deferred_events") == 0
    invoices = await counted.pool.fetch("SELECT paid_at IS NOT NULL AS paid FROM invoices")
    assert [r["paid"] for r in invoices] == [True]
    assert (
        await counted.pool.fetchval(
            "SELECT count(*) FROM timers WHERE kind = $1", "invoice-overdue"
        )
        == 0
    )


async def test_scheduling_tells_the_timer_loops_when_its_earliest_timer_is_due(
    counted: Counted,
) -> None:
    """The wake-up sent with the timers (in their statement) names the earliest due time in
    epoch seconds, so a sleeping loop can ignore timers it would not fire yet; '' for timers
    that follow a test clock (their time is the clock's)."""
    heard: asyncio.Queue[str] = asyncio.Queue()

    def hear(*notification: object) -> None:
        heard.put_nowait(str(notification[3]))

    listener = await counted.pool.acquire()
    try:
        await listener.add_listener(NOTIFY_CHANNEL, hear)
        soon = datetime.now(UTC) + timedelta(days=300)
        later = soon + timedelta(days=65)
        async with counted.pool.acquire() as conn:
            await schedule_many(
                conn,
                [
                    TimerRequest("renewal-date", "a", later, uuid.uuid4(), None),
                    TimerRequest("renewal-window", "a", soon, uuid.uuid4(), None),
                ],
            )
            assert float(await asyncio.wait_for(heard.get(), 10)) == soon.timestamp()
            await schedule_many(
                conn, [TimerRequest("renewal-date", "b", later, uuid.uuid4(), uuid.uuid4())]
            )
            assert await asyncio.wait_for(heard.get(), 10) == ""
    finally:
        await listener.remove_listener(NOTIFY_CHANNEL, hear)
        await counted.pool.release(listener)
