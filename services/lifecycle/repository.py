"""Lifecycle's SQL: subscriptions, renewals, invoices, timers and test clocks, as typed rows.

``Repository`` is what the use cases (``service.py``) work with; ``PostgresRepository`` is the
real one, on the open transaction of a request, a handler or a timer.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Protocol

from shared import people
from shared.contracts import RolesChanged
from shared.db import Conn
from shared.time.test_clocks import set_clock_time
from shared.timers import TimerRequest, schedule_many
from shared.unit_of_work import Work

from .domain import Invoice, NewTerm, Renewal, Subscription


@dataclass(frozen=True)
class StageChange:
    """Where one subscription's expiry process stands after its last step."""

    subscription_id: uuid.UUID
    stage: str
    changed_at: datetime
    next_stage_at: datetime | None
    reason: str


@dataclass(frozen=True)
class TestClock:
    """A test clock (operators; see ``test_clocks.py``)."""

    __test__ = False  # not a pytest test class

    id: uuid.UUID
    name: str
    now: datetime
    target: datetime
    status: str
    step: int
    created_at: datetime


TimerKey = tuple[str, str]  # (kind, key)
CONSUMER = "lifecycle"  # the Kafka consumer (inbox, deferred events)


class Repository(Protocol):
    async def insert_subscription(self, sub: Subscription) -> bool: ...
    async def insert_subscription_asking(
        self, sub: Subscription, cause: str | None
    ) -> tuple[bool, bool]: ...
    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None: ...
    async def lock_subscription(self, subscription_id: uuid.UUID) -> Subscription | None: ...
    async def lock_subscriptions(
        self, subscription_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Subscription]: ...
    async def subscription_of_order(self, order_id: uuid.UUID) -> uuid.UUID | None: ...
    async def list_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]: ...
    async def save_stages(self, changes: list[StageChange]) -> None: ...
    async def set_auto_renew(self, subscription_id: uuid.UUID, auto_renew: bool) -> None: ...
    async def set_pending_term(self, subscription_id: uuid.UUID, term: str | None) -> None: ...
    async def set_pending_offering(
        self, subscription_id: uuid.UUID, offering: str | None
    ) -> None: ...
    async def set_seats(self, subscription_id: uuid.UUID, seats: int) -> None: ...
    async def remember_billing(
        self, subscription_id: uuid.UUID, payment_method: str, channel: str | None
    ) -> None: ...
    async def start_term(self, subscription_id: uuid.UUID, term: NewTerm) -> None: ...
    async def reactivate(self, subscription_id: uuid.UUID, at: datetime, reason: str) -> None: ...
    async def upsert_renewal(self, renewal: Renewal) -> None: ...
    async def get_renewal(self, renewal_id: uuid.UUID) -> Renewal | None: ...
    async def mark_renewed(self, renewal_id: uuid.UUID, at: datetime) -> None: ...
    async def upsert_invoice(self, invoice: Invoice) -> None: ...
    async def file_invoice(
        self, invoice: Invoice, named: uuid.UUID | None, order_id: uuid.UUID | None
    ) -> uuid.UUID | None: ...
    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None: ...
    async def pay_invoice(
        self, invoice_id: uuid.UUID, at: datetime, cancel: list[TimerKey]
    ) -> Invoice | None: ...
    async def unpaid_invoice_dues(
        self, subscription_id: uuid.UUID, paid_at: datetime
    ) -> list[date]: ...
    async def mark_invoice_paid(self, invoice_id: uuid.UUID, at: datetime) -> None: ...
    async def schedule_timers(
        self, timers: list[TimerRequest], cancel: list[TimerKey] | None = None
    ) -> None: ...
    async def cancel_timers(self, timers: list[TimerKey]) -> None: ...
    async def remember_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None: ...
    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]: ...
    async def insert_test_clock(self, clock: TestClock) -> None: ...
    async def get_test_clock(self, clock_id: uuid.UUID) -> TestClock | None: ...
    async def set_test_clock_target(self, clock_id: uuid.UUID, target: datetime) -> None: ...


_SUBSCRIPTION_COLUMNS = tuple(f.name for f in fields(Subscription))
_RENEWAL_COLUMNS = tuple(f.name for f in fields(Renewal))
_INVOICE_COLUMNS = tuple(f.name for f in fields(Invoice))
_CLOCK_COLUMNS = tuple(f.name for f in fields(TestClock))


def _subscription(row: object) -> Subscription:
    return Subscription(**{c: row[c] for c in _SUBSCRIPTION_COLUMNS})  # type: ignore[index]


