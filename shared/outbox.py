"""Transactional outbox: emit inside the business transaction; a relay publishes in order per key.

The relay wakes on ``NOTIFY outbox`` (sent by ``emit`` and delivered at commit) and polls as a
fallback. It claims rows with ``FOR UPDATE SKIP LOCKED`` inside a transaction that also holds an
advisory lock, so with several replicas exactly one relay publishes at a time and the order of
rows (and so the order per key) is the order of commits' ids. A crash between publish and
"mark published" republishes the batch: consumers deduplicate by ``event_id`` (inbox).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from prometheus_client import Counter

from shared import tracing
from shared.background import sleep_until_woken
from shared.contracts import PRODUCER_OF, Causation, Contract, Envelope, new_envelope
from shared.db import Conn
from shared.time.clock import Clock
from shared.topics import Topics

log = logging.getLogger(__name__)

EVENTS_PUBLISHED = Counter(
    "platform_events_published_total", "Outbox rows published to Kafka, by topic.", ["topic"]
)

_RELAY_LOCK = 7_316_002
NOTIFY_CHANNEL = "outbox"


@dataclass(frozen=True)
class Emission:
    """One event to emit with ``Outbox.emit_many``."""

    event: Contract
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None = None
    occurred_at: datetime | None = None
    causation: Causation | None = None


@dataclass(frozen=True)
class Outbox:
    """Writes a service's events into its own outbox table."""

    producer: str
    topics: Topics
    clock: Clock

    async def emit(
        self,
        conn: Conn,
        event: Contract,
        *,
        account_id: uuid.UUID,
        subscription_id: uuid.UUID | None = None,
        occurred_at: datetime | None = None,
        causation: Envelope | None = None,
    ) -> Envelope:
        """Emit one event; the same path as ``emit_many``."""
        emission = Emission(event, account_id, subscription_id, occurred_at, causation)
        (envelope,) = await self.emit_many(conn, [emission])
        return envelope

    async def emit_many(self, conn: Conn, events: list[Emission]) -> list[Envelope]:
        """The one way events are written: in the caller's transaction, dated by the account's
        test clock when not told (business time), one round trip and one notification."""
        if not events:
            return []
        now = self.clock.now()
        clock_times = await _clock_times(conn, [e.account_id for e in events if not e.occurred_at])
        envelopes: list[Envelope] = []
        for item in events:
            if PRODUCER_OF.get(type(item.event).__name__) != self.producer:
                raise ValueError(f"{self.producer} does not publish {type(item.event).__name__}")
            envelopes.append(
                new_envelope(
                    event=item.event,
                    producer=self.producer,
                    account_id=item.account_id,
                    subscription_id=item.subscription_id,
                    # business time: the account's test clock, if it follows one
                    occurred_at=item.occurred_at or clock_times.get(item.account_id, now),
                    recorded_at=now,
                    causation=item.causation,
                )
            )
        topic = self.topics.events(self.producer)
        await _serialise_keys(conn, [e.account_id for e in envelopes])
        traceparent = tracing.current_traceparent()  # the trace goes on with the event
        await conn.executemany(
            """INSERT INTO outbox (event_id, topic, message_key, event_type, body, traceparent)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            [
                (
                    e.event_id,
                    topic,
                    str(e.account_id),
                    e.event_type,
                    e.model_dump_json().encode(),
                    traceparent,
                )
                for e in envelopes
            ],
        )
        await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
        return envelopes


async def _clock_times(conn: Conn, account_ids: list[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """The test-clock time of each of these accounts that follows a test clock."""
    if not account_ids:
        return {}
    rows = await conn.fetch(
        """SELECT a.account_id, t.now FROM account_clocks a
           JOIN test_clock_times t ON t.clock_id = a.clock_id
           WHERE a.account_id = ANY($1::uuid[])""",
        list(set(account_ids)),
    )
    return {row["account_id"]: row["now"] for row in rows}


async def _serialise_keys(conn: Conn, account_ids: list[uuid.UUID]) -> None:
    """Outbox ids are taken at insert, not at commit: two transactions writing events of the same
    account could commit out of id order, and the relay would publish them out of order. A
    transaction-scoped lock per account (taken in a fixed order, so two batches cannot deadlock)
    makes one account's events commit in id order."""
    keys = sorted({str(a) for a in account_ids})
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtextextended(k, 7316003)) FROM unnest($1::text[]) AS k",
        keys,  # unnest keeps the (sorted) array's order
    )


class OutboxRelay:
    """Publishes unpublished outbox rows with an idempotent producer (acks=all)."""

    def __init__(
        self, pool: asyncpg.Pool, producer: object, *, batch_size: int, poll_seconds: float
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        self._wake = asyncio.Event()

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were published."""
        async with self._pool.acquire() as conn, conn.transaction():
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", _RELAY_LOCK):
                return 0
            rows = await conn.fetch(
                """SELECT id, topic, message_key, event_type, body, traceparent FROM outbox
                   WHERE published_at IS NULL ORDER BY id LIMIT $1
                   FOR UPDATE SKIP LOCKED""",
                self._batch_size,
            )
            if not rows:
                return 0
            pending = []
            for row in rows:
                # send() only enqueues; awaiting all afterwards keeps per-partition order
                # (idempotent producer) while batching the round trips.
                pending.append(
                    await self._producer.send(  # type: ignore[attr-defined]
                        row["topic"],
                        value=bytes(row["body"]),
                        key=row["message_key"].encode(),
                        headers=[
                            ("event_type", row["event_type"].encode()),
                            *tracing.kafka_headers(row["traceparent"]),
                        ],
                    )
                )
            await asyncio.gather(*pending)
            await conn.execute(
                "UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])",
                [row["id"] for row in rows],
            )
            for row in rows:
                EVENTS_PUBLISHED.labels(row["topic"]).inc()
            return len(rows)

    def wake(self, *_: object) -> None:
        self._wake.set()

    async def run(self) -> None:
        listener = await self._pool.acquire()
        try:
            await listener.add_listener(NOTIFY_CHANNEL, self.wake)
            while True:
                self._wake.clear()
                try:
                    published = await self.publish_batch()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    log.warning("outbox relay: %s; retrying", error)
                    published = 0
                except Exception as error:  # Kafka errors: keep the rows, try again later
                    log.warning("outbox relay could not publish (%s); retrying", error)
                    published = 0
                if published >= self._batch_size:
                    continue
                await sleep_until_woken(self._wake, self._poll_seconds)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(NOTIFY_CHANNEL, self.wake)
            await self._pool.release(listener)


async def unpublished_count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
