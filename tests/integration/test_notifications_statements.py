"""Issue 17: how many SQL statements (round trips to PostgreSQL) notifications sends for each
event of a purchase it consumes, counted on the real consumer path (``ConsumerRuntime`` over a
real PostgreSQL) with asyncpg's query logger. Every statement is a round trip over the socket
(and a send the kernel runs in the sender's time), so these counts are what the handlers cost.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest

from services.notifications.app import SPEC
from shared.contracts import (
    AccountOpened,
    Contract,
    Envelope,
    InvoicePaid,
    RolesChanged,
    SubscriptionActivated,
    new_envelope,
)
from shared.db import migrate
from tests.integration.test_notifications_deferred import runtime
from tests.notifications_samples import AT, order_placed, person
from tests.support import Backing, create_database, drop_database, unique

pytestmark = pytest.mark.integration

BUYER = "kari@example.com"
ADMIN = "ola@example.com"


@dataclass
class Counted:
    """A pool whose connections log every statement they send."""

    pool: asyncpg.Pool
    sent: list[str] = field(default_factory=list)


@contextlib.asynccontextmanager
async def counting(backing: Backing, prefix: str, migrations: Path) -> AsyncIterator[Counted]:
    """A fresh database with ``migrations``, through a pool that logs every statement."""
    name = unique(prefix)
    dsn = await create_database(backing.postgres_dsn, name)
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(" ".join(record.query.split())))

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=log_queries)
    try:
        await migrate(pool, migrations)
        yield Counted(pool, sent)
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


@pytest.fixture
async def counted(backing: Backing) -> AsyncIterator[Counted]:
    async with counting(backing, "test_notifications_statements_", SPEC.migrations) as counted:
        yield counted


def purchase(account: uuid.UUID) -> list[Envelope]:
    """The events of one purchase notifications consumes, in the order the benchmark's
    services produce them (sign-up, roles, order, activation caused by the order, payment)."""
    now = datetime.now(UTC)
    order = order_placed("ORD-1", BUYER)

    def wrap(event: Contract, producer: str, cause: Envelope | None = None) -> Envelope:
        return new_envelope(
            event=event,
            producer=producer,
            account_id=account,
            subscription_id=order.subscription_id,
            occurred_at=now,
            recorded_at=now,
            causation=cause,
        )

    buyer = person(BUYER)
    opened = AccountOpened(
        name="Nordmann AS", country="NO", currency="NOK", language="nb", time_zone="Europe/Oslo"
    )
    roles = RolesChanged(buyer=buyer, primary_admin=buyer, secondary_admins=[person(ADMIN)])
    placed = wrap(order, "ordering")
    activated = SubscriptionActivated(
        order_id=order.order_id,
        offering=order.offering,
        term=order.term,
        seats=order.seats,
        time_zone=order.time_zone,
        starts_at=AT,
        expires_at=AT,
        renews_at=AT,
        auto_renew=True,
    )
    paid = InvoicePaid(invoice_id=uuid.uuid4(), invoice_number="INV-1", paid_at=AT)
    return [
        wrap(opened, "ordering"),
        wrap(roles, "ordering"),
        placed,
        wrap(paid, "invoicing"),
        wrap(activated, "lifecycle", cause=placed),
    ]


# asyncpg's own: type introspection (once per connection and type) and the pool's reset on
# release (the services' pools skip it, shared.db); neither is a handler's statement
NOT_THE_HANDLERS = (
    "SELECT current_setting('jit')",
    "WITH RECURSIVE typeinfo_tree",
    "SELECT set_config('jit'",
    "SELECT pg_advisory_unlock_all()",
)


async def statements_per_event(counted: Counted, account: uuid.UUID) -> dict[str, list[str]]:
    consuming = runtime(counted.pool)
    sent: dict[str, list[str]] = {}
    for envelope in purchase(account):
        counted.sent.clear()
        assert await consuming.handle(envelope.model_dump_json().encode(), None) == "done"
        sent[envelope.event_type] = [q for q in counted.sent if not q.startswith(NOT_THE_HANDLERS)]
    return sent


async def test_an_events_mails_cost_two_statements_besides_the_inbox_row(
    counted: Counted,
) -> None:
    """Issue 17: each routed event of a purchase is BEGIN, the inbox row (with the account's
    turn), the account's clock (the consumer's), one statement for what routing needs (the
    people lock, the people, the account, the offering, the cause, who waits for this event)
    and one for all its mails with the workers' wake-up, COMMIT; a roles snapshot one more (the
    snapshot applied in one statement). No release is asked for when nothing waits. Before:
    RolesChanged 18, OrderPlaced 14, InvoicePaid 13, SubscriptionActivated 16 (a lock, a read
    each of people, clock, account and offering, an INSERT per mail, a NOTIFY, two releases).
    The mails are the same: R9, R10, R12 (one per address)."""
    account = uuid.uuid4()
    sent = await statements_per_event(counted, account)
    counts = {event_type: len(statements) for event_type, statements in sent.items()}
    assert counts == {
        "AccountOpened": 5,
        "RolesChanged": 7,
        "OrderPlaced": 6,
        "InvoicePaid": 6,
        "SubscriptionActivated": 6,
    }, sent
    releases = [q for qs in sent.values() for q in qs if q.startswith("DELETE FROM deferred")]
    assert not releases  # nothing waited
    mails = await counted.pool.fetch(
        """SELECT event_type, template, recipient, roles FROM deliveries
           ORDER BY event_type, recipient"""
    )
    assert [tuple(m.values()) for m in mails] == [  # as main queued them
        ("InvoicePaid", "payment_receipt", BUYER, ["buyer"]),
        ("OrderPlaced", "order_confirmation", BUYER, ["buyer"]),
        ("RolesChanged", "admin_appointed", BUYER, ["primary_admin"]),
        ("RolesChanged", "admin_appointed", ADMIN, ["secondary_admin"]),
        ("SubscriptionActivated", "product_access_granted", BUYER, ["primary_admin"]),
        ("SubscriptionActivated", "product_access_granted", ADMIN, ["secondary_admin"]),
    ]
    people = await counted.pool.fetch(
        "SELECT email, roles FROM account_people WHERE account_id = $1 ORDER BY email", account
    )
    assert [tuple(p.values()) for p in people] == [
        (BUYER, ["buyer", "primary_admin"]),
        (ADMIN, ["secondary_admin"]),
    ]


async def test_events_that_wait_are_released_by_what_they_wait_for(counted: Counted) -> None:
    """The releases asked for only when the routing facts say someone waits: a purchase whose
    order, payment and activation come before the roles snapshot (so they wait for the
    account's people, the activation for its order too) is released in full by the snapshot,
    the activation by its order applied in that release; the same mails as in order."""
    account = uuid.uuid4()
    opened, roles, placed, paid, activated = purchase(account)
    consuming = runtime(counted.pool)

    async def handle(envelope: Envelope) -> str:
        return await consuming.handle(envelope.model_dump_json().encode(), None)

    assert await handle(opened) == "done"
    for early in (activated, placed, paid):
        assert await handle(early) == "deferred"
    waiting = "SELECT cause FROM deferred_events ORDER BY seq"
    assert [r["cause"] for r in await counted.pool.fetch(waiting)] == [
        f"event:{placed.event_id}",
        f"people:{account}",
        f"people:{account}",
    ]
    assert await handle(roles) == "done"
    assert await counted.pool.fetch(waiting) == []
    mails = await counted.pool.fetch("SELECT event_type, recipient FROM deliveries")
    assert sorted((m["event_type"], m["recipient"]) for m in mails) == [
        ("InvoicePaid", BUYER),
        ("OrderPlaced", BUYER),
        ("RolesChanged", BUYER),
        ("RolesChanged", ADMIN),
        ("SubscriptionActivated", BUYER),
        ("SubscriptionActivated", ADMIN),
    ]
