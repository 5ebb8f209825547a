"""Lifecycle's SQL."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import asyncpg

from shared.contracts import Envelope
from shared.db import Conn

Reader = Conn | asyncpg.Pool


async def insert_subscription(conn: Conn, sub: dict[str, Any]) -> bool:
    """Insert once; False when the subscription exists already."""
    inserted = await conn.fetchval(
        """INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats, time_zone,
               auto_renew, stage, anniversary, starts_at, expires_at, renews_at, activated_at,
               payment_method, channel, trial, stage_changed_at, clock_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12, $13,
                   $14, $15, $16, $13, $17)
           ON CONFLICT DO NOTHING RETURNING true""",
        sub["id"],
        sub["account_id"],
        sub["order_id"],
        sub["offering"],
        sub["term"],
        sub["seats"],
        sub["time_zone"],
        sub["auto_renew"],
        sub["anniversary"],
        sub["starts_at"],
        sub["expires_at"],
        sub["renews_at"],
        sub["activated_at"],
        sub["payment_method"],
        sub["channel"],
        sub["trial"],
        sub.get("clock_id"),
    )
    return bool(inserted)


async def get_subscription(conn: Reader, subscription_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)


async def lock_subscription(conn: Conn, subscription_id: uuid.UUID) -> asyncpg.Record | None:
    """The subscription, locked until the transaction ends (one change at a time)."""
    return await conn.fetchrow(
        "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
    )


async def lock_subscriptions(
    conn: Conn, subscription_ids: list[uuid.UUID]
) -> dict[uuid.UUID, asyncpg.Record]:
    rows = await conn.fetch(
        "SELECT * FROM subscriptions WHERE id = ANY($1::uuid[]) ORDER BY id FOR UPDATE",
        subscription_ids,
    )
    return {row["id"]: row for row in rows}


async def subscription_of_order(conn: Conn, order_id: uuid.UUID) -> uuid.UUID | None:
    found = await conn.fetchval("SELECT id FROM subscriptions WHERE order_id = $1", order_id)
    return found if isinstance(found, uuid.UUID) else None


async def list_subscriptions(conn: Reader, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM subscriptions WHERE account_id = $1 ORDER BY starts_at, id", account_id
    )


async def save_stages(
    conn: Conn, changes: list[tuple[uuid.UUID, str, datetime, datetime | None, str]]
) -> None:
    """(id, stage, changed_at, next_stage_at, reason) for many subscriptions in one statement."""
    if not changes:
        return
    await conn.execute(
        """UPDATE subscriptions s SET stage = c.stage, stage_changed_at = c.changed_at,
               next_stage_at = c.next_at, stage_reason = c.reason
           FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::timestamptz[], $5::text[])
               AS c(id, stage, changed_at, next_at, reason)
           WHERE s.id = c.id""",
        [c[0] for c in changes],
        [c[1] for c in changes],
        [c[2] for c in changes],
        [c[3] for c in changes],
        [c[4] for c in changes],
    )


async def set_auto_renew(conn: Conn, subscription_id: uuid.UUID, auto_renew: bool) -> None:
    await conn.execute(
        "UPDATE subscriptions SET auto_renew = $2 WHERE id = $1", subscription_id, auto_renew
    )


async def set_pending_term(conn: Conn, subscription_id: uuid.UUID, term: str | None) -> None:
    await conn.execute(
        "UPDATE subscriptions SET pending_term = $2 WHERE id = $1", subscription_id, term
    )


async def set_pending_offering(
    conn: Conn, subscription_id: uuid.UUID, offering: str | None
) -> None:
    await conn.execute(
        "UPDATE subscriptions SET pending_offering = $2 WHERE id = $1", subscription_id, offering
    )


async def set_seats(conn: Conn, subscription_id: uuid.UUID, seats: int) -> None:
    await conn.execute("UPDATE subscriptions SET seats = $2 WHERE id = $1", subscription_id, seats)


async def remember_billing(
    conn: Conn, subscription_id: uuid.UUID, payment_method: str, channel: str | None
) -> None:
    await conn.execute(
        """UPDATE subscriptions SET payment_method = $2, channel = coalesce($3, channel)
           WHERE id = $1""",
        subscription_id,
        payment_method,
        channel,
    )


async def start_term(conn: Conn, subscription_id: uuid.UUID, term: dict[str, Any]) -> None:
    """A new term (a renewal, or a trial converted): dates, what it covers, Active again, and
    pending changes consumed (R28, R29)."""
    await conn.execute(
        """UPDATE subscriptions SET offering = $2, term = $3, seats = $4, starts_at = $5,
               expires_at = $6, renews_at = $7, anniversary = $8, trial = $9,
               pending_term = NULL, pending_offering = NULL,
               stage = 'active', stage_changed_at = CASE WHEN stage = 'active'
                   THEN stage_changed_at ELSE $10 END,
               stage_reason = CASE WHEN stage = 'active' THEN stage_reason ELSE $11 END,
               next_stage_at = NULL
           WHERE id = $1""",
        subscription_id,
        term["offering"],
        term["term"],
        term["seats"],
        term["starts_at"],
        term["expires_at"],
        term["renews_at"],
        term["anniversary"],
        term["trial"],
        term["changed_at"],
        term["reason"],
    )


async def reactivate(conn: Conn, subscription_id: uuid.UUID, at: datetime, reason: str) -> None:
    await conn.execute(
        """UPDATE subscriptions SET stage = 'active', stage_changed_at = $2, stage_reason = $3,
               next_stage_at = NULL
           WHERE id = $1""",
        subscription_id,
        at,
        reason,
    )


async def upsert_renewal(conn: Conn, renewal: dict[str, Any]) -> None:
    """Announce (or re-announce with what is pending now) a renewal not yet renewed."""
    await conn.execute(
        """INSERT INTO renewals (renewal_id, subscription_id, offering, term, seats,
               period_starts_at, period_ends_at, announced_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (renewal_id) DO UPDATE SET offering = EXCLUDED.offering,
               term = EXCLUDED.term, seats = EXCLUDED.seats,
               period_ends_at = EXCLUDED.period_ends_at, announced_at = EXCLUDED.announced_at
           WHERE renewals.renewed_at IS NULL""",
        renewal["renewal_id"],
        renewal["subscription_id"],
        renewal["offering"],
        renewal["term"],
        renewal["seats"],
        renewal["period_starts_at"],
        renewal["period_ends_at"],
        renewal["announced_at"],
    )


async def get_renewal(conn: Conn, renewal_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM renewals WHERE renewal_id = $1", renewal_id)


async def mark_renewed(conn: Conn, renewal_id: uuid.UUID, at: datetime) -> None:
    await conn.execute("UPDATE renewals SET renewed_at = $2 WHERE renewal_id = $1", renewal_id, at)


async def upsert_invoice(conn: Conn, invoice: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO invoices (invoice_id, subscription_id, purpose, payment_method,
               renewal_id, due_date)
           VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (invoice_id) DO NOTHING""",
        invoice["invoice_id"],
        invoice["subscription_id"],
        invoice["purpose"],
        invoice["payment_method"],
        invoice["renewal_id"],
        invoice["due_date"],
    )


