"""Durable timers, the same for every service.

``schedule`` writes a row in the caller's transaction (so a state change and the work it makes
due commit together). ``TimerLoop`` claims due rows in date order with ``FOR UPDATE SKIP LOCKED``
(any number of replicas share the work), runs the handler for the row's ``kind`` and marks the
row fired in the same transaction: the effect happens exactly once even though a crash may make
a timer fire again. A timer whose handler keeps failing is parked as ``failed`` after
``max_attempts`` and logged; the others go on.

Batches (optional, per kind): a service may register a *batch* handler for a kind; the loop then
hands it each run of consecutive due timers of that kind (date order is kept across kinds) in one
savepoint, and marks them fired with one statement. If the batch handler raises, the savepoint is
undone and the same timers are fired one by one through it, so one bad timer undoes only itself.

Test clocks: a timer carrying a ``clock_id`` is due when that clock's time (``test_clock_times``)
reaches it, not the wall clock's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared import tracing
from shared.background import sleep_until_woken
from shared.contracts import Contract, Envelope
from shared.db import Conn
from shared.outbox import Outbox
from shared.time.clock import Clock, FrozenClock

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "timers"
# The wake-up ``schedule`` sends has a payload (issue 17): the earliest due time scheduled, in
# epoch seconds, when all of them are in real time; '' (wake up whatever) when any follows a
# test clock. A sleeping ``TimerLoop`` that wakes up before that time anyway ignores it
# (``TimerLoop.wake``).


class RetryLater(Exception):
    """A transient failure (a gateway or network outage): retried with backoff, never parked."""


@dataclass(frozen=True)
class Timer:
    id: int
    kind: str
    key: str
    account_id: uuid.UUID | None
    clock_id: uuid.UUID | None
    due_at: datetime
    payload: dict[str, Any]
    attempts: int
    clock_now: datetime | None = None  # the test clock's time, for a timer that follows one
    traceparent: str | None = None  # the trace that scheduled it: linked as the cause


async def schedule(
    conn: Conn,
    *,
    kind: str,
    key: str,
    due_at: datetime,
    account_id: uuid.UUID | None = None,
    clock_id: uuid.UUID | None = None,
    payload: dict[str, Any] | None = None,
) -> None:
    """Schedule (or move) the timer ``(kind, key)``; a fired one is scheduled anew.

    A timer of an account that follows a test clock follows that clock (unless told otherwise).
    """
    if due_at.tzinfo is None:
        raise ValueError("timers need a timezone-aware due time")
    await conn.execute(  # the timer loops' wake-up in the same round trip (issue 17)
        """WITH scheduled AS (
               INSERT INTO timers (kind, timer_key, account_id, clock_id, due_at, payload,
                                   traceparent)
               VALUES ($1, $2, $3,
                       COALESCE($4, (SELECT clock_id FROM account_clocks WHERE account_id = $3)),
                       $5, $6::jsonb, $7)
               ON CONFLICT (kind, timer_key) DO UPDATE SET
                   due_at = EXCLUDED.due_at, payload = EXCLUDED.payload,
                   account_id = EXCLUDED.account_id, clock_id = EXCLUDED.clock_id,
                   status = 'pending', attempts = 0, last_error = NULL, fired_at = NULL,
                   retry_at = NULL, traceparent = EXCLUDED.traceparent
               RETURNING clock_id, due_at)
           SELECT pg_notify($8, CASE WHEN bool_and(clock_id IS NULL)
                       THEN extract(epoch FROM min(due_at))::text ELSE '' END)
           FROM scheduled""",
        kind,
        key,
        account_id,
        clock_id,
        due_at,
        json.dumps(payload or {}, default=str),
        tracing.current_traceparent(),
        NOTIFY_CHANNEL,
    )


@dataclass(frozen=True)
class TimerRequest:
    """One timer for ``schedule_many``."""

    kind: str
    key: str
    due_at: datetime
    account_id: uuid.UUID | None = None
    clock_id: uuid.UUID | None = None
    payload: dict[str, Any] | None = None


async def schedule_many(
    conn: Conn, requests: list[TimerRequest], cancel: Sequence[tuple[str, str]] = ()
) -> None:
    """``schedule`` for many timers in one statement (the last request per (kind, key) wins);
    ``cancel``: pending timers (kind, key) dropped in the same statement, as ``cancel`` would
    one by one before the scheduling (a key also scheduled is simply scheduled anew)."""
    latest = {(r.kind, r.key): r for r in requests}
    dropped = [key for key in dict.fromkeys(cancel) if key not in latest]
    if not latest:
        if dropped:
            await conn.execute(
                """DELETE FROM timers t USING unnest($1::text[], $2::text[]) AS c(kind, key)
                   WHERE t.kind = c.kind AND t.timer_key = c.key AND t.status = 'pending'""",
                [kind for kind, _ in dropped],
                [key for _, key in dropped],
            )
        return
    if any(r.due_at.tzinfo is None for r in latest.values()):
        raise ValueError("timers need a timezone-aware due time")
    rows = list(latest.values())
    # the cancelled ones and the timer loops' wake-up in the same round trip (issue 17)
    await conn.execute(
        """WITH dropped AS (
               DELETE FROM timers t USING unnest($9::text[], $10::text[]) AS c(kind, key)
               WHERE t.kind = c.kind AND t.timer_key = c.key AND t.status = 'pending'),
           scheduled AS (
               INSERT INTO timers (kind, timer_key, account_id, clock_id, due_at, payload,
                                   traceparent)
               SELECT k, t, a,
                      COALESCE(c, (SELECT clock_id FROM account_clocks WHERE account_id = a)),
                      d, p::jsonb, $7
               FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[], $5::timestamptz[],
                           $6::text[]) AS r(k, t, a, c, d, p)
               ON CONFLICT (kind, timer_key) DO UPDATE SET
                   due_at = EXCLUDED.due_at, payload = EXCLUDED.payload,
                   account_id = EXCLUDED.account_id, clock_id = EXCLUDED.clock_id,
                   status = 'pending', attempts = 0, last_error = NULL, fired_at = NULL,
                   retry_at = NULL, traceparent = EXCLUDED.traceparent
               RETURNING clock_id, due_at)
           SELECT pg_notify($8, CASE WHEN bool_and(clock_id IS NULL)
                       THEN extract(epoch FROM min(due_at))::text ELSE '' END)
           FROM scheduled HAVING count(*) > 0""",
        [r.kind for r in rows],
        [r.key for r in rows],
        [r.account_id for r in rows],
        [r.clock_id for r in rows],
        [r.due_at for r in rows],
        [json.dumps(r.payload or {}, default=str) for r in rows],
        tracing.current_traceparent(),
        NOTIFY_CHANNEL,
        [kind for kind, _ in dropped],
        [key for _, key in dropped],
    )


async def cancel(conn: Conn, *, kind: str, key: str, wait: bool = True) -> bool:
    """Cancel a pending timer; True if there was one.

    ``wait=False`` leaves alone a timer that a timer loop is firing right now (its row is
    locked) instead of waiting for it: for callers that hold other locks the timer's handler
    takes, so the two cannot deadlock; that handler must then see the new state and do nothing.
    """
    done = await conn.fetchval(
        f"""DELETE FROM timers WHERE id IN (
                SELECT id FROM timers
                WHERE kind = $1 AND timer_key = $2 AND status = 'pending'
                FOR UPDATE {"" if wait else "SKIP LOCKED"})
            RETURNING true""",  # noqa: S608 - no input in the f-string
        kind,
        key,
    )
    return bool(done)


@dataclass
class TimerContext:
    conn: Conn
    timer: Timer
    outbox: Outbox
    clock: Clock

    async def emit(
        self,
        event: Contract,
        *,
        account_id: uuid.UUID | None = None,
        subscription_id: uuid.UUID | None = None,
        causation: Envelope | None = None,
    ) -> Envelope:
        """Emit with the timer's due time as the business time of the event."""
        account = account_id or self.timer.account_id
        if account is None:
            raise ValueError("an event needs an account id")
        return await self.outbox.emit(
            self.conn,
            event,
            account_id=account,
            subscription_id=subscription_id,
            occurred_at=self.timer.due_at,
            causation=causation,
        )


