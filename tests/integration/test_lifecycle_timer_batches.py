"""The batch path added to shared.timers for lifecycle: a run of one kind fires in one savepoint;
if the batch handler fails, the same timers fire one by one, so a bad one undoes only itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.db import create_pool, migrate
from shared.outbox import Outbox
from shared.time.clock import FrozenClock
from shared.timers import TimerBatchContext, TimerContext, TimerLoop, schedule
from shared.topics import Topics
from tests.support import Backing, create_database, drop_database, unique

pytestmark = pytest.mark.integration
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def pool(backing: Backing, tmp_path: Path) -> AsyncIterator[asyncpg.Pool]:
    name = unique("test_timer_batches_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn, size=2)
    (tmp_path / "0001_effects.sql").write_text("CREATE TABLE effects (timer_key text PRIMARY KEY)")
    await migrate(pool, tmp_path)
    try:
        yield pool
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


async def test_batches_keep_date_order_and_fall_back_to_one_by_one(pool: asyncpg.Pool) -> None:
    batches: list[list[str]] = []
    singles: list[str] = []

    async def batch(ctx: TimerBatchContext) -> None:
        keys = [t.key for t in ctx.timers]
        batches.append(keys)
        await ctx.conn.executemany(
            "INSERT INTO effects (timer_key) VALUES ($1)", [(k,) for k in keys]
        )
        if "bad" in keys:
            raise RuntimeError("one bad timer")

    async def single(ctx: TimerContext) -> None:
        singles.append(ctx.timer.key)

    async with pool.acquire() as conn:
        for n, (kind, key) in enumerate(
            [("b", "b1"), ("b", "b2"), ("s", "s1"), ("b", "b3"), ("b", "bad"), ("b", "b4")]
        ):
            await schedule(conn, kind=kind, key=key, due_at=T0 + timedelta(seconds=n))
    clock = FrozenClock(T0 + timedelta(minutes=1))
    loop = TimerLoop(
        pool,
        {"s": single},
        batch_handlers={"b": batch},
        outbox=Outbox("lifecycle", Topics("unused."), clock),
        clock=clock,
        max_attempts=1,
    )
    assert await loop.fire_due() == 6
    # date order across kinds: [b1 b2], s1, then [b3 bad b4] failing and retried one by one
    assert batches == [["b1", "b2"], ["b3", "bad", "b4"], ["b3"], ["bad"], ["b4"]]
    assert singles == ["s1"]
    effects = {r["timer_key"] for r in await pool.fetch("SELECT timer_key FROM effects")}
    assert effects == {"b1", "b2", "b3", "b4"}  # the bad one undid only itself
    rows = await pool.fetch("SELECT timer_key, status FROM timers")
    status = {r["timer_key"]: r["status"] for r in rows}
    assert status == {k: "fired" for k in ("b1", "b2", "s1", "b3", "b4")} | {"bad": "failed"}
