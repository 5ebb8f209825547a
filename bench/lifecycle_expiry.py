"""Benchmark (not a test): N subscriptions expiring in the same minute.

Starts lifecycle as its own process on the shared Kafka and PostgreSQL (a fresh database and
topic prefix), seeds N annual subscriptions without auto-renew whose renewal instants all fall
in the minute that has just ended (with their renewal-date timers), commits them at once and
measures the time until every one is Expired and every StageChanged is published to Kafka.
Prints firings per second and the service's peak memory (VmHWM).

    .venv/bin/python -m bench.lifecycle_expiry --subscriptions 100000
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from shared.topics import Topics
from tests.support import REPO, Deployment, ServiceProcess, deployment, find_backing

SEED = """
WITH s AS (
    INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats, time_zone,
        auto_renew, stage, anniversary, starts_at, expires_at, renews_at, activated_at,
        stage_changed_at)
    SELECT gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'autocad', 'annual', 1,
        'Europe/Oslo', false, 'active', date '2024-01-01', $1::timestamptz - interval '1 year',
        $1::timestamptz + make_interval(secs => (g % 60000) / 1000.0) - interval '1 second',
        $1::timestamptz + make_interval(secs => (g % 60000) / 1000.0),
        $1::timestamptz - interval '1 year', $1::timestamptz - interval '1 year'
    FROM generate_series(1, $2) AS g
    RETURNING id, account_id, renews_at)
INSERT INTO timers (kind, timer_key, account_id, due_at)
SELECT 'renewal-date', id::text, account_id, renews_at FROM s
"""


class TunedProcess(ServiceProcess):
    """The service process with the timer batch size of the run."""

    def __init__(self, dep: Deployment, log_dir: Path, batch: int) -> None:
        super().__init__(dep, "lifecycle", log_dir)
        self.batch = batch

    def start(self) -> None:
        env = self.dep.environment(self.service)
        env["PLATFORM_TIMER_BATCH_SIZE"] = str(self.batch)
        env["PLATFORM_OUTBOX_BATCH_SIZE"] = "2000"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.lifecycle"],
            cwd=REPO,
            env=env,
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )


def peak_memory_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def published_on_topic(bootstrap: str, topic: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        partitions = consumer._client.cluster.partitions_for_topic(topic) or set()
        offsets = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        return int(sum(offsets.values()))
    finally:
        await consumer.stop()


async def run(count: int, batch: int) -> None:
    backing, release = find_backing()
    try:
        async with deployment(backing, ("lifecycle",)) as dep:
            logs = Path(tempfile.mkdtemp(prefix="bench-lifecycle-"))
            process = TunedProcess(dep, logs, batch)
            process.start()
            try:
                await process.wait_ready()
                assert process.process is not None
                await measure(dep, backing.kafka, process.process.pid, count, batch)
            finally:
                process.stop()
    finally:
        release()


async def measure(dep: Deployment, kafka: str, pid: int, count: int, batch: int) -> None:
    dsn = dep.databases["lifecycle"]
    conn = await asyncpg.connect(dsn)
    topic = Topics(dep.prefix).events("lifecycle")
    try:
        minute = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1)
        seeding = time.perf_counter()
        await conn.execute(SEED, minute, count)  # one transaction: all due at commit
        started = time.perf_counter()
        print(
            f"seeded {count} subscriptions expiring in {minute:%H:%M} UTC "
            f"in {started - seeding:.1f}s"
        )
        expired_after = None
        while True:
            await asyncio.sleep(0.25)
            expired = await conn.fetchval(
                "SELECT count(*) FROM subscriptions WHERE stage = 'expired'"
            )
            if expired_after is None and expired == count:
                expired_after = time.perf_counter() - started
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            if expired == count and unsent == 0:
                break
        done = time.perf_counter() - started
        on_topic = await published_on_topic(kafka, topic)
        assert expired_after is not None
        print(
            f"all Expired (state committed)  after {expired_after:7.2f}s "
            f"-> {count / expired_after:8.0f} firings/s"
        )
        print(f"all Expired and published      after {done:7.2f}s -> {count / done:8.0f} firings/s")
        print(f"messages on {topic}: {on_topic}")
        print(
            f"timer batch size {batch}; service peak memory (VmHWM) {peak_memory_mib(pid):.0f} MiB"
        )
    finally:
        await conn.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500, help="timers claimed per transaction")
    args = parser.parse_args()
    asyncio.run(run(args.subscriptions, args.batch))


if __name__ == "__main__":
    main()
