"""Notifications on real PostgreSQL: events that came before the account's people wait in the
shared ``deferred_events`` table, including those parked by the old ``parked_events`` table
before migration 0003."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from services.notifications.app import SPEC
from services.notifications.handlers import consumer
from shared.contracts import PRODUCER_OF, Contract, Envelope, RolesChanged, new_envelope
from shared.db import create_pool, migrate
from shared.messaging import ConsumerRuntime
from shared.outbox import Outbox
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests.notifications_samples import order_placed, person
from tests.support import Backing, create_database, drop_database, unique, wait_for

pytestmark = pytest.mark.integration

KARI = "kari@example.com"


class DeadLetterRaiser:
    """Stands in for the dead-letter producer: a failing handler fails the test instead."""

    async def send_and_wait(self, topic: str, **kw: Any) -> None:
        raise AssertionError(dict(kw["headers"])["x-dlq-error"].decode())


def envelope(account_id: uuid.UUID, event: Contract) -> Envelope:
    now = datetime.now(UTC)
    return new_envelope(
        event=event,
        producer=PRODUCER_OF[type(event).__name__],
        account_id=account_id,
        occurred_at=now,
        recorded_at=now,
    )


@pytest.fixture
async def database(backing: Backing) -> AsyncIterator[asyncpg.Pool]:
    name = unique("test_notifications_deferred_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn, size=4)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


def runtime(pool: asyncpg.Pool) -> ConsumerRuntime:
    topics = Topics(unique("t") + ".")
    clock = SystemClock()
    return ConsumerRuntime(
        consumer,
        pool=pool,
        outbox=Outbox("notifications", topics, clock),
        clock=clock,
        producer=DeadLetterRaiser(),
        topics=topics,
        max_attempts=1,
        backoff_seconds=0,
    )


async def test_parked_events_move_to_deferred_events_and_go_out_with_the_people(
    database: asyncpg.Pool, tmp_path: Path
) -> None:
    """Migration 0003 moves a parked event into ``deferred_events`` (waiting for the account's
    people) and drops ``parked_events``; the next roles snapshot applies it (R9)."""
    before_0003 = tmp_path / "notifications" / "migrations"
    before_0003.mkdir(parents=True)
    for path in sorted(SPEC.migrations.glob("000[12]_*.sql")):
        shutil.copy(path, before_0003)
    await migrate(database, before_0003)
    account = uuid.uuid4()
    parked = envelope(account, order_placed("ORD-PARKED", KARI))
    await database.execute(
        """INSERT INTO parked_events (event_id, account_id, envelope, parked_at)
           VALUES ($1, $2, $3::jsonb, now())""",
        parked.event_id,
        account,
        parked.model_dump_json(),
    )

    applied = await migrate(database, SPEC.migrations)
    assert applied[:2] == [
        "notifications/0003_deferred_events",
        "notifications/0004_message_ids_and_resends",
    ]
    assert applied == sorted(applied)  # and every later one, in order
    assert await database.fetchval("SELECT to_regclass('parked_events')") is None
    waiting = await database.fetch("SELECT consumer, event_id, cause FROM deferred_events")
    assert [tuple(r) for r in waiting] == [("notifications", parked.event_id, f"people:{account}")]

    roles = RolesChanged(buyer=person(KARI), primary_admin=person(KARI))
    assert (
        await runtime(database).handle(envelope(account, roles).model_dump_json().encode(), None)
        == "done"
    )

    rows = await database.fetch("SELECT template, recipient FROM deliveries ORDER BY template")
    assert [tuple(r) for r in rows] == [("admin_appointed", KARI), ("order_confirmation", KARI)]
    assert await database.fetchval("SELECT count(*) FROM deferred_events") == 0


async def test_an_event_before_the_people_waits_and_a_redelivery_changes_nothing(
    database: asyncpg.Pool,
) -> None:
    """An order read before the account's roles waits (``deferred``, nothing queued); read
    again it is a duplicate; the roles snapshot applies it once (R12)."""
    await migrate(database, SPEC.migrations)
    consuming = runtime(database)
    account = uuid.uuid4()
    order = envelope(account, order_placed("ORD-EARLY", KARI)).model_dump_json().encode()

    assert await consuming.handle(order, None) == "deferred"
    assert await consuming.handle(order, None) == "duplicate"
    assert await database.fetchval("SELECT count(*) FROM deliveries") == 0

    roles = RolesChanged(buyer=person(KARI), primary_admin=person(KARI))
    assert (
        await consuming.handle(envelope(account, roles).model_dump_json().encode(), None) == "done"
    )
    rows = await database.fetch("SELECT template FROM deliveries ORDER BY template")
    assert [r["template"] for r in rows] == ["admin_appointed", "order_confirmation"]
    assert await database.fetchval("SELECT count(*) FROM deferred_events") == 0


async def test_the_consumer_applies_one_accounts_events_one_transaction_at_a_time(
    database: asyncpg.Pool,
) -> None:
    """Issue 17 moved the consumer's per-account lock into the inbox row's statement: it is
    still taken before the handler runs, so an event waits while another transaction holds its
    account's turn, and a duplicate is still recognised."""
    await migrate(database, SPEC.migrations)
    consuming = runtime(database)
    account = uuid.uuid4()
    roles = envelope(account, RolesChanged(buyer=person(KARI), primary_admin=person(KARI)))
    body = roles.model_dump_json().encode()
    async with database.acquire() as holder, holder.transaction():
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7316004))",
            f"notifications:{account}",
        )
        handling = asyncio.create_task(consuming.handle(body, None))

        async def waits_for_its_turn() -> bool:
            return bool(
                await database.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                )
            )

        await wait_for(waits_for_its_turn, what="the event to wait for its account's turn")
        assert not handling.done()
        assert await database.fetchval("SELECT count(*) FROM deliveries") == 0
    assert await handling == "done"
    assert await consuming.handle(body, None) == "duplicate"
    assert await database.fetchval("SELECT count(*) FROM deliveries") == 1


