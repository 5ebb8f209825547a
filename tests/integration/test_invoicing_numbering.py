"""Invoice numbers are gapless and unique per series with two invoicing processes issuing at once
(the counter row is locked until the invoice commits; see migrations/0001)."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts import OrderPlaced, new_envelope
from shared.topics import Topics
from tests.integration.conftest import in_process
from tests.support import Backing, deployment, wait_for

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


def ordering_partitions(app: Any, topic: str) -> set[int]:
    [subscriber] = app.state.runtime.broker.subscribers
    consumer = subscriber.consumer
    if consumer is None:
        return set()
    return {tp.partition for tp in consumer.assignment() if tp.topic == topic}


async def test_two_invoicing_processes_issue_500_invoices_with_gapless_unique_numbers(
    backing: Backing,
) -> None:
    async with (
        deployment(backing, ("invoicing",)) as dep,
        in_process(dep, "invoicing") as first,
        in_process(dep, "invoicing") as second,
    ):
        topic = Topics(dep.prefix).events("ordering")

        async def both_consuming() -> bool:
            mine = ordering_partitions(first, topic), ordering_partitions(second, topic)
            return all(mine) and not (mine[0] & mine[1])

        # The same consumer group: each process owns some of the topic's partitions.
        await wait_for(both_consuming, timeout=60, what="both processes assigned partitions")
        accounts = [uuid.uuid4() for _ in range(ACCOUNTS)]
        producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
        await producer.start()
        started = time.monotonic()
        try:
            for n in range(ORDERS):
                account = accounts[n % ACCOUNTS]
                await producer.send(topic, value=order_placed(account), key=str(account).encode())
            await producer.flush()
        finally:
            await producer.stop()
        pool = first.state.runtime.pool

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
        # Both processes issued: each owns partitions that received orders.
        for app in (first, second):
            [subscriber] = app.state.runtime.broker.subscribers
            positions = [
                await subscriber.consumer.position(tp)
                for tp in subscriber.consumer.assignment()
                if tp.topic == topic
            ]
            assert sum(positions) > 0
        print(f"\n{ORDERS} invoices by two processes in {elapsed:.1f}s")
