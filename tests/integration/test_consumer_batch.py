"""Issue 17: a consumed batch is applied in ONE transaction (``ConsumerRuntime.handle_batch``),
and record by record when that fails; real Kafka and real PostgreSQL.

A transaction is counted by the ``xmin`` of the rows it wrote: every row a transaction
inserts carries that transaction's id, so the inbox rows of a batch applied in one
transaction share one ``xmin`` (record by record, each has its own)."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from prometheus_client import REGISTRY

from services.invoicing.handlers import consumer as invoicing_consumer
from services.notifications.app import SPEC as NOTIFICATIONS
from services.notifications.handlers import consumer as notifications_consumer
from shared.contracts import PRODUCER_OF, Contract, RolesChanged, new_envelope
from shared.db import create_pool, migrate
from shared.messaging import ConsumerRuntime, EventConsumer, ensure_topics
from shared.outbox import Outbox
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests.integration.conftest import in_process
from tests.integration.test_consumer import order_placed, send
from tests.notifications_samples import order_placed as order_to_mail
from tests.notifications_samples import person
from tests.support import (
    Backing,
    Deployment,
    create_database,
    deployment,
    drop_database,
    unique,
    wait_for,
)

pytestmark = pytest.mark.integration

KARI = "kari@example.com"


class DeadLetters:
    """Stands in for the dead-letter producer: records what was dead-lettered."""

    def __init__(self) -> None:
        self.sent: list[dict[str, bytes]] = []

    async def send_and_wait(self, topic: str, **kw: Any) -> None:
        self.sent.append({**dict(kw["headers"]), "value": kw["value"]})


def runtime(
    consumer: EventConsumer,
    pool: asyncpg.Pool,
    dead_letters: DeadLetters,
    *,
    batch_transaction: bool = True,
    max_attempts: int = 2,
) -> ConsumerRuntime:
    topics = Topics(unique("t") + ".")
    clock = SystemClock()
    return ConsumerRuntime(
        consumer,
        pool=pool,
        outbox=Outbox(consumer.name, topics, clock),
        clock=clock,
        producer=dead_letters,
        topics=topics,
        max_attempts=max_attempts,
        backoff_seconds=0,
        batch_transaction=batch_transaction,
    )


def order_id(body: bytes) -> uuid.UUID:
    return uuid.UUID(json.loads(body)["payload"]["order_id"])


def event_id(body: bytes) -> uuid.UUID:
    return uuid.UUID(json.loads(body)["event_id"])


async def transactions(pool: asyncpg.Pool, bodies: list[bytes]) -> int:
    """How many transactions wrote the inbox rows of ``bodies``."""
    return int(
        await pool.fetchval(
            "SELECT count(DISTINCT xmin::text) FROM inbox WHERE event_id = ANY($1::uuid[])",
            [event_id(b) for b in bodies],
        )
    )


async def invoice_numbers(pool: asyncpg.Pool, bodies: list[bytes]) -> list[str | None]:
    rows = await pool.fetch(
        "SELECT order_id, invoice_number FROM invoices WHERE order_id = ANY($1::uuid[])",
        [order_id(b) for b in bodies],
    )
    by_order = {r["order_id"]: r["invoice_number"] for r in rows}
    return [by_order.get(order_id(b)) for b in bodies]


def batches(consumer: str, outcome: str) -> float:
    labels = {"consumer": consumer, "outcome": outcome}
    return REGISTRY.get_sample_value("platform_consumer_batches_total", labels) or 0.0


@pytest.fixture
async def invoicing(backing: Backing) -> AsyncIterator[tuple[Deployment, asyncpg.Pool]]:
    async with deployment(backing, ("invoicing",)) as dep, in_process(dep, "invoicing") as app:
        yield dep, app.state.runtime.pool


async def test_a_consumed_batch_for_several_accounts_commits_once_in_each_accounts_order(
    backing: Backing,
) -> None:
    """Nine orders of three accounts, waiting on the topic before invoicing starts, are read
    as one batch and applied in one transaction: one inbox ``xmin`` (one per record before
    issue 17), each account's invoices numbered in its events' order (R-nothing-doubled:
    one invoice each). The same nine again, then one more per account: nothing changes
    twice."""
    async with deployment(backing, ("invoicing",)) as dep:
        topics = Topics(dep.prefix)
        await ensure_topics(dep.settings("invoicing"), topics)
        accounts = [uuid.uuid4() for _ in range(3)]
        bodies = {a: [order_placed(a) for _ in range(3)] for a in accounts}
        for account in accounts:
            await send(backing, topics.events("ordering"), account, *bodies[account])
        every = [b for a in accounts for b in bodies[a]]
        async with in_process(dep, "invoicing") as app:
            pool: asyncpg.Pool = app.state.runtime.pool

            async def applied(wanted: list[bytes]) -> bool:
                return None not in await invoice_numbers(pool, wanted)

            await wait_for(lambda: applied(every), what="the nine invoices")
            assert await transactions(pool, every) == 1
            for account in accounts:
                numbers = await invoice_numbers(pool, bodies[account])
                assert numbers == sorted(numbers)  # type: ignore[type-var]

            # A redelivered batch, then one new order per account behind it.
            last = {a: order_placed(a) for a in accounts}
            for account in accounts:
                await send(backing, topics.events("ordering"), account, *bodies[account])
                await send(backing, topics.events("ordering"), account, last[account])
            await wait_for(lambda: applied(list(last.values())), what="the last orders")
            assert await pool.fetchval("SELECT count(*) FROM invoices") == 12
            assert await pool.fetchval("SELECT count(*) FROM payments") == 12
            assert await transactions(pool, every) == 1  # the inbox rows were not rewritten


async def test_a_failing_handler_in_a_batch_leaves_the_others_applied_once(
    invoicing: tuple[Deployment, asyncpg.Pool],
) -> None:
    """A handler that fails in the middle of a batch: the batch transaction is rolled back,
    the events before it are applied again in one transaction, the failing one alone (retried
    and dead-lettered as before), the events after it in one more: each applied once, in each
    account's order. The batch again changes nothing."""
    _, pool = invoicing
    a, b = uuid.uuid4(), uuid.uuid4()
    bad = order_placed(a, offering="no-such-offering")  # no price: KeyError
    batch = [order_placed(a), order_placed(b), bad, order_placed(a), order_placed(b)]
    dead = DeadLetters()
    consuming = runtime(invoicing_consumer, pool, dead)
    rolled_back = batches("invoicing", "rolled-back")

    outcomes = await consuming.handle_batch(batch, [None] * len(batch))

    assert outcomes == ["done", "done", "dead-lettered", "done", "done"]
    assert batches("invoicing", "rolled-back") == rolled_back + 1
    good = [body for body in batch if body is not bad]
    numbers = await invoice_numbers(pool, good)
    assert None not in numbers
    assert numbers[0] < numbers[2]  # type: ignore[operator]  # account a: in its order
    assert await invoice_numbers(pool, [bad]) == [None]
    assert [d["x-dlq-attempts"] for d in dead.sent] == [b"2"]
    assert dead.sent[0]["value"] == bad
    assert await transactions(pool, good) == 2  # before the failing one, and after it

    again = await consuming.handle_batch(batch, [None] * len(batch))

    assert again == ["duplicate", "duplicate", "dead-lettered", "duplicate", "duplicate"]
    assert await pool.fetchval("SELECT count(*) FROM invoices") == 4
    assert await invoice_numbers(pool, good) == numbers


