"""Durable timers, the same for every service.

``schedule`` writes a row in the caller's transaction (so a state change and the work it makes
due commit together). ``TimerLoop`` claims due rows in date order with ``FOR UPDATE SKIP LOCKED``
(any number of replicas share the work), runs the handler for the row's ``kind`` and marks the
row fired in the same transaction: the effect happens exactly once even though a crash may make
a timer fire again. A timer whose handler keeps failing is parked as ``failed`` after
``max_attempts`` and logged; the others go on.

Test clocks: a timer carrying a ``clock_id`` is due when that clock's time (``test_clock_times``)
reaches it, not the wall clock's.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from shared.clock import Clock, FrozenClock
from shared.contracts import Contract, Envelope
from shared.db import Conn
from shared.outbox import Outbox

log = logging.getLogger(__name__)
NOTIFY_CHANNEL = "timers"


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
    await conn.execute(
        """INSERT INTO timers (kind, timer_key, account_id, clock_id, due_at, payload)
           VALUES ($1, $2, $3,
                   COALESCE($4, (SELECT clock_id FROM account_clocks WHERE account_id = $3)),
                   $5, $6::jsonb)
           ON CONFLICT (kind, timer_key) DO UPDATE SET
               due_at = EXCLUDED.due_at, payload = EXCLUDED.payload,
               account_id = EXCLUDED.account_id, clock_id = EXCLUDED.clock_id,
               status = 'pending', attempts = 0, last_error = NULL, fired_at = NULL""",
        kind,
        key,
        account_id,
        clock_id,
        due_at,
        json.dumps(payload or {}, default=str),
    )
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)


async def cancel(conn: Conn, *, kind: str, key: str) -> bool:
    """Cancel a pending timer; True if there was one."""
    done = await conn.fetchval(
        "DELETE FROM timers WHERE kind = $1 AND timer_key = $2 AND status = 'pending'"
        " RETURNING true",
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

_DUE = """
    SELECT t.id, t.kind, t.timer_key, t.account_id, t.clock_id, t.due_at, t.payload, t.attempts,
           c.now AS clock_now
    FROM timers t LEFT JOIN test_clock_times c ON c.clock_id = t.clock_id
    WHERE t.status = 'pending'
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
    ) -> None:
        self.pool = pool
        self.handlers = handlers
        self.outbox = outbox
        self.clock = clock
        self.batch_size = batch_size
        self.poll_seconds = poll_seconds
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()

    async def fire_due(self) -> int:
        """Fire one batch of due timers, in date order; returns how many were claimed."""
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(_DUE, self.clock.now(), self.batch_size)
            for row in rows:
                clock = FrozenClock(row["clock_now"]) if row["clock_id"] else self.clock
                await self._fire(conn, _timer(row), clock)
            return len(rows)

    async def _fire(self, conn: Conn, timer: Timer, clock: Clock) -> None:
        handler = self.handlers.get(timer.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for timer kind {timer.kind!r}")
            async with conn.transaction():  # a savepoint: a failing timer undoes only itself
                await handler(TimerContext(conn, timer, self.outbox, clock))
        except Exception as error:
            attempts = timer.attempts + 1
            status = "failed" if attempts >= self.max_attempts else "pending"
            log.warning(
                "timer %s/%s failed (attempt %d): %r", timer.kind, timer.key, attempts, error
            )
            await conn.execute(
                """UPDATE timers SET attempts = $2, last_error = $3, status = $4,
                       due_at = CASE WHEN $4 = 'pending' THEN due_at + $5 ELSE due_at END
                   WHERE id = $1""",
                timer.id,
                attempts,
                repr(error)[:2000],
                status,
                timedelta(seconds=2**attempts),
            )
            return
        await conn.execute(
            "UPDATE timers SET status = 'fired', fired_at = $2, attempts = attempts + 1"
            " WHERE id = $1 AND due_at = $3",
            timer.id,
            self.clock.now(),
            timer.due_at,
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

    def wake(self, *_: object) -> None:
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
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
        finally:
            with contextlib.suppress(Exception):
                await listener.remove_listener(NOTIFY_CHANNEL, self.wake)
            await self.pool.release(listener)


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
    )
