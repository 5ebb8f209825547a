"""Transactional outbox: emit inside the business transaction; a relay publishes in order per key.

The relay wakes on ``NOTIFY outbox`` (sent by ``emit`` and delivered at commit) and polls as a
fallback; after a wake-up it waits ``outbox_linger_seconds`` (10 ms) so the rows committed
meanwhile share its batch (issue 17). It claims rows with ``FOR UPDATE SKIP LOCKED`` inside a
transaction that also holds an advisory lock, so with several replicas exactly one relay
publishes at a time and the order of rows (and so the order per key) is the order of commits'
ids. A crash between publish and "mark published" republishes the batch: consumers
deduplicate by ``event_id`` (inbox).
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
        # One round trip: this transaction's per-account locks, then the test-clock times.
        clock_times = await _lock_keys_and_read_clocks(
            conn,
            [e.account_id for e in events],
            {e.account_id for e in events if not e.occurred_at},
        )
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
        traceparent = tracing.current_traceparent()  # the trace goes on with the event
        # One round trip: the rows (ids in array order) and the relay's wake-up (at commit).
        await conn.execute(
            """WITH rows AS (
                   INSERT INTO outbox (event_id, topic, message_key, event_type, body,
                                       traceparent)
                   SELECT e.id, $2::text, e.k, e.t, e.b, $6::text
                   FROM unnest($1::uuid[], $3::text[], $4::text[], $5::bytea[])
                        WITH ORDINALITY AS e(id, k, t, b, n)
                   ORDER BY e.n
                   RETURNING 1)
               SELECT pg_notify($7, '') FROM (SELECT 1 FROM rows LIMIT 1) AS one""",
            [e.event_id for e in envelopes],
            topic,
            [str(e.account_id) for e in envelopes],
            [e.event_type for e in envelopes],
            [e.model_dump_json().encode() for e in envelopes],
            traceparent,
            NOTIFY_CHANNEL,
        )
        return envelopes


async def _lock_keys_and_read_clocks(
    conn: Conn, account_ids: list[uuid.UUID], clocked: set[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    """Lock each account's outbox key for this transaction, then return the test-clock time of
    those of ``clocked`` that follow a test clock.

    Outbox ids are taken at insert, not at commit: two transactions writing events of the same
    account could commit out of id order, and the relay would publish them out of order. A
    transaction-scoped lock per account (taken in a fixed order, so two batches cannot deadlock)
    makes one account's events commit in id order. The clock times need no lock: reading them
    in the same statement saves a round trip."""
    keys = sorted({str(a) for a in account_ids})
    rows = await conn.fetch(
        # The locks are the outer side of a LEFT JOIN: always evaluated, before the clocks.
        """SELECT c.account_id, c.now
           FROM (SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7316003))) AS n
                 FROM unnest($1::text[]) AS k) AS locked  -- unnest keeps the sorted order
           LEFT JOIN LATERAL (
               SELECT a.account_id, t.now FROM account_clocks a
               JOIN test_clock_times t ON t.clock_id = a.clock_id
               WHERE a.account_id = ANY($2::uuid[]) AND locked.n > 0) AS c ON true""",
        keys,
        list(clocked),
    )
    return {row["account_id"]: row["now"] for row in rows if row["account_id"] is not None}


class OutboxRelay:
    """Publishes unpublished outbox rows with an idempotent producer (acks=all)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: object,
        *,
        batch_size: int,
        poll_seconds: float,
        linger_seconds: float = 0.0,
    ) -> None:
        self._pool = pool
        self._producer = producer
        self._batch_size = batch_size
        self._poll_seconds = poll_seconds
        # Woken by a commit, the relay waits this long before it claims, so the rows committed
        # meanwhile go in the same batch (one transaction, one produce request) instead of one
        # batch, and for the late notifications an empty one, each.
        self._linger_seconds = linger_seconds
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
                woken = await sleep_until_woken(self._wake, self._poll_seconds)
                if woken and self._linger_seconds > 0:
                    await asyncio.sleep(self._linger_seconds)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(NOTIFY_CHANNEL, self.wake)
            await self._pool.release(listener)


async def unpublished_count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