@dataclass
class PostgresRepository:
    """The real ``Repository``: SQL on one open connection (its transaction)."""

    conn: Conn

    async def insert_subscription(self, sub: Subscription) -> bool:
        """Insert once; False when the subscription exists already."""
        inserted, _ = await self.insert_subscription_asking(sub, None)
        return inserted

    async def insert_subscription_asking(
        self, sub: Subscription, cause: str | None
    ) -> tuple[bool, bool]:
        """``insert_subscription``, and in the same round trip whether some event this consumer
        keeps waits for ``cause`` (issue 17: no release asked for when none does)."""
        row = await self.conn.fetchrow(
            """WITH inserted AS (
                   INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats,
                       time_zone, auto_renew, stage, anniversary, starts_at, expires_at,
                       renews_at, activated_at, payment_method, channel, trial,
                       stage_changed_at, clock_id)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12, $13,
                           $14, $15, $16, $13, $17)
                   ON CONFLICT DO NOTHING RETURNING true)
               SELECT EXISTS (SELECT 1 FROM inserted) AS inserted,
                      EXISTS (SELECT 1 FROM deferred_events
                              WHERE consumer = $18 AND cause = $19) AS waiting""",
            sub.id,
            sub.account_id,
            sub.order_id,
            sub.offering,
            sub.term,
            sub.seats,
            sub.time_zone,
            sub.auto_renew,
            sub.anniversary,
            sub.starts_at,
            sub.expires_at,
            sub.renews_at,
            sub.activated_at,
            sub.payment_method,
            sub.channel,
            sub.trial,
            sub.clock_id,
            CONSUMER,
            cause,
        )
        return bool(row and row["inserted"]), bool(row and row["waiting"])

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        row = await self.conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)
        return _subscription(row) if row else None

    async def lock_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        """The subscription, locked until the transaction ends (one change at a time)."""
        row = await self.conn.fetchrow(
            "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
        )
        return _subscription(row) if row else None

    async def lock_subscriptions(
        self, subscription_ids: list[uuid.UUID]
    ) -> dict[uuid.UUID, Subscription]:
        rows = await self.conn.fetch(
            "SELECT * FROM subscriptions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
            subscription_ids,
        )
        return {row["id"]: _subscription(row) for row in rows}

    async def subscription_of_order(self, order_id: uuid.UUID) -> uuid.UUID | None:
        found = await self.conn.fetchval(
            "SELECT id FROM subscriptions WHERE order_id = $1", order_id
        )
        return found if isinstance(found, uuid.UUID) else None

    async def list_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        rows = await self.conn.fetch(
            "SELECT * FROM subscriptions WHERE account_id = $1 ORDER BY starts_at, id", account_id
        )
        return [_subscription(row) for row in rows]

    async def save_stages(self, changes: list[StageChange]) -> None:
        """Many subscriptions' stages in one statement."""
        if not changes:
            return
        await self.conn.execute(
            """UPDATE subscriptions s SET stage = c.stage, stage_changed_at = c.changed_at,
                   next_stage_at = c.next_at, stage_reason = c.reason
               FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[],
                           $5::text[]) AS c(id, stage, changed_at, next_at, reason)
               WHERE s.id = c.id""",
            [c.subscription_id for c in changes],
            [c.stage for c in changes],
            [c.changed_at for c in changes],
            [c.next_stage_at for c in changes],
            [c.reason for c in changes],
        )

    async def set_auto_renew(self, subscription_id: uuid.UUID, auto_renew: bool) -> None:
        await self.conn.execute(
            "UPDATE subscriptions SET auto_renew = $2 WHERE id = $1", subscription_id, auto_renew
        )

    async def set_pending_term(self, subscription_id: uuid.UUID, term: str | None) -> None:
        await self.conn.execute(
            "UPDATE subscriptions SET pending_term = $2 WHERE id = $1", subscription_id, term
        )

    async def set_pending_offering(self, subscription_id: uuid.UUID, offering: str | None) -> None:
        await self.conn.execute(
            "UPDATE subscriptions SET pending_offering = $2 WHERE id = $1",
            subscription_id,
            offering,
        )

    async def set_seats(self, subscription_id: uuid.UUID, seats: int) -> None:
        await self.conn.execute(
            "UPDATE subscriptions SET seats = $2 WHERE id = $1", subscription_id, seats
        )

    async def remember_billing(
        self, subscription_id: uuid.UUID, payment_method: str, channel: str | None
    ) -> None:
        await self.conn.execute(
            """UPDATE subscriptions SET payment_method = $2, channel = coalesce($3, channel)
               WHERE id = $1""",
            subscription_id,
            payment_method,
            channel,
        )

    async def start_term(self, subscription_id: uuid.UUID, term: NewTerm) -> None:
        """A new term (a renewal, or a trial converted): dates, what it covers, Active again,
        and pending changes consumed (R28, R29)."""
        await self.conn.execute(
            """UPDATE subscriptions SET offering = $2, term = $3, seats = $4, starts_at = $5,
                   expires_at = $6, renews_at = $7, anniversary = $8, trial = $9,
                   pending_term = NULL, pending_offering = NULL,
                   stage = 'active', stage_changed_at = CASE WHEN stage = 'active'
                       THEN stage_changed_at ELSE $10 END,
                   stage_reason = CASE WHEN stage = 'active' THEN stage_reason ELSE $11 END,
                   next_stage_at = NULL
               WHERE id = $1""",
            subscription_id,
            term.offering,
            term.term,
            term.seats,
            term.starts_at,
            term.expires_at,
            term.renews_at,
            term.anniversary,
            term.trial,
            term.changed_at,
            term.reason,
        )

    async def reactivate(self, subscription_id: uuid.UUID, at: datetime, reason: str) -> None:
        await self.conn.execute(
            """UPDATE subscriptions SET stage = 'active', stage_changed_at = $2,
                   stage_reason = $3, next_stage_at = NULL
               WHERE id = $1""",
            subscription_id,
            at,
            reason,
        )

    async def upsert_renewal(self, renewal: Renewal) -> None:
        """Announce (or re-announce with what is pending now) a renewal not yet renewed."""
        await self.conn.execute(
            """INSERT INTO renewals (renewal_id, subscription_id, offering, term, seats,
                   period_starts_at, period_ends_at, announced_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
               ON CONFLICT (renewal_id) DO UPDATE SET offering = EXCLUDED.offering,
                   term = EXCLUDED.term, seats = EXCLUDED.seats,
                   period_ends_at = EXCLUDED.period_ends_at,
                   announced_at = EXCLUDED.announced_at
               WHERE renewals.renewed_at IS NULL""",
            renewal.renewal_id,
            renewal.subscription_id,
            renewal.offering,
            renewal.term,
            renewal.seats,
            renewal.period_starts_at,
            renewal.period_ends_at,
            renewal.announced_at,
        )

    async def get_renewal(self, renewal_id: uuid.UUID) -> Renewal | None:
        row = await self.conn.fetchrow("SELECT * FROM renewals WHERE renewal_id = $1", renewal_id)
        return Renewal(**{c: row[c] for c in _RENEWAL_COLUMNS}) if row else None

    async def mark_renewed(self, renewal_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE renewals SET renewed_at = $2 WHERE renewal_id = $1", renewal_id, at
        )

    async def upsert_invoice(self, invoice: Invoice) -> None:
        await self.conn.execute(
            """INSERT INTO invoices (invoice_id, subscription_id, purpose, payment_method,
                   renewal_id, due_date)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (invoice_id) DO NOTHING""",
            invoice.invoice_id,
            invoice.subscription_id,
            invoice.purpose,
            invoice.payment_method,
            invoice.renewal_id,
            invoice.due_date,
        )

    async def file_invoice(
        self, invoice: Invoice, named: uuid.UUID | None, order_id: uuid.UUID | None
    ) -> uuid.UUID | None:
        """``upsert_invoice`` for the subscription the invoice is about, found as
        ``service.subscription_for`` finds it (its renewal's, else ``named`` if known, else its
        order's), in one round trip (issue 17); ``invoice.subscription_id`` is not used.
        Returns that subscription, or None (then nothing is written)."""
        found = await self.conn.fetchval(
            """WITH target AS (
                   SELECT coalesce(
                       (SELECT subscription_id FROM renewals WHERE renewal_id = $4),
                       (SELECT id FROM subscriptions WHERE id = $6),
                       (SELECT id FROM subscriptions WHERE order_id = $7 LIMIT 1)) AS id),
               filed AS (
                   INSERT INTO invoices (invoice_id, subscription_id, purpose, payment_method,
                       renewal_id, due_date)
                   SELECT $1, id, $2, $3, $4, $5 FROM target WHERE id IS NOT NULL
                   ON CONFLICT (invoice_id) DO NOTHING)
               SELECT id FROM target""",
            invoice.invoice_id,
            invoice.purpose,
            invoice.payment_method,
            invoice.renewal_id,
            invoice.due_date,
            named,
            order_id,
        )
        return found if isinstance(found, uuid.UUID) else None

    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        row = await self.conn.fetchrow("SELECT * FROM invoices WHERE invoice_id = $1", invoice_id)
        return Invoice(**{c: row[c] for c in _INVOICE_COLUMNS}) if row else None

    async def pay_invoice(
        self, invoice_id: uuid.UUID, at: datetime, cancel: list[TimerKey]
    ) -> Invoice | None:
        """``mark_invoice_paid`` returning the invoice (None when it is not known: nothing
        changes), with the pending timers ``cancel`` dropped in the same round trip when it
        is (issue 17: ``get_invoice``, ``mark_invoice_paid`` and ``cancel_timers`` in one)."""
        row = await self.conn.fetchrow(
            """WITH paid AS (
                   UPDATE invoices SET paid_at = coalesce(paid_at, $2) WHERE invoice_id = $1
                   RETURNING *),
               dropped AS (
                   DELETE FROM timers t USING unnest($3::text[], $4::text[]) AS c(kind, key)
                   WHERE t.kind = c.kind AND t.timer_key = c.key AND t.status = 'pending'
                     AND EXISTS (SELECT 1 FROM paid))
               SELECT * FROM paid""",
            invoice_id,
            at,
            [kind for kind, _ in cancel],
            [key for _, key in cancel],
        )
        return Invoice(**{c: row[c] for c in _INVOICE_COLUMNS}) if row else None

    async def unpaid_invoice_dues(
        self, subscription_id: uuid.UUID, paid_at: datetime
    ) -> list[date]:
        """Due dates of the subscription's pay-by-invoice invoices still unpaid at ``paid_at``."""
        rows = await self.conn.fetch(
            """SELECT due_date FROM invoices
               WHERE subscription_id = $1 AND payment_method = 'invoice'
                 AND (paid_at IS NULL OR paid_at > $2)""",
            subscription_id,
            paid_at,
        )
        return [row["due_date"] for row in rows]

    async def mark_invoice_paid(self, invoice_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE invoices SET paid_at = coalesce(paid_at, $2) WHERE invoice_id = $1",
            invoice_id,
            at,
        )

    async def schedule_timers(
        self, timers: list[TimerRequest], cancel: list[TimerKey] | None = None
    ) -> None:
        """Schedule ``timers`` and drop the pending ``cancel`` ones, in one statement."""
        await schedule_many(self.conn, timers, cancel or ())

    async def cancel_timers(self, timers: list[TimerKey]) -> None:
        """Drop pending timers by (kind, key): what an ended subscription no longer needs."""
        if not timers:
            return
        await self.conn.execute(
            """DELETE FROM timers t USING unnest($1::text[], $2::text[]) AS c(kind, timer_key)
               WHERE t.kind = c.kind AND t.timer_key = c.timer_key AND t.status = 'pending'""",
            [kind for kind, _ in timers],
            [key for _, key in timers],
        )

    async def remember_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        await people.apply_snapshot(self.conn, account_id, snapshot)

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return await people.roles_of(self.conn, account_id, user_id)

    async def insert_test_clock(self, clock: TestClock) -> None:
        await self.conn.execute(
            """INSERT INTO test_clocks (id, name, now, target, status, step, created_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            clock.id,
            clock.name,
            clock.now,
            clock.target,
            clock.status,
            clock.step,
            clock.created_at,
        )
        await set_clock_time(self.conn, clock.id, clock.now)

    async def get_test_clock(self, clock_id: uuid.UUID) -> TestClock | None:
        row = await self.conn.fetchrow("SELECT * FROM test_clocks WHERE id = $1", clock_id)
        return TestClock(**{c: row[c] for c in _CLOCK_COLUMNS}) if row else None

    async def set_test_clock_target(self, clock_id: uuid.UUID, target: datetime) -> None:
        await self.conn.execute(
            "UPDATE test_clocks SET target = $2, status = 'advancing' WHERE id = $1",
            clock_id,
            target,
        )

    # The clock driver's (test_clocks.py), outside any use case:

    async def advancing_test_clocks(self) -> list[TestClock]:
        rows = await self.conn.fetch("SELECT * FROM test_clocks WHERE status = 'advancing'")
        return [TestClock(**{c: row[c] for c in _CLOCK_COLUMNS}) for row in rows]

    async def mark_test_clock_ready(self, clock_id: uuid.UUID, target: datetime) -> None:
        """Settled at ``target`` (unless it was advanced further meanwhile)."""
        await self.conn.execute(
            "UPDATE test_clocks SET status = 'ready' WHERE id = $1 AND target = $2",
            clock_id,
            target,
        )

    async def next_test_clock_step(self, clock_id: uuid.UUID, now: datetime) -> None:
        await self.conn.execute(
            "UPDATE test_clocks SET now = $2, step = step + 1 WHERE id = $1", clock_id, now
        )


UnitOfWork = Work[Repository]
