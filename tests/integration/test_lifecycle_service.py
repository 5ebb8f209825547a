"""Lifecycle over real Kafka and PostgreSQL: an order arrives, the subscription is activated and
announced, and the HTTP door shows it by R8."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from shared.auth import issue_token
from shared.contracts import (
    Contract,
    Envelope,
    OrderPlaced,
    Person,
    RolesChanged,
    new_envelope,
)
from shared.time.clock import SystemClock
from shared.time.test_clocks import attach_account, set_clock_time
from shared.topics import Topics
from tests.integration.conftest import in_process, read_topic
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration
RENEWAL_FIELDS = {"term", "expires_at", "renews_at", "auto_renew", "pending_changes"}


def person(role: str) -> Person:
    return Person(
        user_id=uuid.uuid4(),
        email=f"{role}-{uuid.uuid4().hex[:8]}@example.com",
        name=role,
        language="en",
    )


async def test_r8_r23_r35_order_activates_and_each_role_sees_its_part(backing: Backing) -> None:
    buyer, admin, payer, stranger = (person(r) for r in ("buyer", "admin", "payer", "x"))
    account, subscription = uuid.uuid4(), uuid.uuid4()
    now = datetime.now(UTC)
    events: list[Contract] = [
        RolesChanged(buyer=buyer, primary_admin=buyer, secondary_admins=[admin], payers=[payer]),
        OrderPlaced(
            order_id=uuid.uuid4(),
            order_number="ORD-42",
            subscription_id=subscription,
            offering="autocad",
            term="annual",
            seats=3,
            payment_method="card",
            channel="direct",
            billing_country="NO",
            currency="NOK",
            time_zone="Europe/Oslo",
            placed_at=now,
            buyer_email=buyer.email,
        ),
    ]
    async with deployment(backing, ("lifecycle",)) as dep:
        topics = Topics(dep.prefix)
        async with in_process(dep, "lifecycle") as app:
            producer = AIOKafkaProducer(bootstrap_servers=backing.kafka)
            await producer.start()
            try:
                for event in events:
                    envelope = new_envelope(
                        event=event,
                        producer="ordering",
                        account_id=account,
                        subscription_id=subscription,
                        occurred_at=now,
                        recorded_at=now,
                    )
                    await producer.send_and_wait(
                        topics.events("ordering"),
                        envelope.model_dump_json().encode(),
                        key=str(account).encode(),
                    )
            finally:
                await producer.stop()
            settings = dep.settings("lifecycle")
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://lc") as client:

                async def get(path: str, who: Person) -> httpx.Response:
                    token = issue_token(settings, SystemClock(), subject=who.user_id)
                    return await client.get(path, headers={"Authorization": f"Bearer {token}"})

                async def as_buyer() -> dict[str, Any] | None:
                    r = await get(f"/v1/subscriptions/{subscription}", buyer)
                    return r.json() if r.status_code == 200 else None

                full = await wait_for(as_buyer, what="the activated subscription")
                assert full["stage"] == "active" and full["seats"] == 3
                assert RENEWAL_FIELDS <= set(full)
                assert full["entitlements"]["product_access"] == "full"  # R35
                product = (await get(f"/v1/subscriptions/{subscription}", admin)).json()
                assert product["stage"] == "active" and product["entitlements"]
                assert not RENEWAL_FIELDS & set(product)  # R8: no renewal data for admins
                listed = (await get(f"/v1/accounts/{account}/subscriptions", admin)).json()
                assert [set(i) for i in listed["items"]] == [set(product)]
                assert (await get(f"/v1/subscriptions/{subscription}", payer)).status_code == 403
                missing = await get(f"/v1/subscriptions/{subscription}", stranger)
                assert missing.status_code == 404  # R8: ids leak nothing
                listing = await get(f"/v1/accounts/{account}/subscriptions", stranger)
                assert listing.status_code == 404
        records = await read_topic(backing.kafka, topics.events("lifecycle"), expected=1)
        [activated] = [
            r for r in records if dict(r.headers)["event_type"] == b"SubscriptionActivated"
        ]
        assert activated.key == str(account).encode()


async def test_activation_is_announced_at_the_accounts_business_time(backing: Backing) -> None:
    """An account on a test clock: SubscriptionActivated occurs at the clock's time, not at the
    wall clock's (the demo's timeline showed it a few years off)."""
    buyer = person("buyer")
    account, subscription, clock = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    business_now = datetime(2030, 1, 10, 13, 30, tzinfo=UTC)
    order = OrderPlaced(
        order_id=uuid.uuid4(),
        order_number="ORD-43",
        subscription_id=subscription,
        offering="autocad",
        term="annual",
        seats=1,
        payment_method="card",
        channel="direct",
        billing_country="NO",
        currency="NOK",
        time_zone="Europe/Oslo",
        placed_at=business_now,
        buyer_email=buyer.email,
    )
    async with deployment(backing, ("lifecycle",)) as dep:
        topics = Topics(dep.prefix)
        async with in_process(dep, "lifecycle") as app:
            async with app.state.runtime.pool.acquire() as conn:
                await set_clock_time(conn, clock, business_now)
                await attach_account(conn, account, clock)
            producer = AIOKafkaProducer(bootstrap_servers=backing.kafka)
            await producer.start()
            try:
                envelope = new_envelope(
                    event=order,
                    producer="ordering",
                    account_id=account,
                    subscription_id=subscription,
                    occurred_at=business_now,
                    recorded_at=datetime.now(UTC),
                )
                await producer.send_and_wait(
                    topics.events("ordering"),
                    envelope.model_dump_json().encode(),
                    key=str(account).encode(),
                )
            finally:
                await producer.stop()
            records = await read_topic(backing.kafka, topics.events("lifecycle"), expected=1)
    [activated] = [
        Envelope.model_validate_json(r.value)
        for r in records
        if dict(r.headers)["event_type"] == b"SubscriptionActivated"
    ]
    assert activated.occurred_at == business_now
