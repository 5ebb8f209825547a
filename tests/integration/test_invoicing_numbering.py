"""Invoice numbers are gapless and unique per series with two invoicing processes issuing at once
(the counter row is locked until the invoice commits; see migrations/0001)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from shared.contracts import OrderPlaced, new_envelope
from shared.topics import Topics
from tests.support import Backing, Deployment, ServiceProcess, deployment, free_port, wait_for

pytestmark = pytest.mark.integration
ORDERS = 500
ACCOUNTS = 60


def order_placed(account_id: uuid.UUID) -> bytes:
    now = datetime.now(UTC)
    event = OrderPlaced(
        order_id=uuid.uuid4(),
        order_number=f"ORD-{uuid.uuid4().hex[:8]}",
        subscription_id=uuid.uuid4(),
        offering="revit",
        term="annual",
        seats=1,
        payment_method="card",
        channel="direct",
        billing_country="SE",
        currency="SEK",
        time_zone="Europe/Stockholm",
        placed_at=now,
        buyer_email="buyer@example.com",
    )
    envelope = new_envelope(
        event=event, producer="ordering", account_id=account_id, occurred_at=now, recorded_at=now
    )
    return envelope.model_dump_json().encode()


async def group_members(bootstrap: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        # Raw DescribeGroups: (error_code, group_id, state, protocol_type, protocol, members, ...)
        [(_, _, state, _, _, members, *_)] = response.groups
        return len(members) if state == "Stable" else 0
    finally:
        await admin.close()


async def test_two_invoicing_processes_issue_500_invoices_with_gapless_unique_numbers(
    backing: Backing, tmp_path: Path
) -> None:
    async with deployment(backing, ("invoicing",)) as dep:
        replicas = [
            ServiceProcess(dep, "invoicing", tmp_path),
            ServiceProcess(dep, "invoicing", tmp_path, port=free_port()),
        ]
        for replica in replicas:
            replica.start()
        try:
            await issue_with_two_replicas(backing, dep, replicas)
        finally:
            for replica in replicas:
                replica.stop()


async def issue_with_two_replicas(
    backing: Backing, dep: Deployment, replicas: list[ServiceProcess]
) -> None:
    for replica in replicas:
        await replica.wait_ready()
    topics = Topics(dep.prefix)

    async def both_in_the_group() -> bool:
        return await group_members(backing.kafka, topics.group("invoicing")) == 2

    # One consumer group, two OS processes: each owns some of the topic's partitions.
    await wait_for(both_in_the_group, timeout=60, what="both processes in the consumer group")
    accounts = [uuid.uuid4() for _ in range(ACCOUNTS)]
    producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
    await producer.start()
    started = time.monotonic()
    try:
        for n in range(ORDERS):
            account = accounts[n % ACCOUNTS]
            await producer.send(
                topics.events("ordering"), value=order_placed(account), key=str(account).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    pool = await asyncpg.create_pool(dep.databases["invoicing"], min_size=1, max_size=2)
    try:

        async def all_invoiced() -> bool:
            return int(await pool.fetchval("SELECT count(*) FROM invoices")) >= ORDERS

        await wait_for(all_invoiced, timeout=150, what=f"{ORDERS} invoices")
        elapsed = time.monotonic() - started
        numbers = [
            r["invoice_number"] for r in await pool.fetch("SELECT invoice_number FROM invoices")
        ]
        assert sorted(numbers) == [f"INV-{n:07d}" for n in range(1, ORDERS + 1)]
        assert await pool.fetchval("SELECT count(DISTINCT order_id) FROM invoices") == ORDERS
        assert await pool.fetchval("SELECT last_number FROM invoice_series") == ORDERS
        assert await group_members(backing.kafka, topics.group("invoicing")) == 2
    finally:
        await pool.close()
    print(f"\n{ORDERS} invoices by two processes in {elapsed:.1f}s")
