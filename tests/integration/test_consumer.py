"""The consuming side on real Kafka and PostgreSQL: inbox, retries, dead letters."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from shared.contracts import OrderPlaced, new_envelope
from shared.topics import Topics
from tests.integration.conftest import in_process, read_topic
from tests.support import Backing, Deployment, deployment, wait_for

pytestmark = pytest.mark.integration


def order_placed(account_id: uuid.UUID, offering: str = "autocad") -> bytes:
    now = datetime.now(UTC)
    event = OrderPlaced(
        order_id=uuid.uuid4(),
        order_number=f"ORD-T{uuid.uuid4().hex[:6]}",
        subscription_id=uuid.uuid4(),
        offering=offering,
        term="annual",
        seats=2,
        payment_method="card",
        channel="direct",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
        placed_at=now,
        buyer_email="buyer@example.com",
    )
    envelope = new_envelope(
        event=event, producer="ordering", account_id=account_id, occurred_at=now, recorded_at=now
    )
    return envelope.model_dump_json().encode()


@pytest.fixture
async def invoicing(backing: Backing) -> AsyncIterator[tuple[Deployment, asyncpg.Pool]]:
    async with deployment(backing, ("invoicing",)) as dep, in_process(dep, "invoicing") as app:
        yield dep, app.state.runtime.pool


async def send(backing: Backing, topic: str, key: uuid.UUID, *values: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value=value, key=str(key).encode())
    finally:
        await producer.stop()


async def invoice_count(pool: asyncpg.Pool, order_body: bytes) -> int:
    order_id = uuid.UUID(__import__("json").loads(order_body)["payload"]["order_id"])
    return int(await pool.fetchval("SELECT count(*) FROM invoices WHERE order_id = $1", order_id))


async def test_redelivered_order_placed_creates_one_invoice_and_one_charge(
    backing: Backing, invoicing: tuple[Deployment, asyncpg.Pool]
) -> None:
    dep, pool = invoicing
    topic = Topics(dep.prefix).events("ordering")
    account = uuid.uuid4()
    first, sentinel = order_placed(account), order_placed(account)
    # The same event three times (a redelivery), then another event on the same key.
    await send(backing, topic, account, first, first, first, sentinel)
    await wait_for(lambda: invoice_count(pool, sentinel), what="the sentinel's invoice")
    assert await invoice_count(pool, first) == 1
    assert await pool.fetchval("SELECT count(*) FROM payments") == 2
    numbers = [
        r["invoice_number"]
        for r in await pool.fetch("SELECT invoice_number FROM invoices ORDER BY invoice_number")
    ]
    assert numbers == ["INV-0000001", "INV-0000002"]  # gapless: the duplicate took no number
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM inbox WHERE consumer = 'invoicing' AND event_type = 'OrderPlaced'"
        )
        == 2
    )


async def test_poison_messages_go_to_the_dead_letter_topic_and_the_consumer_goes_on(
    backing: Backing, invoicing: tuple[Deployment, asyncpg.Pool]
) -> None:
    dep, pool = invoicing
    topics = Topics(dep.prefix)
    account = uuid.uuid4()
    not_json = b"{this is not json"
    wrong_payload = order_placed(account).replace(b'"seats":2', b'"seats":"many"')
    handler_fails = order_placed(account, offering="no-such-offering")  # no price: KeyError
    sentinel = order_placed(account)
    await send(
        backing,
        topics.events("ordering"),
        account,
        not_json,
        wrong_payload,
        handler_fails,
        sentinel,
    )
    await wait_for(lambda: invoice_count(pool, sentinel), what="the invoice after the poison")
    dead = await read_topic(backing.kafka, topics.dead_letters("invoicing"), 3)
    assert [d.value for d in dead] == [not_json, wrong_payload, handler_fails]
    reasons = [dict(d.headers)["x-dlq-reason"] for d in dead]
    assert reasons == [b"unparseable", b"unparseable", b"handler-failed"]
    assert dict(dead[2].headers)["x-dlq-attempts"] == b"4"
    assert b"KeyError" in dict(dead[2].headers)["x-dlq-error"]
    assert all(
        dict(d.headers)["x-original-topic"] == topics.events("ordering").encode() for d in dead
    )
    assert await invoice_count(pool, handler_fails) == 0  # nothing half-stored


async def test_a_replayed_dead_letter_is_handled_once_its_cause_is_fixed(
    backing: Backing, invoicing: tuple[Deployment, asyncpg.Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    from services.invoicing import domain
    from shared.dead_letters import replay

    dep, pool = invoicing
    account = uuid.uuid4()
    unpriced = order_placed(account, offering="new-product")
    await send(backing, Topics(dep.prefix).events("ordering"), account, unpriced)
    await read_topic(backing.kafka, Topics(dep.prefix).dead_letters("invoicing"), 1)
    assert await invoice_count(pool, unpriced) == 0
    # The cause is fixed (the product gets a price), then the dead letter is replayed.
    book = domain.price_book()
    monkeypatch.setitem(book["prices_per_seat"], "new-product", {"annual": "100.00"})
    assert await replay(dep.settings("invoicing"), "invoicing") == 1
    await wait_for(lambda: invoice_count(pool, unpriced), what="the replayed order's invoice")
    assert await replay(dep.settings("invoicing"), "invoicing") == 0  # nothing left to replay