async def test_the_batch_transaction_can_be_turned_off_and_a_batch_repeated_in_it_is_a_duplicate(
    invoicing: tuple[Deployment, asyncpg.Pool],
) -> None:
    """``consumer_batch_transaction`` off: one transaction per record (the measurement's
    "before"). On: one for the batch, an event twice in it applied once, and the same batch
    again only duplicates."""
    _, pool = invoicing
    a, b = uuid.uuid4(), uuid.uuid4()
    alone = [order_placed(a), order_placed(b), order_placed(a)]
    one_by_one = runtime(invoicing_consumer, pool, DeadLetters(), batch_transaction=False)
    assert await one_by_one.handle_batch(alone, [None] * 3) == ["done"] * 3
    assert await transactions(pool, alone) == 3

    together = [order_placed(b), order_placed(a), order_placed(b)]
    batch = [*together, together[0]]
    consuming = runtime(invoicing_consumer, pool, DeadLetters())
    committed = batches("invoicing", "committed")
    assert await consuming.handle_batch(batch, [None] * 4) == ["done"] * 3 + ["duplicate"]
    assert batches("invoicing", "committed") == committed + 1
    assert await transactions(pool, together) == 1
    assert await consuming.handle_batch(batch, [None] * 4) == ["duplicate"] * 4
    assert await pool.fetchval("SELECT count(*) FROM invoices") == 6


