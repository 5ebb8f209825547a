"""Driving the ordering service in-process (real PostgreSQL and Kafka) from integration tests."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from shared.auth import Kind, issue_token
from shared.background import within
from shared.config import Settings
from shared.contracts import Contract, Envelope, SubscriptionActivated, new_envelope
from shared.runtime import create_app, load_spec
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.support import Backing, deployment, wait_for


class SettableClock:
    """The ordering app's clock in these tests: set to any instant (tests move it both ways)."""

    def __init__(self) -> None:
        self.at: datetime | None = None

    def now(self) -> datetime:
        return self.at or datetime.now(UTC)


Who = tuple[Kind, uuid.UUID]


def user(subject: uuid.UUID) -> Who:
    return ("user", subject)


class Ordering:
    """An HTTP client of the in-process ordering app, plus its database and Kafka topics."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        pool: asyncpg.Pool,
        settings: Settings,
        clock: SettableClock,
        producer: AIOKafkaProducer,
    ) -> None:
        self.client = client
        self.pool = pool
        self.settings = settings
        self.clock = clock
        self.producer = producer
        self.topics = Topics(settings.topic_prefix)

    def auth(self, who: Who | None) -> dict[str, str]:
        if who is None:
            return {}
        token = issue_token(self.settings, self.clock, subject=who[1], kind=who[0])
        return {"Authorization": f"Bearer {token}"}

    async def call(
        self,
        method: str,
        path: str,
        who: Who | None = None,
        body: Any = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        sent = {**self.auth(who), **(headers or {})}
        if method != "GET":
            sent.setdefault("Idempotency-Key", key or str(uuid.uuid4()))
        return await self.client.request(method, path, json=body, headers=sent)

    async def open_account(
        self, currency: str = "NOK", time_zone: str = "Europe/Oslo"
    ) -> tuple[uuid.UUID, uuid.UUID, str]:
        """A new account; returns (account id, buyer id, buyer e-mail)."""
        email = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
        body = {
            "name": "Fjord Arkitekter AS",
            "country": "NO",
            "currency": currency,
            "language": "nb",
            "time_zone": time_zone,
            "buyer": {"email": email, "name": "Kari Nordmann"},
        }
        response = await self.call("POST", "/v1/accounts", body=body)
        assert response.status_code == 201, response.text
        opened = response.json()
        return uuid.UUID(opened["id"]), uuid.UUID(opened["buyer"]["user_id"]), email

    async def add_user(self, account: uuid.UUID, admin: Who, email: str | None = None) -> uuid.UUID:
        body = {"email": email or f"u-{uuid.uuid4().hex[:10]}@example.com", "name": "Ola"}
        response = await self.call("POST", f"/v1/accounts/{account}/users", admin, body)
        assert response.status_code == 201, response.text
        return uuid.UUID(response.json()["user_id"])

    async def order(self, account: uuid.UUID, buyer: uuid.UUID, **fields: Any) -> dict[str, Any]:
        body = {
            "offering": "autocad",
            "term": "annual",
            "seats": 1,
            "payment_method": "card",
            **fields,
        }
        response = await self.call("POST", f"/v1/accounts/{account}/orders", user(buyer), body)
        assert response.status_code == 201, response.text
        result: dict[str, Any] = response.json()
        return result

    async def publish(
        self, event: Contract, account: uuid.UUID, subscription: uuid.UUID, at: datetime
    ) -> None:
        """A lifecycle event on the real lifecycle topic, as lifecycle would publish it."""
        envelope = new_envelope(
            event=event,
            producer="lifecycle",
            account_id=account,
            subscription_id=subscription,
            occurred_at=at,
            recorded_at=at,
        )
        await self.producer.send_and_wait(
            self.topics.events("lifecycle"),
            value=envelope.model_dump_json().encode(),
            key=str(account).encode(),
        )

    async def activate(
        self,
        account: uuid.UUID,
        order: dict[str, Any],
        renews_at: datetime,
        term: str = "annual",
        trial: bool = False,
    ) -> None:
        """Publish SubscriptionActivated for ``order`` and wait until ordering projected it."""
        subscription = uuid.UUID(order["subscription_id"])
        starts = datetime.fromisoformat(order["placed_at"])
        event = SubscriptionActivated(
            order_id=uuid.UUID(order["id"]),
            offering=order["offering"],
            term=term,
            seats=order["seats"],
            time_zone="Europe/Oslo",
            starts_at=starts,
            expires_at=renews_at - timedelta(seconds=1),
            renews_at=renews_at,
            auto_renew=True,
            trial=trial,
        )
        await self.publish(event, account, subscription, starts)
        await self.wait_projection(subscription, "renews_at", renews_at)

    async def wait_projection(self, subscription: uuid.UUID, column: str, value: Any) -> None:
        async def projected() -> bool:
            row = await self.pool.fetchrow(
                "SELECT * FROM subscriptions WHERE id = $1", subscription
            )
            return row is not None and row[column] == value

        await wait_for(projected, timeout=30, what=f"ordering's projection {column}={value}")

    async def outbox(self, event_type: str, account: uuid.UUID) -> list[dict[str, Any]]:
        import json

        rows = await self.pool.fetch(
            "SELECT body FROM outbox WHERE event_type = $1 AND message_key = $2 ORDER BY id",
            event_type,
            str(account),
        )
        return [json.loads(bytes(r["body"])) for r in rows]

    async def published(self, kafka: str, event_type: str, account: uuid.UUID) -> list[Envelope]:
        """The ``event_type`` envelopes of ``account`` as read back from the real ordering topic."""

        async def relayed() -> int:
            return int(
                await self.pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
                == 0
            ) and int(await self.pool.fetchval("SELECT count(*) FROM outbox"))

        total = await wait_for(relayed, what="the outbox relayed")
        records = await read_topic(kafka, self.topics.events("ordering"), total)
        envelopes = [Envelope.model_validate_json(r.value) for r in records]
        return [e for e in envelopes if e.event_type == event_type and e.account_id == account]

    async def counts(self) -> dict[str, int]:
        """Row counts of every table a write could touch (to prove a refusal stored nothing)."""
        tables = (
            "accounts",
            "users",
            "account_people",
            "orders",
            "quotes",
            "subscriptions",
            "renewal_requests",
            "refunds",
            "outbox",
            "idempotency_keys",
        )
        return {
            t: int(await self.pool.fetchval(f"SELECT count(*) FROM {t}"))  # noqa: S608
            for t in tables
        }

    async def state(self) -> list[Any]:
        """Everything ordering stores, for "the database is unchanged" assertions."""
        found: list[Any] = []
        for table in ("accounts", "users", "account_people", "quotes", "subscriptions"):
            found.append(
                [tuple(r) for r in await self.pool.fetch(f"SELECT * FROM {table} ORDER BY 1, 2")]  # noqa: S608
            )
        found.append(await self.counts())
        return found


@contextlib.asynccontextmanager
async def running_ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with deployment(backing, ("ordering",)) as dep:
        clock = SettableClock()
        settings = dep.settings("ordering")
        app = create_app(load_spec("ordering"), settings, clock)
        producer = AIOKafkaProducer(bootstrap_servers=backing.kafka, enable_idempotence=True)
        async with app.router.lifespan_context(app):
            await producer.start()
            try:
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(
                    transport=transport, base_url="http://ordering"
                ) as client:
                    yield Ordering(client, app.state.runtime.pool, settings, clock, producer)
            finally:
                await within(15, "the test's Kafka producer (producer.stop)", producer.stop())