TimerHandler = Callable[[TimerContext], Awaitable[None]]


@dataclass
class TimerBatchContext:
    """What a batch handler gets: the open transaction and the due timers of one kind."""

    conn: Conn
    timers: list[Timer]
    outbox: Outbox
    clock: Clock


BatchTimerHandler = Callable[[TimerBatchContext], Awaitable[None]]

_DUE = """
    SELECT t.id, t.kind, t.timer_key, t.account_id, t.clock_id, t.due_at, t.payload, t.attempts,
           c.now AS clock_now, t.traceparent
    FROM timers t LEFT JOIN test_clock_times c ON c.clock_id = t.clock_id
    WHERE t.status = 'pending'
      AND (t.retry_at IS NULL OR t.retry_at <= $1)
      AND ((t.clock_id IS NULL AND t.due_at <= $1)
           OR (t.clock_id IS NOT NULL AND t.due_at <= c.now))
    ORDER BY t.due_at, t.id
    LIMIT $2
    FOR UPDATE OF t SKIP LOCKED"""


class TimerLoop:
    def __init__(
        self,
        pool: asyncpg.Pool,
        handlers: dict[str, TimerHandler],
        *,
        outbox: Outbox,
        clock: Clock,
        batch_size: int = 200,
        poll_seconds: float = 1.0,
        max_attempts: int = 5,
        batch_handlers: dict[str, BatchTimerHandler] | None = None,
    ) -> None:
        self.pool = pool
        self.handlers = handlers
        self.batch_handlers = batch_handlers or {}
        self.outbox = outbox
        self.clock = clock
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._sleeping_until: float | None = None  # epoch seconds, while the loop sleeps

    async def fire_due(self) -> int:
        """Fire one batch of due timers, in date order; returns how many were claimed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_DUE, self.clock.now(), self.batch_size)
            for run in _runs_of_one_kind([_timer(row) for row in rows]):
                if len(run) > 1 and await self._fire_batch(conn, run):
                    continue
                for timer in run:
                    await self._fire(conn, timer)
            return len(rows)

    async def _fire_batch(self, conn: Conn, timers: list[Timer]) -> bool:
        """Fire a run of one kind with its batch handler; False (nothing done) without one or
        when it fails, so the caller fires them one by one."""
        handler = self.batch_handlers.get(timers[0].kind)
        if handler is None:
            return False
        try:
            async with conn.transaction():
                clock = self._clock_of(timers[0])
                with tracing.root_span(  # a timer starts a trace of its own
                    self.outbox.producer,
                    f"timer {timers[0].kind}",
                    causes=[t.traceparent for t in timers],
                    attributes={
                        "platform.timer_kind": timers[0].kind,
                        "platform.timers": len(timers),
                    },
                ):
                    await handler(TimerBatchContext(conn, timers, self.outbox, clock))
                await conn.execute(
                    """UPDATE timers t SET status = 'fired', fired_at = $3,
                           attempts = t.attempts + 1
                       FROM unnest($1::bigint[], $2::timestamptz[]) AS f(id, due_at)
                       WHERE t.id = f.id AND t.due_at = f.due_at""",
                    [t.id for t in timers],
                    [t.due_at for t in timers],
                    self.clock.now(),
                )
        except Exception as error:
            log.warning("timer batch of %d %s failed: %r", len(timers), timers[0].kind, error)
            return False
        return True

    def _single(self, kind: str) -> TimerHandler | None:
        handler = self.handlers.get(kind)
        if handler is not None:
            return handler
        batch = self.batch_handlers.get(kind)
        if batch is None:
            return None

        async def one(ctx: TimerContext) -> None:
            await batch(TimerBatchContext(ctx.conn, [ctx.timer], ctx.outbox, ctx.clock))

        return one

    def _clock_of(self, timer: Timer) -> Clock:
        """A timer of a test-clock account lives in that clock's time."""
        if timer.clock_id is not None and timer.clock_now is not None:
            return FrozenClock(timer.clock_now)
        return self.clock

    async def _fire(self, conn: Conn, timer: Timer) -> None:
        handler = self._single(timer.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for timer kind {timer.kind!r}")
            async with conn.transaction():  # a savepoint: a failing timer undoes only itself
                with tracing.root_span(  # a timer starts a trace of its own
                    self.outbox.producer,
                    f"timer {timer.kind}",
                    causes=[timer.traceparent],
                    attributes={"platform.timer_kind": timer.kind, "platform.timers": 1},
                ):
                    await handler(TimerContext(conn, timer, self.outbox, self._clock_of(timer)))
        except Exception as error:
            await self._failed(conn, timer, error)
            return
        await conn.execute(
            "UPDATE timers SET status = 'fired', fired_at = $2, attempts = attempts + 1"
            " WHERE id = $1 AND due_at = $3",
            timer.id,
            self.clock.now(),
            timer.due_at,
        )

    async def _failed(self, conn: Conn, timer: Timer, error: Exception) -> None:
        """Retry later (real time, backoff capped at an hour) keeping the due time; park the timer
        as failed after ``max_attempts``, unless the failure is transient (``RetryLater``)."""
        attempts = timer.attempts + 1
        transient = isinstance(error, RetryLater)
        status = "failed" if attempts >= self.max_attempts and not transient else "pending"
        log.warning(
            "timer %s/%s failed (attempt %d%s): %r",
            timer.kind,
            timer.key,
            attempts,
            ", transient" if transient else "",
            error,
        )
        await conn.execute(
            """UPDATE timers SET attempts = $2, last_error = $3, status = $4, retry_at = $5
               WHERE id = $1""",
            timer.id,
            attempts,
            repr(error)[:2000],
            status,
            self.clock.now() + timedelta(seconds=min(2**attempts, 3600)),
        )

    async def next_due_in(self) -> float:
        """Seconds until the next real-time timer (capped by the poll interval)."""
        nearest = await self.pool.fetchval(
            "SELECT min(due_at) FROM timers WHERE status = 'pending' AND clock_id IS NULL"
        )
        if nearest is None:
            return self.poll_seconds
        seconds = float((nearest - self.clock.now()).total_seconds())
        return max(0.0, min(self.poll_seconds, seconds))

    def wake(self, *notification: object) -> None:
        """A NOTIFY on ``timers`` (asyncpg: connection, pid, channel, payload). A payload that
        names the earliest due time of what was scheduled (``schedule``) is ignored while the
        loop sleeps until no later than that: it wakes up in time anyway (issue 17: timers of a
        new subscription, due in a year, cost no claim and no look-up each)."""
        payload = notification[3] if len(notification) > 3 else ""
        if self._sleeping_until is not None and isinstance(payload, str) and payload:
            try:
                due = float(payload)
            except ValueError:
                due = None
            if due is not None and due >= self._sleeping_until:
                return
        self._wake.set()

    async def run(self) -> None:
        listener = await self.pool.acquire()
        try:
            await listener.add_listener(NOTIFY_CHANNEL, self.wake)
            while True:
                self._wake.clear()
                try:
                    if await self.fire_due() >= self.batch_size:
                        continue
                    delay = await self.next_due_in()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
                    log.warning("timer loop: %r; retrying", error)
                    delay = self.poll_seconds
                self._sleeping_until = self.clock.now().timestamp() + delay
                try:
                    await sleep_until_woken(self._wake, delay)
                finally:
                    self._sleeping_until = None
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(NOTIFY_CHANNEL, self.wake)
            await self.pool.release(listener)


def _runs_of_one_kind(timers: list[Timer]) -> list[list[Timer]]:
    """Consecutive timers of the same kind and clock, in the order claimed (date order)."""
    runs: list[list[Timer]] = []
    for timer in timers:
        if runs and (runs[-1][0].kind, runs[-1][0].clock_id) == (timer.kind, timer.clock_id):
            runs[-1].append(timer)
        else:
            runs.append([timer])
    return runs


def _timer(row: asyncpg.Record) -> Timer:
    payload = row["payload"]
    return Timer(
        id=row["id"],
        kind=row["kind"],
        key=row["timer_key"],
        account_id=row["account_id"],
        clock_id=row["clock_id"],
        due_at=row["due_at"],
        payload=json.loads(payload) if isinstance(payload, str) else dict(payload),
        attempts=row["attempts"],
        clock_now=row["clock_now"],
        traceparent=row["traceparent"],
    )