@pytest.fixture
async def notifications_db(backing: Backing) -> AsyncIterator[asyncpg.Pool]:
    name = unique("test_consumer_batch_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn, size=4)
    try:
        await migrate(pool, NOTIFICATIONS.migrations)
        yield pool
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


def mail_event(account_id: uuid.UUID, event: Contract) -> bytes:
    now = datetime.now(UTC)
    return (
        new_envelope(
            event=event,
            producer=PRODUCER_OF[type(event).__name__],
            account_id=account_id,
            occurred_at=now,
            recorded_at=now,
        )
        .model_dump_json()
        .encode()
    )


def counted(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"consumer": "notifications"}) or 0.0


async def test_an_event_that_waits_in_a_batch_is_deferred_and_released(
    notifications_db: asyncpg.Pool,
) -> None:
    """An order before its account's people (R12) inside a batch: the batch transaction meets
    ``WaitForCause`` and is rolled back; the order is applied alone and waits, the records
    after it go in one transaction again, and the roles among them release it. An order that
    waited since an earlier batch is released inside a batch transaction (counted once)."""
    pool = notifications_db
    consuming = runtime(notifications_consumer, pool, DeadLetters(), max_attempts=1)
    snapshot = RolesChanged(buyer=person(KARI), primary_admin=person(KARI))
    # accounts that sort in this order (a batch's records are applied grouped by account)
    early, other, third = (uuid.UUID(n * 8 + uuid.uuid4().hex[8:]) for n in "0ef")
    order = mail_event(early, order_to_mail("ORD-EARLY", KARI))
    after = [mail_event(third, snapshot), mail_event(other, snapshot), mail_event(early, snapshot)]
    deferred, released = (
        counted("platform_events_deferred_total"),
        counted("platform_events_released_total"),
    )

    outcomes = await consuming.handle_batch([order, *after], [None] * 4)

    assert outcomes == ["deferred", "done", "done", "done"]
    assert await transactions(pool, after) == 1
    mails = "SELECT count(*) FROM deliveries WHERE event_id = $1"
    assert await pool.fetchval(mails, event_id(order)) == 1
    assert await pool.fetchval("SELECT count(*) FROM deferred_events") == 0
    assert counted("platform_events_deferred_total") == deferred + 1
    assert counted("platform_events_released_total") == released + 1

    # An order waiting since an earlier batch, released by a batch applied in one transaction.
    late = uuid.uuid4()
    waiting = mail_event(late, order_to_mail("ORD-LATE", KARI))
    assert await consuming.handle(waiting, None) == "deferred"
    batch = [mail_event(other, order_to_mail("ORD-OTHER", KARI)), mail_event(late, snapshot)]

    assert await consuming.handle_batch(batch, [None] * 2) == ["done", "done"]

    assert await transactions(pool, batch) == 1
    assert await pool.fetchval(mails, event_id(waiting)) == 1
    assert await pool.fetchval("SELECT count(*) FROM deferred_events") == 0
    assert counted("platform_events_deferred_total") == deferred + 2
    assert counted("platform_events_released_total") == released + 2
