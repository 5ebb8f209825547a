"""Kafka: the producer and broker factories, topic creation, and the consuming side.

Consuming (``EventConsumer``):
- one FastStream subscriber per service, consumer group = the service, records taken in
  batches (up to ``consumer_batch_size``); once a batch's effects are committed its offsets
  are due, and committed at most once per ``consumer_offset_commit_seconds``
  (``shared.offsets``: explicit offsets of handled records only, no auto-commit); a batch that
  fails is rewound (``nack``) so its records come again;
- each message is parsed into an ``Envelope`` and its payload contract; a message that cannot be
  parsed goes to the service's dead-letter topic at once;
- a handler runs in one database transaction together with the inbox row
  ``(consumer, event_id)``, so a redelivered event changes nothing;
- a handler that raises is retried with exponential backoff, ``max_attempts`` times, then the
  message is dead-lettered with the error in its headers and the consumer goes on;
- when the database itself is unreachable, nothing is dead-lettered: the message is not
  acknowledged and comes back once the database answers.

One transaction per batch (issue 17, ``consumer_batch_transaction``, on by default;
``ConsumerRuntime.handle_batch``): the records of a batch that parse are applied together, in
one transaction: BEGIN; every account's turn (the per-account lock below), all taken in one
statement in sorted order, so two batches holding the same accounts cannot deadlock on them;
all inbox rows in one statement (``ON CONFLICT DO NOTHING RETURNING``: the ids it returns are
the first-time events, the others are duplicates) that also reads the accounts' test-clock
times; then each first-time record's handler, without a savepoint, grouped by account (a stable
sort: each account's records keep their order, and the locks handlers take per account, the
outbox's and notifications' people lock, follow the same sorted order as
``Outbox.emit_many``'s); COMMIT. About 20 events are consumed per order: that was 20
transactions, now one per batch.

Its failure behaviour: if anything in it raises (a handler's error, ``WaitForCause``, a
deadlock with another transaction's row locks, a serialization failure), the whole batch
transaction is rolled back. If a record's handler raised, the records before it are applied
again in one transaction, that record alone on the path above (its own transaction, retries,
backoff, dead letters, waiting with a savepoint), and the records after it in one transaction
again (which may split the same way); if no handler raised (a lock, the commit), or after four
rolled-back transactions in one batch, the rest goes record by record. Each piece commits
before the next starts and each account's records keep their order, so per-account order
holds, and no lock is held through a backoff sleep. An infrastructure error
(``shared.problems.INFRASTRUCTURE_ERRORS``: the database unreachable) leaves the batch
unacknowledged as before; it comes back (what committed is then a duplicate). A crash before
COMMIT leaves nothing of that transaction; Kafka redelivers the batch. Each record still has
its own ``process`` span (parented to its record's traceparent; ended after the commit, its
outcome ``done``/``duplicate``, or ``batch-rolled-back`` when the record was then applied again
in a new span) and its own log context; the deferred/released counters count at commit;
``platform_consumer_batches_total`` counts the batch transactions committed and rolled back.
A batch of one record, or with the setting off, goes record by record.

Waiting for a cause (the one mechanism; every service uses it): an event can arrive before the
event that causes it (another producer's topic, another partition's pace). Its handler raises
``WaitForCause("subscription:<id>")``; whatever it did is rolled back, the event is kept in
``deferred_events`` in the same transaction as its inbox row, and the offset moves on. (An
event is first applied without a savepoint, two round trips fewer; one that waits has its
transaction rolled back and is applied again with a savepoint around its handler.) The
handler of the cause calls ``ctx.release("subscription:<id>")`` once it has applied it;
the waiting events are then applied, oldest first, in that same transaction (one may wait
again, for something else). Counted in ``platform_events_deferred_total`` and
``platform_events_released_total``; the rows are the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from opentelemetry.trace import Span
from prometheus_client import Counter
from pydantic import ValidationError

from shared import tracing
from shared.config import Settings
from shared.contracts import PRODUCER_OF, AccountOpened, Contract, Envelope, payload_model
from shared.db import Conn
from shared.logs import bound
from shared.metrics import DEAD_LETTERS
from shared.offsets import OffsetCommits
from shared.outbox import Outbox
from shared.problems import INFRASTRUCTURE_ERRORS
from shared.time.clock import Clock, FrozenClock
from shared.time.test_clocks import account_clock, attach_account
from shared.topics import Topics

log = logging.getLogger(__name__)

EVENTS_CONSUMED = Counter(
    "platform_events_consumed_total",
    "Kafka records handled, by consumer and outcome"
    " (done, deferred, duplicate, ignored, dead-lettered).",
    ["consumer", "outcome"],
)

CONSUMER_BATCHES = Counter(
    "platform_consumer_batches_total",
    "Batch transactions of the consumer, by consumer and outcome: committed, or rolled-back"
    " (an event waited, a handler failed, a deadlock; then split, see handle_batch).",
    ["consumer", "outcome"],
)

EVENTS_DEFERRED = Counter(
    "platform_events_deferred_total",
    "Events kept to wait for their cause, by consumer.",
    ["consumer"],
)
EVENTS_RELEASED = Counter(
    "platform_events_released_total",
    "Waiting events applied once their cause was handled, by consumer.",
    ["consumer"],
)

PayloadT = TypeVar("PayloadT", bound=Contract)

# A replayed dead letter goes back to the topic it came from, addressed to the one consumer
# that dead-lettered it: the others (which handled it, or dead-lettered it themselves) skip it.
REPLAY_FOR_HEADER = "x-replay-for"


class _Waits(Exception):
    """An event applied without a savepoint met ``WaitForCause``: its transaction is rolled
    back and it is applied again, guarded (``ConsumerRuntime._apply``)."""


class _BatchFailed(Exception):
    """A batch transaction was rolled back: ``at`` is the record whose handler raised
    ``error`` (None when no handler did: a lock, the inbox statement, the commit)."""

    def __init__(self, at: int | None, error: Exception) -> None:
        super().__init__(repr(error))
        self.at = at
        self.error = error


# A batch's transactions that may roll back before the rest goes record by record.
_BATCH_TRIES = 4


class WaitForCause(Exception):
    """Raised by a handler whose event needs another one applied first (see the module doc)."""

    def __init__(self, cause: str, reason: str = "") -> None:
        super().__init__(f"waits for {cause}" + (f": {reason}" if reason else ""))
        self.cause = cause
        self.reason = reason or str(self)


Release = Callable[["HandlerContext", str], Awaitable[int]]


@dataclass
class _Tally:
    """Events deferred and released in one transaction: counted once it commits (a batch
    transaction that is rolled back and applied again record by record counts nothing)."""

    deferred: int = 0
    released: int = 0

    def publish(self, consumer: str) -> None:
        if self.deferred:
            EVENTS_DEFERRED.labels(consumer).inc(self.deferred)
        if self.released:
            EVENTS_RELEASED.labels(consumer).inc(self.released)


@dataclass(frozen=True)
class _Parsed:
    """A record that parsed into an envelope and a payload its consumer handles."""

    body: bytes
    record: Any
    handler: Handler[Any]
    envelope: Envelope
    payload: Contract


def make_producer(settings: Settings) -> AIOKafkaProducer:
    """Idempotent producer, ``acks=all``: no duplicates or reordering from producer retries."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.service}-producer",
        enable_idempotence=True,
        acks="all",
        linger_ms=5,
        request_timeout_ms=30000,
    )


