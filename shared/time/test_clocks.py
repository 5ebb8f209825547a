"""Test clocks across the four services (DESIGN.md, "Time").

An account may follow a test clock from birth (``AccountOpened.test_clock_id``); every service
records that in ``account_clocks`` and answers "now" for the account from ``test_clock_times``.
Timers of such an account carry the clock id and fall due by the clock, not the wall.

Lifecycle owns the clocks and advances one in *steps* (``services/lifecycle/test_clocks.py``):
each step moves the clock to the earliest time any service still has due, or to the target.
The protocol runs on one topic, ``<prefix>test-clocks`` (one partition, so it is ordered):

- ``moved``   lifecycle → all: clock C is now at T (step n). Each service's ``ClockAgent`` stores
  T and wakes its timer loop, which fires what fell due in date order.
- ``report``  each service → lifecycle, repeatedly while C is advancing: how many of its timers
  for C are due and unfired (plus service-specific pending work, e.g. mails), how many outbox
  rows are unsent, when its next timer for C falls due, and which topics it consumes.
- ``settled`` lifecycle → all: step n of C is done; agents stop reporting on it.

- ``probe``   lifecycle → all, after each quiet check: reports made after an agent has seen
  probe k were read from its database after that check's lag measurement.

A step is settled when every service reports nothing pending and nothing unsent and every
consumer group has no lag on what it consumes, twice in a row, the second time on reports that
echo the probe sent after the first (so no report predates the first lag measurement).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Literal

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from pydantic import AwareDatetime, BaseModel

from shared import tracing
from shared.db import Conn
from shared.time.clock import Clock, FrozenClock

log = logging.getLogger(__name__)


async def attach_account(conn: Conn, account_id: uuid.UUID, clock_id: uuid.UUID) -> None:
    await conn.execute(
        """INSERT INTO account_clocks (account_id, clock_id) VALUES ($1, $2)
           ON CONFLICT (account_id) DO NOTHING""",
        account_id,
        clock_id,
    )


async def account_clock(conn: Conn, base: Clock, account_id: uuid.UUID | None) -> Clock:
    """The clock an account lives by: its test clock's time, or ``base`` (real time)."""
    if account_id is None:
        return base
    row = await conn.fetchrow(
        """SELECT t.now FROM account_clocks a JOIN test_clock_times t ON t.clock_id = a.clock_id
           WHERE a.account_id = $1""",
        account_id,
    )
    return FrozenClock(row["now"]) if row else base


async def set_clock_time(conn: Conn, clock_id: uuid.UUID, now: datetime) -> None:
    """Move a clock forward (never back: a late, older ``moved`` changes nothing)."""
    await conn.execute(
        """INSERT INTO test_clock_times (clock_id, now) VALUES ($1, $2)
           ON CONFLICT (clock_id)
           DO UPDATE SET now = GREATEST(test_clock_times.now, EXCLUDED.now)""",
        clock_id,
        now,
    )


class ClockMessage(BaseModel):
    kind: Literal["moved", "probe", "report", "settled"]
    clock_id: uuid.UUID
    step: int
    now: AwareDatetime | None = None
    service: str | None = None
    pending: int = 0
    unsent: int = 0
    next_due_at: AwareDatetime | None = None
    consumes: list[str] = []
    seq: int = 0
    probe: int = 0  # the latest probe of the driver this agent had seen when it made the report


PendingProbe = Callable[[Conn, uuid.UUID, datetime], Awaitable[int]]


async def _no_pending(conn: Conn, clock_id: uuid.UUID, now: datetime) -> int:
    return 0