async def get_invoice(conn: Conn, invoice_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM invoices WHERE invoice_id = $1", invoice_id)


async def unpaid_invoice_dues(
    conn: Conn, subscription_id: uuid.UUID, paid_at: datetime
) -> list[date]:
    """Due dates of the subscription's pay-by-invoice invoices still unpaid at ``paid_at``."""
    rows = await conn.fetch(
        """SELECT due_date FROM invoices
           WHERE subscription_id = $1 AND payment_method = 'invoice'
             AND (paid_at IS NULL OR paid_at > $2)""",
        subscription_id,
        paid_at,
    )
    return [row["due_date"] for row in rows]


async def mark_invoice_paid(conn: Conn, invoice_id: uuid.UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE invoices SET paid_at = coalesce(paid_at, $2) WHERE invoice_id = $1",
        invoice_id,
        at,
    )


async def cancel_timers(conn: Conn, timers: list[tuple[str, str]]) -> None:
    """Drop pending timers by (kind, key): what an ended subscription no longer needs."""
    if not timers:
        return
    await conn.execute(
        """DELETE FROM timers t USING unnest($1::text[], $2::text[]) AS c(kind, timer_key)
           WHERE t.kind = c.kind AND t.timer_key = c.timer_key AND t.status = 'pending'""",
        [kind for kind, _ in timers],
        [key for _, key in timers],
    )


async def keep_early_invoice_event(conn: Conn, envelope: Envelope) -> None:
    await conn.execute(
        """INSERT INTO early_invoice_events (event_id, subscription_id, envelope)
           VALUES ($1, $2, $3::jsonb) ON CONFLICT DO NOTHING""",
        envelope.event_id,
        envelope.subscription_id,
        envelope.model_dump_json(),
    )


async def take_early_invoice_events(conn: Conn, subscription_id: uuid.UUID) -> list[Envelope]:
    rows = await conn.fetch(
        "DELETE FROM early_invoice_events WHERE subscription_id = $1 RETURNING envelope",
        subscription_id,
    )
    return [Envelope.model_validate_json(row["envelope"]) for row in rows]