def make_broker(settings: Settings) -> KafkaBroker:
    return KafkaBroker(
        settings.kafka_servers,
        client_id=settings.service,
        enable_idempotence=True,
        acks="all",
        logger=logging.getLogger(f"{settings.service}.kafka"),
    )


async def ensure_topics(settings: Settings, topics: Topics) -> None:
    """Create the platform's topics (events, dead letters, test clocks) that do not exist yet,
    with ``topic_replication_factor`` replicas and ``topic_min_insync_replicas``. An existing
    topic is left as it is; one with fewer replicas than configured is logged."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        partitions = {t: settings.topic_partitions for t in topics.all_topics()}
        partitions[topics.test_clocks()] = 1
        replicas = settings.topic_replication_factor
        configs = {"min.insync.replicas": str(settings.topic_min_insync_replicas)}
        new = [
            NewTopic(t, count, replicas, topic_configs=configs)
            for t, count in partitions.items()
            if t not in existing
        ]
        if new:
            try:
                await admin.create_topics(new)
            except TopicAlreadyExistsError:
                pass  # another replica created them first
        if replicas > 1:
            await _warn_underreplicated(admin, sorted(set(partitions) & existing), replicas)
    finally:
        await admin.close()


async def _warn_underreplicated(admin: AIOKafkaAdminClient, names: list[str], want: int) -> None:
    if not names:
        return
    for description in await admin.describe_topics(names):
        have = min((len(p["replicas"]) for p in description["partitions"]), default=want)
        if have < want:
            log.warning(
                "topic %s has %d replicas, configured %d: existing topics are not changed",
                description["topic"],
                have,
                want,
            )


@dataclass
class HandlerContext:
    """What a handler gets besides its payload: the open transaction and a way to emit events."""

    conn: Conn
    envelope: Envelope
    outbox: Outbox
    clock: Clock  # the account's clock: its test clock's time when it follows one
    wall_clock: Clock | None = None  # real time, for infrastructure (retries, leases)
    releaser: Release | None = None  # applies the events waiting for a cause (ConsumerRuntime)
    tally: _Tally = field(default_factory=_Tally)  # deferred/released, counted at commit

    async def release(self, cause: str) -> int:
        """Apply, in this transaction, the events that wait for ``cause`` (now handled)."""
        if self.releaser is None:
            return 0
        return await self.releaser(self, cause)

    async def emit(
        self,
        event: Contract,
        *,
        subscription_id: uuid.UUID | None = None,
        account_id: uuid.UUID | None = None,
    ) -> Envelope:
        return await self.outbox.emit(
            self.conn,
            event,
            account_id=account_id or self.envelope.account_id,
            subscription_id=subscription_id or self.envelope.subscription_id,
            occurred_at=self.clock.now(),
            causation=self.envelope,
        )


@dataclass(frozen=True)
class Handler(Generic[PayloadT]):
    payload_type: type[PayloadT]
    func: Callable[[HandlerContext, PayloadT], Awaitable[None]]


class EventConsumer:
    """The Kafka entrance of one service: typed handlers by event type."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.handlers: dict[str, Handler[Any]] = {}

    def on(
        self, payload_type: type[PayloadT]
    ) -> Callable[
        [Callable[[HandlerContext, PayloadT], Awaitable[None]]],
        Callable[[HandlerContext, PayloadT], Awaitable[None]],
    ]:
        def register(
            func: Callable[[HandlerContext, PayloadT], Awaitable[None]],
        ) -> Callable[[HandlerContext, PayloadT], Awaitable[None]]:
            self.handlers[payload_type.__name__] = Handler(payload_type, func)
            return func

        return register

    def producers(self) -> list[str]:
        return sorted({PRODUCER_OF[event_type] for event_type in self.handlers})


