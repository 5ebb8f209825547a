"""Lifecycle's timers survive a SIGKILL mid-batch: every due transition happens exactly once in
effect, in the database and on the topic (R31-R34 driven by durable timers)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from shared.contracts import Envelope
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.support import Backing, Deployment, ServiceProcess, deployment, wait_for

pytestmark = pytest.mark.integration
SUBSCRIPTIONS = 1500
TRANSITIONS = 3 * SUBSCRIPTIONS  # Expired, Suspended, Cancelled: all overdue after downtime

# Annual subscriptions without auto-renew whose renewal date passed 50 days ago, one second
# apart: each owes Active -> Expired -> Suspended -> Cancelled, each step its own timer.
SEED = """
WITH s AS (
    INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats, time_zone,
        auto_renew, stage, anniversary, starts_at, expires_at, renews_at, activated_at,
        stage_changed_at)
    SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'autocad', 'annual', 1,
        'Europe/Oslo', false, 'active', date '2024-01-01', $1::timestamptz - interval '1 year',
        $1 - make_interval(secs => g) - interval '1 second', $1 - make_interval(secs => g),
        $1 - interval '1 year', $1 - interval '1 year'
    FROM generate_series(1, $2) AS g
    RETURNING id, account_id, renews_at)
INSERT INTO timers (kind, timer_key, account_id, due_at)
SELECT 'renewal-date', id::text, account_id, renews_at FROM s
"""


@pytest.fixture
async def lifecycle(
    backing: Backing, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, ServiceProcess]]:
    async with deployment(backing, ("lifecycle",)) as dep:
        process = ServiceProcess(dep, "lifecycle", tmp_path)
        try:
            yield dep, process
        finally:
            process.stop()


async def query(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_r31_r34_timers_fire_exactly_once_in_effect_across_sigkill(
    backing: Backing, lifecycle: tuple[Deployment, ServiceProcess]
) -> None:
    dep, process = lifecycle
    dsn = dep.databases["lifecycle"]
    process.start()
    await process.wait_ready()  # migrated
    process.stop()  # down while the transitions fall due
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            SEED, datetime.now(UTC).replace(microsecond=0) - timedelta(days=50), SUBSCRIPTIONS
        )
    finally:
        await conn.close()

    changes = "SELECT count(*) FROM outbox WHERE event_type = 'StageChanged'"
    process.start()

    async def mid_batch() -> bool:
        return await query(dsn, changes) >= 400

    await wait_for(mid_batch, timeout=60, what="the first transitions")
    process.kill()
    at_kill = await query(dsn, changes)
    assert at_kill < TRANSITIONS, "the kill came too late to prove anything"
    process.start()
    await process.wait_ready()

    async def settled() -> bool:
        cancelled = await query(dsn, "SELECT count(*) FROM subscriptions WHERE stage='cancelled'")
        unsent = await query(dsn, "SELECT count(*) FROM outbox WHERE published_at IS NULL")
        return cancelled == SUBSCRIPTIONS and unsent == 0

    await wait_for(settled, timeout=120, what="every subscription cancelled and published")
    assert await query(dsn, changes) == TRANSITIONS  # each effect committed once
    assert await query(dsn, "SELECT count(*) FROM timers WHERE status = 'failed'") == 0

    records = await read_topic(
        backing.kafka, Topics(dep.prefix).events("lifecycle"), expected=TRANSITIONS
    )
    events: dict[tuple[str, str], set[str]] = defaultdict(set)
    for record in records:
        envelope = Envelope.model_validate_json(record.value)
        if envelope.event_type == "StageChanged":
            key = (str(envelope.subscription_id), envelope.payload["to_stage"])
            events[key].add(str(envelope.event_id))
    assert len(events) == TRANSITIONS  # every transition published...
    assert {len(ids) for ids in events.values()} == {1}  # ...as one event (redelivery = same id)
    to_stages: dict[str, int] = defaultdict(int)
    for _, stage in events:
        to_stages[stage] += 1
    assert dict(to_stages) == {s: SUBSCRIPTIONS for s in ("expired", "suspended", "cancelled")}