class ClockAgent:
    """Runs in every service: follows ``moved``, reports while a clock advances."""

    def __init__(
        self,
        *,
        service: str,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        bootstrap_servers: str,
        topic: str,
        group_id: str,
        consumes: list[str],
        probe: PendingProbe | None = None,
        report_seconds: float = 0.1,
    ) -> None:
        self.service = service
        self.pool = pool
        self.producer = producer
        self.bootstrap_servers = bootstrap_servers
        self.topic = topic
        self.group_id = group_id
        self.consumes = consumes
        self.probe = probe or _no_pending
        self.report_seconds = report_seconds
        self.active: dict[uuid.UUID, tuple[int, datetime, int]] = {}  # step, now, probe
        self._seq = itertools.count(1)

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.bootstrap_servers,
            group_id=self.group_id,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        reporter = asyncio.create_task(self._report_loop())
        try:
            async for record in consumer:
                with contextlib.suppress(ValueError):
                    await self.on_message(ClockMessage.model_validate_json(record.value))
        finally:
            reporter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reporter
            await consumer.stop()

    async def on_message(self, message: ClockMessage) -> None:
        if message.kind == "moved" and message.now is not None:
            with tracing.root_span(  # a test-clock step starts a trace of its own
                self.service,
                "test clock moved",
                attributes={
                    "platform.clock_id": str(message.clock_id),
                    "platform.step": message.step,
                },
            ):
                async with self.pool.acquire() as conn:
                    await set_clock_time(conn, message.clock_id, message.now)
                    await conn.execute("SELECT pg_notify('timers', '')")
            self.active[message.clock_id] = (message.step, message.now, 0)
        elif message.kind == "probe":
            current = self.active.get(message.clock_id)
            if current and current[0] == message.step:
                self.active[message.clock_id] = (current[0], current[1], message.probe)
        elif message.kind == "settled":
            current = self.active.get(message.clock_id)
            if current and current[0] <= message.step:
                del self.active[message.clock_id]

    async def _report_loop(self) -> None:
        while True:
            for clock_id, (step, now, probe) in list(self.active.items()):
                try:
                    report = await self.report(clock_id, step, now, probe)
                    await self.producer.send_and_wait(
                        self.topic, report.model_dump_json().encode(), key=str(clock_id).encode()
                    )
                except Exception as error:  # the next tick tries again
                    log.warning("clock agent %s: %r", self.service, error)
            await asyncio.sleep(self.report_seconds)

    async def report(
        self, clock_id: uuid.UUID, step: int, now: datetime, probe: int = 0
    ) -> ClockMessage:
        async with self.pool.acquire() as conn:
            due = await conn.fetchval(
                """SELECT count(*) FROM timers
                   WHERE status = 'pending' AND clock_id = $1 AND due_at <= $2""",
                clock_id,
                now,
            )
            next_due = await conn.fetchval(
                """SELECT min(due_at) FROM timers
                   WHERE status = 'pending' AND clock_id = $1 AND due_at > $2""",
                clock_id,
                now,
            )
            unsent = await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
            extra = await self.probe(conn, clock_id, now)
        return ClockMessage(
            kind="report",
            clock_id=clock_id,
            step=step,
            now=now,
            service=self.service,
            pending=int(due) + extra,
            unsent=int(unsent),
            next_due_at=next_due,
            consumes=self.consumes,
            seq=next(self._seq),
            probe=probe,
        )


class LagMeter:
    """How many messages consumer groups still have to commit on the topics they consume."""

    def __init__(self, bootstrap_servers: str) -> None:
        from aiokafka.admin import AIOKafkaAdminClient

        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        self.offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers)
        self._known: dict[str, list[Any]] = {}

    async def start(self) -> None:
        await self.admin.start()
        await self.offsets.start()

    async def stop(self) -> None:
        await self.offsets.stop()
        await self.admin.close()

    async def _partitions(self, topics: list[str]) -> list[Any]:
        from aiokafka import TopicPartition

        missing = [t for t in topics if t not in self._known]
        if missing:  # partitions rarely change: describe a topic once
            for topic in await self.admin.describe_topics(missing):
                if topic.get("error_code", 0) == 0 and topic["partitions"]:
                    self._known[topic["topic"]] = [
                        TopicPartition(topic["topic"], p["partition"]) for p in topic["partitions"]
                    ]
        return [tp for t in topics for tp in self._known.get(t, [])]

    async def lag(self, group: str, topics: list[str]) -> int:
        return await self.total_lag({group: topics})

    async def total_lag(self, groups: dict[str, list[str]]) -> int:
        """Messages the groups have not committed yet on the topics each consumes."""
        return sum((await self.lag_by_partition(groups)).values())

    async def lag_by_partition(self, groups: dict[str, list[str]]) -> dict[tuple[str, Any], int]:
        """(group, topic-partition) -> messages that group has not committed yet there."""
        wanted = {t for topics in groups.values() for t in topics}
        partitions = await self._partitions(sorted(wanted))
        if not partitions:
            return {}
        ends, starts, *committed = await asyncio.gather(
            self.offsets.end_offsets(partitions),
            self.offsets.beginning_offsets(partitions),
            *(self.admin.list_consumer_group_offsets(group) for group in groups),
        )
        lags: dict[tuple[str, Any], int] = {}
        for (group, topics), done in zip(groups.items(), committed, strict=True):
            for tp in partitions:
                if tp.topic not in topics:
                    continue
                position = done[tp].offset if tp in done and done[tp].offset >= 0 else starts[tp]
                lags[(group, tp)] = ends[tp] - position
        return lags
