"""The transactional outbox on real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest

from shared.config import Settings
from shared.contracts import AccountOpened, Envelope
from shared.db import create_pool, migrate
from shared.messaging import ensure_topics, make_producer
from shared.outbox import Outbox, OutboxRelay, unpublished_count
from shared.time.clock import SystemClock
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.support import Backing, create_database, drop_database, unique, wait_for

pytestmark = pytest.mark.integration


def opened(n: int) -> AccountOpened:
    return AccountOpened(
        name=f"event-{n}", country="NO", currency="NOK", language="en", time_zone="Europe/Oslo"
    )


async def test_outbox_publishes_in_order_per_key_with_two_relays(
    backing: Backing, tmp_path: Path
) -> None:
    name = unique("test_outbox_")
    dsn = await create_database(backing.postgres_dsn, name)
    topics = Topics(unique("t") + ".")
    settings = Settings(service="ordering", kafka_bootstrap_servers=backing.kafka)
    pool = await create_pool(dsn)
    producer = make_producer(settings)
    try:
        await migrate(pool, tmp_path)  # the shared migrations only
        await ensure_topics(settings, topics)
        outbox = Outbox("ordering", topics, SystemClock())
        accounts = [uuid.uuid4() for _ in range(5)]
        per_account = 60
        # Interleave the accounts, one transaction per event, as concurrent requests would.
        for n in range(per_account):
            for account in accounts:
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.emit(conn, opened(n), account_id=account)
        await producer.start()
        relays = [OutboxRelay(pool, producer, batch_size=37, poll_seconds=0.1) for _ in range(2)]

        async def drain(relay: OutboxRelay) -> None:
            published = await relay.publish_batch()
            while published:
                published = await relay.publish_batch()

        # Two relays (as two replicas would run) race over the same table.
        for _ in range(3):
            await asyncio.gather(*(drain(r) for r in relays))
        async with pool.acquire() as conn:
            assert await unpublished_count(conn) == 0
        records = await read_topic(backing.kafka, topics.events("ordering"), 5 * per_account)
        assert len(records) == 5 * per_account
        seen: dict[str, list[int]] = {}
        for record in sorted(records, key=lambda r: (r.partition, r.offset)):
            envelope = Envelope.model_validate_json(record.value)
            assert record.key.decode() == str(envelope.account_id)
            seen.setdefault(str(envelope.account_id), []).append(
                int(envelope.payload["name"].split("-")[1])
            )
        assert sorted(seen) == sorted(str(a) for a in accounts)
        for sequence in seen.values():
            assert sequence == list(range(per_account))  # in order, none lost, none doubled
    finally:
        await producer.stop()
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


async def test_outbox_row_is_rolled_back_with_its_state_change(
    backing: Backing, tmp_path: Path
) -> None:
    """An event is never published for a change that did not commit."""
    name = unique("test_outbox_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn)
    try:
        await migrate(pool, tmp_path)
        outbox = Outbox("ordering", Topics("x."), SystemClock())
        with pytest.raises(RuntimeError):
            async with pool.acquire() as conn, conn.transaction():
                await outbox.emit(conn, opened(1), account_id=uuid.uuid4())
                raise RuntimeError("the business write failed")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


async def test_emit_is_two_round_trips_and_one_account_commits_in_id_order(
    backing: Backing, tmp_path: Path
) -> None:
    """Issue 17: an emit costs two statements (per-account locks with the clock times; the rows
    with the relay's wake-up), and still holds the account's lock until commit, so a second
    transaction emitting for the same account waits and takes the later id."""
    name = unique("test_outbox_")
    pool = await create_pool(await create_database(backing.postgres_dsn, name), size=3)
    try:
        await migrate(pool, tmp_path)
        outbox = Outbox("ordering", Topics("x."), SystemClock())
        account = uuid.uuid4()
        async with pool.acquire() as first, pool.acquire() as watcher:
            sent: list[str] = []
            first_tx = first.transaction()
            await first_tx.start()
            await outbox.emit(first, opened(0), account_id=uuid.uuid4())  # types introspected
            first.add_query_logger(lambda record: sent.append(record.query))
            await outbox.emit(first, opened(1), account_id=account)

            async def second() -> None:
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.emit(conn, opened(2), account_id=account)

            later = asyncio.create_task(second())

            async def second_waits_for_the_lock() -> bool:
                return bool(
                    await watcher.fetchval(
                        """SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'
                           AND NOT granted"""
                    )
                )

            await wait_for(second_waits_for_the_lock, what="the second emit to wait")
            assert not later.done()
            await first_tx.commit()
            await later
            rows = await watcher.fetch(
                "SELECT body FROM outbox WHERE message_key = $1 ORDER BY id", str(account)
            )
        emitting = [q for q in sent if "COMMIT" not in q.upper()]  # loggers run a turn later
        assert len(emitting) == 2, emitting
        names = [Envelope.model_validate_json(r["body"]).payload["name"] for r in rows]
        assert names == ["event-1", "event-2"]
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)


class _CountingProducer:
    """Takes every record at once (no Kafka): what the relay sends, in order."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def send(self, topic: str, *, value: bytes, **record: object) -> asyncio.Future[None]:
        self.sent.append(value)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done


async def test_a_woken_relay_gathers_what_commits_during_its_linger_into_one_batch(
    backing: Backing, tmp_path: Path
) -> None:
    """Issue 17: woken by a commit, the relay waits ``linger_seconds`` before it claims, so
    five transactions committed one after another are published in one batch (one transaction
    of the relay's) instead of one batch each, in commit order."""
    name = unique("test_outbox_linger_")
    dsn = await create_database(backing.postgres_dsn, name)
    pool = await create_pool(dsn)
    try:
        await migrate(pool, tmp_path)
        outbox = Outbox("ordering", Topics(unique("t") + "."), SystemClock())
        producer = _CountingProducer()
        relay = OutboxRelay(pool, producer, batch_size=100, poll_seconds=60, linger_seconds=2.0)
        batches: list[int] = []
        publish = relay.publish_batch

        async def counted() -> int:
            published = await publish()
            batches.append(published)
            return published

        relay.publish_batch = counted  # type: ignore[method-assign]
        running = asyncio.create_task(relay.run())
        try:

            async def listening() -> bool:
                return bool(batches)

            await wait_for(listening, what="the relay's first (empty) batch")
            account = uuid.uuid4()
            for n in range(5):
                async with pool.acquire() as conn, conn.transaction():
                    await outbox.emit(conn, opened(n), account_id=account)

            async def published() -> bool:
                async with pool.acquire() as conn:
                    return await unpublished_count(conn) == 0

            await wait_for(published, what="the five rows published")
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
        assert batches == [0, 5]
        names = [Envelope.model_validate_json(v).payload["name"] for v in producer.sent]
        assert names == [f"event-{n}" for n in range(5)]
    finally:
        await pool.close()
        await drop_database(backing.postgres_dsn, name)