async def _nothing_more(ctx: HandlerContext, payload: Contract) -> None:
    return None


class ConsumerRuntime:
    """Binds an ``EventConsumer`` to a pool, a broker and a dead-letter producer."""

    def __init__(
        self,
        consumer: EventConsumer,
        *,
        pool: asyncpg.Pool,
        outbox: Outbox,
        clock: Clock,
        producer: AIOKafkaProducer,
        topics: Topics,
        max_attempts: int,
        backoff_seconds: float,
        batch_size: int = 100,
        offset_commit_seconds: float = 1.0,
        batch_transaction: bool = True,
    ) -> None:
        self.batch_size = batch_size
        self.batch_transaction = batch_transaction
        self.offsets = OffsetCommits(consumer.name, offset_commit_seconds)
        self.consumer = consumer
        self.pool = pool
        self.outbox = outbox
        self.clock = clock
        self.producer = producer
        self.topics = topics
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds

    def subscribe(self, broker: KafkaBroker) -> None:
        if not self.consumer.handlers:
            return
        topic_names = [self.topics.events(p) for p in self.consumer.producers()]

        async def raw_body(message: Any) -> Any:
            return message.body  # parsed below, so a malformed message can be dead-lettered

        # Batches: applied in one transaction (``handle_batch``), or record by record when that
        # fails; once the whole batch is handled its offsets are due, and committed at most once
        # per ``offset_commit_seconds`` (shared.offsets). A redelivered batch (after a crash, a
        # rebalance or a nack) finds the handled ones in the inbox: nothing changes twice.
        subscriber = broker.subscriber(
            *topic_names,
            group_id=self.topics.group(self.consumer.name),
            auto_offset_reset="earliest",
            ack_policy=AckPolicy.MANUAL,
            decoder=raw_body,
            batch=True,
            max_records=self.batch_size,
            batch_timeout_ms=100,
            title=f"{self.consumer.name}-consumer",
        )

        @subscriber
        async def consume(body: list[bytes], message: KafkaMessage) -> None:
            records = message.raw_message
            try:
                await self.handle_batch(body, records)
            except BaseException:
                await message.nack()  # back to the batch's first records: they come again
                raise
            await self.offsets.handled(message.consumer, records)  # type: ignore[arg-type]

    async def handle(self, body: bytes, record: Any) -> str:
        """Handle one record: "done", "deferred", "duplicate", "ignored" or "dead-lettered"."""
        parsed = await self._parse(body, record)
        outcome = parsed if isinstance(parsed, str) else await self._process(parsed)
        EVENTS_CONSUMED.labels(self.consumer.name, outcome).inc()
        return outcome

    async def handle_batch(self, bodies: Sequence[bytes], records: Sequence[Any]) -> list[str]:
        """Handle a batch of records (the module doc): the ones that parse grouped by account
        (a stable sort: each account's keep their order) and applied in one transaction
        (``_apply_batch``). When a record's handler makes that fail, the records before it are
        applied again in one transaction, it alone on ``handle``'s path (retries, dead letters,
        waiting with a savepoint), and the rest in one transaction again; after
        ``_BATCH_TRIES`` failed transactions, or a failure no record caused, record by record."""
        outcomes: list[str] = []
        parsed: list[tuple[int, _Parsed]] = []
        for index, (body, record) in enumerate(zip(bodies, records, strict=True)):
            item = await self._parse(body, record)
            if isinstance(item, str):
                EVENTS_CONSUMED.labels(self.consumer.name, item).inc()
            else:
                parsed.append((index, item))
            outcomes.append(item if isinstance(item, str) else "")
        if self.batch_transaction:
            parsed.sort(key=lambda pair: str(pair[1].envelope.account_id))
        work: list[tuple[list[tuple[int, _Parsed]], bool]] = [(parsed, False)]  # (records, alone)
        tries = 0
        while work:
            segment, alone = work.pop(0)
            if alone or not self.batch_transaction or len(segment) < 2 or tries >= _BATCH_TRIES:
                for index, item in segment:
                    outcomes[index] = await self._process(item)
                    EVENTS_CONSUMED.labels(self.consumer.name, outcomes[index]).inc()
                continue
            tries += 1
            try:
                applied = await self._apply_batch([item for _, item in segment])
            except INFRASTRUCTURE_ERRORS:
                # Not the messages' fault: leave the batch unacknowledged; it comes back.
                await asyncio.sleep(self.backoff_seconds * 5)
                raise
            except _BatchFailed as failed:
                CONSUMER_BATCHES.labels(self.consumer.name, "rolled-back").inc()
                # Waiting for a cause is normal; anything else (a deadlock) is worth seeing.
                waits = isinstance(failed.error, WaitForCause)
                log.log(
                    logging.INFO if waits else logging.WARNING,
                    "%s: a batch transaction of %d rolled back at %s: %r",
                    self.consumer.name,
                    len(segment),
                    failed.at,
                    failed.error,
                )
                at = failed.at
                if at is None:
                    work.insert(0, (segment, True))
                else:
                    work[0:0] = [
                        (segment[:at], False),
                        (segment[at : at + 1], True),
                        (segment[at + 1 :], False),
                    ]
            else:
                CONSUMER_BATCHES.labels(self.consumer.name, "committed").inc()
                for (index, _), outcome in zip(segment, applied, strict=True):
                    outcomes[index] = outcome
                    EVENTS_CONSUMED.labels(self.consumer.name, outcome).inc()
        return outcomes

    async def _parse(self, body: bytes, record: Any) -> _Parsed | str:
        """The record's envelope, payload and handler, or its outcome ("ignored", or
        "dead-lettered" when it does not parse)."""
        addressee = dict(getattr(record, "headers", None) or ()).get(REPLAY_FOR_HEADER)
        if addressee is not None and addressee.decode(errors="replace") != self.consumer.name:
            return "ignored"  # another consumer's replayed dead letter (shared.dead_letters)
        try:
            envelope = Envelope.model_validate_json(body)
            handler = self.consumer.handlers.get(envelope.event_type)
            if handler is None and envelope.event_type == "AccountOpened":
                # Every service learns which test clock an account follows (see _apply).
                handler = Handler(AccountOpened, _nothing_more)
            if handler is None:
                return "ignored"
            model = payload_model(envelope.event_type, envelope.schema_version)
            payload = model.model_validate(envelope.payload)
            if not isinstance(payload, handler.payload_type):
                raise ValueError(f"{envelope.event_type} v{envelope.schema_version} unsupported")
        except (ValidationError, ValueError) as error:
            await self.dead_letter(body, record, "unparseable", error, attempts=0)
            return "dead-lettered"
        return _Parsed(body, record, handler, envelope, payload)

    def _bound(self, item: _Parsed) -> contextlib.AbstractContextManager[None]:
        envelope = item.envelope
        return bound(
            event_id=envelope.event_id,
            event_type=envelope.event_type,
            correlation_id=envelope.correlation_id,
            causation_id=envelope.causation_id,
            account_id=envelope.account_id,
        )

    def _span(self, item: _Parsed) -> contextlib.AbstractContextManager[Span]:
        return tracing.span(
            self.consumer.name,
            f"{item.envelope.event_type} process",
            kind=tracing.CONSUMER,
            # the producer's context (shared.outbox); a new trace if the record has none
            parent=tracing.traceparent_of(getattr(item.record, "headers", None)) or "",
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": str(getattr(item.record, "topic", "")),
                "messaging.consumer.group.name": self.consumer.name,
                "messaging.message.id": str(item.envelope.event_id),
                "platform.event_type": item.envelope.event_type,
            },
        )

    async def _process(self, item: _Parsed) -> str:
        """One record in its own transaction(s), with retries (the per-record path)."""
        with self._bound(item), self._span(item) as span:
            outcome = await self._attempts(
                item.handler, item.envelope, item.payload, item.body, item.record
            )
            span.set_attribute("platform.outcome", outcome)
            return outcome

    async def _apply_batch(self, items: list[_Parsed]) -> list[str]:
        """Apply a batch of parsed records in ONE transaction: "done" or "duplicate" each, in
        the order of ``items``. Raises whatever a handler raises (``WaitForCause`` included) or
        the database does (a deadlock): then nothing of the batch is committed.

        Round trips: BEGIN, the account turns (one statement, sorted), the inbox rows and the
        accounts' test-clock times (one statement), the handlers, COMMIT."""
        # The caller groups the handlers by account (sorted), so the locks they take per
        # account (the outbox's, notifications' people) are taken in the same sorted order as
        # every other multi-account transaction takes them (``Outbox.emit_many``); the turns
        # are all taken first, sorted.
        accounts = sorted({str(item.envelope.account_id) for item in items})
        first: dict[uuid.UUID, int] = {}  # an event twice in the batch: the first is applied
        for k in range(len(items)):
            first.setdefault(items[k].envelope.event_id, k)
        outcomes = ["duplicate"] * len(items)
        spans: dict[int, Span] = {}
        failure: Exception | None = None
        at: int | None = None  # the record whose handler runs
        tally = _Tally()
        with contextlib.ExitStack() as open_spans:  # each record's span ends after the commit
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    await conn.execute(
                        # unnest keeps the sorted order: two batches cannot deadlock on turns
                        """SELECT count(pg_advisory_xact_lock(hashtextextended(k, 7316004)))
                           FROM unnest($1::text[]) AS k""",
                        [f"{self.consumer.name}:{account}" for account in accounts],
                    )
                    # After the turns (a statement of its own: its snapshot must not predate a
                    # turn's wait, or it could miss a clock attached by the turn's holder).
                    rows = await conn.fetch(
                        """WITH new AS (
                               INSERT INTO inbox (consumer, event_id, event_type)
                               SELECT $1, e.id, e.t FROM unnest($2::uuid[], $3::text[]) AS e(id, t)
                               ON CONFLICT DO NOTHING RETURNING event_id)
                           SELECT event_id, NULL::uuid AS account_id, NULL::timestamptz AS now
                           FROM new
                           UNION ALL
                           SELECT NULL, a.account_id, t.now FROM account_clocks a
                           JOIN test_clock_times t ON t.clock_id = a.clock_id
                           WHERE a.account_id = ANY($4::uuid[])""",
                        self.consumer.name,
                        [items[k].envelope.event_id for k in first.values()],
                        [items[k].envelope.event_type for k in first.values()],
                        accounts,
                    )
                    new = {row["event_id"] for row in rows if row["event_id"] is not None}
                    clocks: dict[uuid.UUID, datetime] = {
                        row["account_id"]: row["now"] for row in rows if row["account_id"]
                    }
                    for k in range(len(items)):
                        item = items[k]
                        spans[k] = open_spans.enter_context(self._span(item))
                        if first[item.envelope.event_id] != k or item.envelope.event_id not in new:
                            continue  # "duplicate"
                        at = k
                        with self._bound(item):
                            await self._run_in_batch(conn, item, clocks, tally)
                        at = None
                        outcomes[k] = "done"
            except Exception as error:
                failure = error
                for span in spans.values():  # applied again (handle_batch), in new spans
                    span.set_attribute("platform.outcome", "batch-rolled-back")
            else:
                tally.publish(self.consumer.name)
                for k, span in spans.items():
                    span.set_attribute("platform.outcome", outcomes[k])
                    with self._bound(items[k]):
                        log.info(
                            "%s: %s %s",
                            self.consumer.name,
                            items[k].envelope.event_type,
                            outcomes[k],
                        )
        if isinstance(failure, INFRASTRUCTURE_ERRORS):
            raise failure
        if failure is not None:
            raise _BatchFailed(at, failure) from failure
        return outcomes

    async def _run_in_batch(
        self, conn: Conn, item: _Parsed, clocks: dict[uuid.UUID, datetime], tally: _Tally
    ) -> None:
        """One first-time record's handler in the batch transaction, without a savepoint."""
        envelope, payload = item.envelope, item.payload
        if isinstance(payload, AccountOpened) and payload.test_clock_id is not None:
            await attach_account(conn, envelope.account_id, payload.test_clock_id)
            clock = await account_clock(conn, self.clock, envelope.account_id)
            if isinstance(clock, FrozenClock):
                clocks[envelope.account_id] = clock.now()
        now = clocks.get(envelope.account_id)
        ctx = HandlerContext(
            conn=conn,
            envelope=envelope,
            outbox=self.outbox,
            clock=FrozenClock(now) if now is not None else self.clock,
            wall_clock=self.clock,
            releaser=self._release,
            tally=tally,
        )
        await item.handler.func(ctx, payload)

    async def _attempts(
        self, handler: Handler[Any], envelope: Envelope, payload: Contract, body: bytes, record: Any
    ) -> str:
        for attempt in range(1, self.max_attempts + 1):
            try:
                outcome = await self._apply(handler, envelope, payload)
                log.info("%s: %s %s", self.consumer.name, envelope.event_type, outcome)
                return outcome
            except INFRASTRUCTURE_ERRORS:
                # Not the message's fault: leave it unacknowledged; it comes back.
                await asyncio.sleep(self.backoff_seconds * 5)
                raise
            except Exception as error:
                if attempt == self.max_attempts:
                    await self.dead_letter(body, record, "handler-failed", error, attempt)
                    return "dead-lettered"
                log.warning(
                    "%s: %s %s failed (attempt %d): %r",
                    self.consumer.name,
                    envelope.event_type,
                    envelope.event_id,
                    attempt,
                    error,
                )
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def _apply(self, handler: Handler[Any], envelope: Envelope, payload: Contract) -> str:
        """Apply the event in one transaction; most events do not wait, so the handler first
        runs without a savepoint (issue 17: a SAVEPOINT and a RELEASE fewer per event); one
        that waits has that transaction rolled back and is applied again with a savepoint
        around its handler, which keeps the event waiting (the decision is taken again, under
        the account's turn)."""
        try:
            return await self._apply_once(handler, envelope, payload, guarded=False)
        except _Waits:
            return await self._apply_once(handler, envelope, payload, guarded=True)

    async def _apply_once(
        self, handler: Handler[Any], envelope: Envelope, payload: Contract, *, guarded: bool
    ) -> str:
        tally = _Tally()
        async with self.pool.acquire() as conn, conn.transaction():
            # One account's events are applied one transaction at a time by this consumer,
            # whichever replica and topic they come from: an event that waits for its cause
            # and the handler that releases that cause cannot miss each other. The lock is
            # taken first (the insert reads its row), in the inbox row's round trip.
            first_time = await conn.fetchval(
                """WITH turn AS (SELECT pg_advisory_xact_lock(hashtextextended($4, 7316004)))
                   INSERT INTO inbox (consumer, event_id, event_type)
                   SELECT $1, $2, $3 FROM turn
                   ON CONFLICT DO NOTHING RETURNING true""",
                self.consumer.name,
                envelope.event_id,
                envelope.event_type,
                f"{self.consumer.name}:{envelope.account_id}",
            )
            if not first_time:
                return "duplicate"
            if isinstance(payload, AccountOpened) and payload.test_clock_id is not None:
                await attach_account(conn, envelope.account_id, payload.test_clock_id)
            outcome = await self._run(conn, handler, envelope, payload, tally, guarded=guarded)
        tally.publish(self.consumer.name)
        return outcome

    async def _run(
        self,
        conn: Conn,
        handler: Handler[Any],
        envelope: Envelope,
        payload: Contract,
        tally: _Tally,
        *,
        guarded: bool = True,
    ) -> str:
        """Run a handler (``guarded``: in a savepoint); an event that must wait for its cause is
        kept. Unguarded, waiting raises ``_Waits`` to roll the whole transaction back."""
        clock = await account_clock(conn, self.clock, envelope.account_id)
        ctx = HandlerContext(
            conn=conn,
            envelope=envelope,
            outbox=self.outbox,
            clock=clock,
            wall_clock=self.clock,
            releaser=self._release,
            tally=tally,
        )
        try:
            if guarded:
                async with conn.transaction():
                    await handler.func(ctx, payload)
            else:
                await handler.func(ctx, payload)
        except WaitForCause as waiting:
            if not guarded:
                raise _Waits from waiting
            await conn.execute(
                """INSERT INTO deferred_events (consumer, event_id, cause, reason, envelope)
                   VALUES ($1, $2, $3, $4, $5::jsonb) ON CONFLICT DO NOTHING""",
                self.consumer.name,
                envelope.event_id,
                waiting.cause,
                waiting.reason[:500],
                envelope.model_dump_json(),
            )
            tally.deferred += 1
            log.info(
                "%s: %s %s waits for %s",
                self.consumer.name,
                envelope.event_type,
                envelope.event_id,
                waiting.cause,
            )
            return "deferred"
        return "done"

    async def _release(self, ctx: HandlerContext, cause: str) -> int:
        rows = await ctx.conn.fetch(
            """DELETE FROM deferred_events WHERE consumer = $1 AND cause = $2
               RETURNING envelope::text AS envelope, seq""",
            self.consumer.name,
            cause,
        )
        for row in sorted(rows, key=lambda r: int(r["seq"])):
            envelope = Envelope.model_validate_json(row["envelope"])
            handler = self.consumer.handlers[envelope.event_type]
            model = payload_model(envelope.event_type, envelope.schema_version)
            payload = model.model_validate(envelope.payload)
            await self._run(ctx.conn, handler, envelope, payload, ctx.tally)
            ctx.tally.released += 1
        return len(rows)

    async def dead_letter(
        self, body: bytes, record: Any, reason: str, error: BaseException, attempts: int
    ) -> None:
        topic = self.topics.dead_letters(self.consumer.name)
        DEAD_LETTERS.labels(self.consumer.name, reason).inc()
        headers = [
            ("x-dlq-reason", reason.encode()),
            ("x-dlq-error", f"{type(error).__name__}: {error}"[:2000].encode()),
            ("x-dlq-consumer", self.consumer.name.encode()),
            ("x-dlq-attempts", str(attempts).encode()),
            ("x-original-topic", str(getattr(record, "topic", "")).encode()),
            ("x-original-partition", str(getattr(record, "partition", "")).encode()),
            ("x-original-offset", str(getattr(record, "offset", "")).encode()),
        ]
        key = getattr(record, "key", None)
        await self.producer.send_and_wait(topic, value=body, key=key, headers=headers)
        log.error(
            "%s: dead-lettered %s@%s/%s to %s: %s",
            self.consumer.name,
            getattr(record, "topic", "?"),
            getattr(record, "partition", "?"),
            getattr(record, "offset", "?"),
            topic,
            reason,
        )
