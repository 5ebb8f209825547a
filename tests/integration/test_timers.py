"""Durable timers on real PostgreSQL: date order, shared by replicas, exactly once in effect."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.db import create_pool, migrate
from shared.outbox import Outbox
from shared.time.clock import FrozenClock
from shared.timers import TimerContext, TimerLoop, cancel, schedule
from shared.topics import Topics
from tests.support import Backing, create_database, drop_database, unique

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(backing: Backing, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    name = unique("test_timers_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn, size=6)
    (tmp_path / "0001_effects.sql").write_text(
        "CREATE TABLE effects (timer_key text PRIMARY KEY, fired_in int NOT NULL)"
    )
    await migrate(pool, tmp_path)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


def loop_for(pool: asyncpg.Pool, clock: FrozenClock, fired: list[str], replica: int) -> TimerLoop:
    async def record(ctx: TimerContext) -> None:
        fired.append(ctx.timer.key)
        # A plain INSERT: a second firing of the same timer would violate the primary key.
        await ctx.conn.execute(
            "INSERT INTO effects (timer_key, fired_in) VALUES ($1, $2)", ctx.timer.key, replica
        )

    async def broken(ctx: TimerContext) -> None:
        raise RuntimeError("always fails")

    return TimerLoop(
        pool,
        {"record": record, "broken": broken},
        outbox=Outbox("lifecycle", Topics("unused."), clock),
        clock=clock,
        batch_size=25,
        max_attempts=3,
    )


async def test_due_timers_fire_in_date_order_and_future_ones_wait(pool: asyncpg.Pool) -> None:
    clock = FrozenClock(T0)
    async with pool.acquire() as conn:
        for minutes in (30, -5, 10, -20, 0):
            await schedule(
                conn, kind="record", key=f"m{minutes}", due_at=T0 + timedelta(minutes=minutes)
            )
    fired: list[str] = []
    loop = loop_for(pool, clock, fired, 1)
    assert await loop.fire_due() == 3
    assert fired == ["m-20", "m-5", "m0"]  # date order; the future ones wait
    clock.advance(timedelta(minutes=30))
    await loop.fire_due()
    assert fired == ["m-20", "m-5", "m0", "m10", "m30"]
    assert await loop.fire_due() == 0


async def test_two_replicas_fire_each_timer_exactly_once(pool: asyncpg.Pool) -> None:
    clock = FrozenClock(T0)
    async with pool.acquire() as conn:
        for n in range(500):
            await schedule(conn, kind="record", key=f"t{n:03d}", due_at=T0 - timedelta(seconds=n))
    fired: list[str] = []
    loops = [loop_for(pool, clock, fired, replica) for replica in (1, 2)]

    async def drain(loop: TimerLoop) -> None:
        claimed = await loop.fire_due()
        while claimed:
            claimed = await loop.fire_due()

    await asyncio.gather(*(drain(loop) for loop in loops))
    assert sorted(fired) == [f"t{n:03d}" for n in range(500)]
    assert await pool.fetchval("SELECT count(*) FROM effects") == 500
    assert await pool.fetchval("SELECT count(DISTINCT fired_in) FROM effects") == 2


async def test_a_failing_timer_is_parked_and_the_others_fire(pool: asyncpg.Pool) -> None:
    clock = FrozenClock(T0)
    async with pool.acquire() as conn:
        await schedule(conn, kind="broken", key="bad", due_at=T0 - timedelta(hours=1))
        await schedule(conn, kind="record", key="good", due_at=T0)
        await schedule(conn, kind="record", key="cancelled", due_at=T0)
        assert await cancel(conn, kind="record", key="cancelled")
    fired: list[str] = []
    loop = loop_for(pool, clock, fired, 1)
    for _ in range(3):
        await loop.fire_due()
        clock.advance(timedelta(minutes=1))  # past the backoff
    assert fired == ["good"]
    row = await pool.fetchrow(
        "SELECT status, attempts, last_error FROM timers WHERE timer_key = 'bad'"
    )
    assert row is not None
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert "always fails" in row["last_error"]


async def test_a_test_clock_timer_follows_its_clock_not_the_wall(pool: asyncpg.Pool) -> None:
    clock = FrozenClock(T0)
    test_clock = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO test_clock_times (clock_id, now) VALUES ($1, $2)",
            test_clock,
            T0 - timedelta(days=365),
        )
        await schedule(
            conn,
            kind="record",
            key="on-clock",
            clock_id=test_clock,
            due_at=T0 - timedelta(days=300),
        )
    fired: list[str] = []
    loop = loop_for(pool, clock, fired, 1)
    assert await loop.fire_due() == 0  # the wall clock is past it, the test clock is not
    await pool.execute(
        "UPDATE test_clock_times SET now = $2 WHERE clock_id = $1",
        test_clock,
        T0 - timedelta(days=300),
    )
    assert await loop.fire_due() == 1
    assert fired == ["on-clock"]


async def test_a_transient_failure_is_retried_until_it_passes_and_keeps_its_due_time(
    pool: asyncpg.Pool,
) -> None:
    """An outage longer than max_attempts backoffs never parks the timer, and the handler always
    sees the original due time (the business date the timer stands for)."""
    from shared.timers import RetryLater

    clock = FrozenClock(T0)
    due = T0 - timedelta(minutes=5)
    outage = [RetryLater("gateway down")] * 6
    seen: list[datetime] = []

    async def flaky(ctx: TimerContext) -> None:
        seen.append(ctx.timer.due_at)
        if outage:
            raise outage.pop()

    loop = TimerLoop(
        pool,
        {"flaky": flaky},
        outbox=Outbox("lifecycle", Topics("x."), clock),
        clock=clock,
        max_attempts=3,
    )
    async with pool.acquire() as conn:
        await schedule(conn, kind="flaky", key="k", due_at=due)
    assert await loop.fire_due() == 1
    assert await loop.fire_due() == 0  # backing off: not due again yet
    for _ in range(6):
        clock.advance(timedelta(hours=1))
        await loop.fire_due()
    row = await pool.fetchrow("SELECT status, due_at FROM timers WHERE timer_key = 'k'")
    assert row is not None
    assert (row["status"], row["due_at"]) == ("fired", due)
    assert seen == [due] * 7