async def test_an_event_is_applied_without_a_savepoint_unless_it_waits(backing: Backing) -> None:
    """Issue 17: an event that does not wait is applied in its transaction without a savepoint
    (two round trips fewer); one that waits is rolled back and applied again with a savepoint
    around its handler, so what the handler did before it decided to wait is not kept, and it
    still goes out once its cause (the account's people) comes."""
    name = unique("test_notifications_savepoint_")
    dsn = await create_database(backing.postgres_dsn, name)
    sent: list[str] = []

    async def log_queries(conn: asyncpg.Connection) -> None:
        conn.add_query_logger(lambda record: sent.append(record.query.upper()))

    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2, init=log_queries)
    try:
        await migrate(pool, SPEC.migrations)
        consuming = runtime(pool)
        early, ready = uuid.uuid4(), uuid.uuid4()
        snapshot = RolesChanged(buyer=person(KARI), primary_admin=person(KARI))
        sent.clear()
        ready_roles = envelope(ready, snapshot).model_dump_json().encode()
        assert await consuming.handle(ready_roles, None) == "done"
        order = envelope(ready, order_placed("ORD-1", KARI)).model_dump_json().encode()
        assert await consuming.handle(order, None) == "done"
        assert sent and not [q for q in sent if "SAVEPOINT" in q]

        waiting = envelope(early, order_placed("ORD-2", KARI))
        assert await consuming.handle(waiting.model_dump_json().encode(), None) == "deferred"
        assert [q for q in sent if q.startswith("SAVEPOINT")]  # the second, guarded try
        count = "SELECT count(*) FROM {} WHERE account_id = $1"
        deferred = "SELECT count(*) FROM deferred_events WHERE event_id = $1"
        assert await pool.fetchval(deferred, waiting.event_id) == 1
        # remembered by the handler before it decided to wait: rolled back
        assert await pool.fetchval(count.format("subscriptions"), early) == 0
        early_roles = envelope(early, snapshot).model_dump_json().encode()
        assert await consuming.handle(early_roles, None) == "done"
        assert await pool.fetchval(deferred, waiting.event_id) == 0
        assert await pool.fetchval(count.format("subscriptions"), early) == 1
        confirmations = "SELECT count(*) FROM deliveries WHERE event_id = $1"
        assert await pool.fetchval(confirmations, waiting.event_id) == 1
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)
