"""Invoicing on the real Kafka and PostgreSQL: an event that arrives before its ``OrderPlaced``
waits for it (``shared.messaging``'s deferred events) instead of being dead-lettered, and is
applied, in the order's transaction, once the order arrives.

The events are ordering's own: the service places the order and adds seats through its HTTP
door, and the envelopes are taken from its outbox as it wrote them. Invoicing then gets them
with the order held back, as another partition's pace or a replay could deliver them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from shared.contracts import Envelope
from shared.topics import Topics
from tests.integration.conftest import in_process
from tests.integration.ordering_helpers import running_ordering, user
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


def consumed(outcome: str) -> float:
    found = REGISTRY.get_sample_value(
        "platform_events_consumed_total", {"consumer": "invoicing", "outcome": outcome}
    )
    return found or 0.0


async def test_r30_seats_added_before_their_order_wait_for_it_and_are_invoiced_once_it_arrives(
    backing: Backing,
) -> None:
    # Ordering's own events: an account, an order, then seats added to the active subscription.
    async with running_ordering(backing) as ordering:
        account, buyer, _ = await ordering.open_account()
        order = await ordering.order(account, buyer, seats=2)
        renews_at = (datetime.now(UTC) + timedelta(days=200)).replace(microsecond=0)
        await ordering.activate(account, order, renews_at)
        subscription = uuid.UUID(order["subscription_id"])
        added = await ordering.call(
            "POST", f"/v1/subscriptions/{subscription}/seats", user(buyer), {"seats": 3}
        )
        assert added.status_code == 201, added.text
        rows = await ordering.pool.fetch(
            "SELECT event_type, body FROM outbox WHERE message_key = $1 ORDER BY id", str(account)
        )
    bodies = [(r["event_type"], bytes(r["body"])) for r in rows]
    [placed] = [body for event_type, body in bodies if event_type == "OrderPlaced"]
    [seats] = [body for event_type, body in bodies if event_type == "SeatsAdded"]
    seats_event = Envelope.model_validate_json(seats)
    assert seats_event.subscription_id == subscription

    dead_before, deferred_before = consumed("dead-lettered"), consumed("deferred")
    async with (
        deployment(backing, ("invoicing",)) as dep,
        in_process(dep, "invoicing") as app,
    ):
        pool = app.state.runtime.pool
        producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
        await producer.start()
        topic = Topics(dep.prefix).events("ordering")
        try:
            # Everything but the order: the seats arrive first and wait for the subscription.
            for event_type, body in bodies:
                if event_type != "OrderPlaced":
                    await producer.send_and_wait(topic, value=body, key=str(account).encode())

            async def waiting() -> list[str]:
                found = await pool.fetch(
                    "SELECT cause FROM deferred_events WHERE consumer = 'invoicing'"
                    " AND event_id = $1",
                    seats_event.event_id,
                )
                return [r["cause"] for r in found]

            assert await wait_for(waiting, what="the seats waiting") == [
                f"subscription:{subscription}"
            ]
            assert await pool.fetchval("SELECT count(*) FROM invoices") == 0
            # The order arrives: invoiced, and the seats waiting for it are applied with it.
            await producer.send_and_wait(topic, value=placed, key=str(account).encode())

            async def invoiced() -> list[str] | None:
                found = await pool.fetch(
                    "SELECT purpose FROM invoices WHERE subscription_id = $1 ORDER BY purpose",
                    subscription,
                )
                purposes = [str(r["purpose"]) for r in found]
                return purposes if len(purposes) == 2 else None

            assert await wait_for(invoiced, what="order and co-term invoices") == [
                "co_term",
                "order",
            ]
        finally:
            await producer.stop()
        assert await pool.fetchval("SELECT count(*) FROM deferred_events") == 0
        co_term = await pool.fetchrow(
            "SELECT body FROM outbox WHERE event_type = 'InvoiceIssued'"
            " AND convert_from(body, 'UTF8')::jsonb -> 'payload' ->> 'purpose' = 'co_term'"
        )
        issued = json.loads(bytes(co_term["body"]))
        assert issued["payload"]["order_id"] == str(seats_event.payload["order_id"])
        assert issued["causation_id"] == str(seats_event.event_id)
        assert [line["quantity"] for line in issued["payload"]["lines"]] == [3]
    assert consumed("dead-lettered") == dead_before  # nothing was dead-lettered
    assert consumed("deferred") == deferred_before + 1
