"""A service's shutdown never waits for ever (issue 12, finding 10), on real PostgreSQL and Kafka:
the outbox relay woken just before its cancel still stops, and a background loop that refuses
to stop costs one bounded step and a clear error, not a hung teardown."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from shared.background import ShutdownTimeout
from shared.contracts import AccountOpened
from shared.db import create_pool, migrate
from shared.outbox import Outbox, OutboxRelay, unpublished_count
from shared.runtime import Runtime, create_app, load_spec
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests.support import Backing, create_database, deployment, drop_database, unique, wait_for

pytestmark = pytest.mark.integration


class _NoKafka:
    async def send(self, *args: object, **kwargs: object) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


@contextlib.asynccontextmanager
async def relay_on_real_database(backing: Backing, tmp_path: Path) -> AsyncIterator[OutboxRelay]:
    name = unique("test_shutdown_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn)
    try:
        await migrate(pool, tmp_path)  # the shared migrations only
        yield OutboxRelay(pool, _NoKafka(), batch_size=10, poll_seconds=30)
    finally:
        await asyncio.wait_for(pool.close(), 10)
        await drop_database(backing.postgres_dsn, name)


@pytest.mark.parametrize("turns_between_wake_and_cancel", [0, 1, 2])
async def test_the_outbox_relay_woken_just_before_its_cancel_stops(
    backing: Backing, tmp_path: Path, turns_between_wake_and_cancel: int
) -> None:
    async with relay_on_real_database(backing, tmp_path) as relay:
        task = asyncio.create_task(relay.run())
        outbox = Outbox("ordering", Topics(unique("t") + "."), SystemClock())
        async with relay._pool.acquire() as conn, conn.transaction():
            event = AccountOpened(
                name="A", country="NO", currency="NOK", language="en", time_zone="Europe/Oslo"
            )
            await outbox.emit(conn, event, account_id=uuid.uuid4())

        async def relayed_and_asleep() -> bool:
            asleep = bool(getattr(relay._wake, "_waiters", None))
            return asleep and await unpublished_count(relay._pool) == 0  # type: ignore[arg-type]

        await wait_for(relayed_and_asleep, timeout=15, what="the relay published and idles")
        relay.wake()  # as a NOTIFY arriving at the moment of shutdown
        for _ in range(turns_between_wake_and_cancel):
            await asyncio.sleep(0)
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=10)
        assert task in done and task.cancelled(), "the relay swallowed its cancel"


async def test_a_loop_that_refuses_to_stop_fails_the_shutdown_clearly_and_in_bounded_time(
    backing: Backing,
) -> None:
    release, running = asyncio.Event(), asyncio.Event()

    async def refuses_to_stop(runtime: Runtime) -> None:
        running.set()
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()

    spec = load_spec("ordering")
    spec = dataclasses.replace(spec, background=[*spec.background, refuses_to_stop])
    async with deployment(backing, ("ordering",)) as dep:
        settings = dep.settings("ordering").model_copy(update={"shutdown_step_seconds": 1.0})
        app = create_app(spec, settings)
        stuck = "background tasks still running 1 s after cancel: refuses_to_stop"
        with pytest.raises(ShutdownTimeout, match=stuck):
            async with app.router.lifespan_context(app):
                pool = app.state.runtime.pool
                await asyncio.wait_for(running.wait(), 10)
                started = time.monotonic()
        assert time.monotonic() - started < 15
        assert pool.is_closing()  # the later steps still ran: the pool is closed
        release.set()
