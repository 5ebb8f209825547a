"""Notifications' SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db import Conn

from .domain import Member, Recipient, RenderedMail

Db = Conn | asyncpg.Pool


async def upsert_account(
    conn: Conn, account_id: uuid.UUID, name: str, language: str, time_zone: str
) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, name, language, time_zone) VALUES ($1, $2, $3, $4)
           ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name, language = EXCLUDED.language,
               time_zone = EXCLUDED.time_zone""",
        account_id,
        name,
        language,
        time_zone,
    )


async def account(conn: Conn, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT name, language, time_zone FROM accounts WHERE id = $1", account_id
    )


async def remember_subscription(
    conn: Conn, subscription_id: uuid.UUID, account_id: uuid.UUID, offering: str
) -> None:
    await conn.execute(
        """INSERT INTO subscriptions (id, account_id, offering) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET offering = EXCLUDED.offering""",
        subscription_id,
        account_id,
        offering,
    )


async def offering_of(conn: Conn, subscription_id: uuid.UUID | None) -> str | None:
    if subscription_id is None:
        return None
    value = await conn.fetchval("SELECT offering FROM subscriptions WHERE id = $1", subscription_id)
    return str(value) if value else None


async def members(conn: Conn, account_id: uuid.UUID) -> list[Member]:
    rows = await conn.fetch(
        """SELECT email, name, language, roles FROM account_people WHERE account_id = $1
           ORDER BY email, user_id""",
        account_id,
    )
    return [Member(r["email"], r["name"], r["language"], frozenset(r["roles"])) for r in rows]


async def add_delivery(
    conn: Conn,
    *,
    event_id: uuid.UUID,
    event_type: str,
    account_id: uuid.UUID,
    recipient: Recipient,
    mail: RenderedMail,
    now: datetime,
) -> bool:
    """R12: the unique (event, address) key makes a second queueing of the same mail a no-op."""
    inserted = await conn.fetchval(
        """INSERT INTO deliveries (id, event_id, event_type, account_id, recipient, roles,
               template, language, subject, body_text, body_html, next_attempt_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
           ON CONFLICT (event_id, recipient) DO NOTHING RETURNING true""",
        uuid.uuid4(),
        event_id,
        event_type,
        account_id,
        recipient.email.lower(),
        list(recipient.roles),
        recipient.template,
        recipient.language,
        mail.subject,
        mail.text,
        mail.html,
        now,
    )
    return bool(inserted)


async def claim_due(
    conn: Db, now: datetime, token: uuid.UUID, lease_until: datetime, limit: int
) -> list[asyncpg.Record]:
    """Lease up to ``limit`` due mails to one worker; an expired lease is claimable again."""
    return await conn.fetch(
        """UPDATE deliveries SET claim_token = $2, claimed_until = $3
           WHERE id IN (
               SELECT id FROM deliveries
               WHERE status = 'pending' AND next_attempt_at <= $1
                 AND (claimed_until IS NULL OR claimed_until < $1)
               ORDER BY next_attempt_at, created_at LIMIT $4
               FOR UPDATE SKIP LOCKED)
           RETURNING id, event_id, event_type, account_id, recipient, roles, template, subject,
                     body_text, body_html, attempts""",
        now,
        token,
        lease_until,
        limit,
    )


async def mark_handing_over(
    conn: Db, delivery_id: uuid.UUID, token: uuid.UUID, now: datetime
) -> bool:
    """Committed just before DATA; only the worker still holding the lease may do it."""
    updated = await conn.fetchval(
        """UPDATE deliveries SET status = 'handing_over', handed_over_at = $3,
               attempts = attempts + 1
           WHERE id = $1 AND claim_token = $2 AND status = 'pending' RETURNING true""",
        delivery_id,
        token,
        now,
    )
    return bool(updated)


async def mark_sent(conn: Conn, delivery_id: uuid.UUID, token: uuid.UUID, now: datetime) -> bool:
    updated = await conn.fetchval(
        """UPDATE deliveries SET status = 'sent', sent_at = $3, claim_token = NULL,
               claimed_until = NULL
           WHERE id = $1 AND claim_token = $2 RETURNING true""",
        delivery_id,
        token,
        now,
    )
    return bool(updated)


async def mark_failed(
    conn: Db, delivery_id: uuid.UUID, token: uuid.UUID, error: str, now: datetime
) -> bool:
    updated = await conn.fetchval(
        """UPDATE deliveries SET status = 'failed', last_error = $3, failed_at = $4,
               attempts = attempts + CASE WHEN status = 'pending' THEN 1 ELSE 0 END,
               claim_token = NULL, claimed_until = NULL
           WHERE id = $1 AND claim_token = $2 RETURNING true""",
        delivery_id,
        token,
        error,
        now,
    )
    return bool(updated)


async def mark_unconfirmed(conn: Db, delivery_id: uuid.UUID, token: uuid.UUID, error: str) -> None:
    await conn.execute(
        """UPDATE deliveries SET status = 'unconfirmed', last_error = $3, claim_token = NULL,
               claimed_until = NULL
           WHERE id = $1 AND claim_token = $2""",
        delivery_id,
        token,
        error,
    )


async def postpone(
    conn: Db,
    delivery_ids: list[uuid.UUID],
    token: uuid.UUID,
    error: str,
    next_attempt_at: list[datetime],
) -> None:
    """Back to pending with a later attempt (a 4xx or no connection: nothing was handed over)."""
    await conn.execute(
        """UPDATE deliveries d SET status = 'pending', last_error = $3,
               attempts = d.attempts + CASE WHEN d.status = 'pending' THEN 1 ELSE 0 END,
               next_attempt_at = p.at, claim_token = NULL, claimed_until = NULL,
               handed_over_at = NULL
           FROM unnest($1::uuid[], $4::timestamptz[]) AS p(id, at)
           WHERE d.id = p.id AND d.claim_token = $2""",
        delivery_ids,
        token,
        error,
        next_attempt_at,
    )


async def expire_handovers(conn: Db, older_than: datetime) -> int:
    """A hand-over older than any SMTP timeout means its worker died: its fate is unknown."""
    result = await conn.execute(
        """UPDATE deliveries SET status = 'unconfirmed',
               last_error = 'worker stopped during hand-over'
           WHERE status = 'handing_over' AND handed_over_at < $1""",
        older_than,
    )
    return int(result.split()[-1])


async def deliveries_of(
    conn: Db, account_id: uuid.UUID, status: str | None, limit: int, before: datetime | None
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, event_id, event_type, recipient, roles, template, language, subject,
                  status, attempts, last_error, next_attempt_at, created_at, sent_at, failed_at
           FROM deliveries
           WHERE account_id = $1 AND ($2::text IS NULL OR status = $2)
             AND ($4::timestamptz IS NULL OR created_at < $4)
           ORDER BY created_at DESC, recipient LIMIT $3""",
        account_id,
        status,
        limit,
        before,
    )


async def park(
    conn: Conn, event_id: uuid.UUID, account_id: uuid.UUID, envelope: str, now: datetime
) -> None:
    await conn.execute(
        """INSERT INTO parked_events (event_id, account_id, envelope, parked_at)
           VALUES ($1, $2, $3::jsonb, $4) ON CONFLICT DO NOTHING""",
        event_id,
        account_id,
        envelope,
        now,
    )


async def lock_people(conn: Conn, account_id: uuid.UUID) -> None:
    """Serialise, per account, reading who is who (and parking) with releasing parked events,
    so an event parked while its cause commits elsewhere is not left behind."""
    key = f"notifications-people:{account_id}"
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key)


async def consumed(conn: Conn, consumer: str, event_id: uuid.UUID) -> bool:
    """Whether ``consumer`` has consumed the event (its inbox row, committed or this
    transaction's)."""
    query = "SELECT true FROM inbox WHERE consumer = $1 AND event_id = $2"
    return bool(await conn.fetchval(query, consumer, event_id))


async def unpark(conn: Conn, account_id: uuid.UUID) -> list[str]:
    """Removes and returns the account's parked envelopes (JSON), oldest first."""
    rows = await conn.fetch(
        """DELETE FROM parked_events WHERE account_id = $1
           RETURNING envelope::text AS envelope, parked_at""",
        account_id,
    )
    return [r["envelope"] for r in sorted(rows, key=lambda r: r["parked_at"])]


async def unsent_mail_of_clock(conn: Conn, clock_id: uuid.UUID, now: datetime) -> int:
    """Mails of a test clock's accounts still to be handed over (a clock step waits for them)."""
    count = await conn.fetchval(
        """SELECT count(*) FROM deliveries d
           JOIN account_clocks a ON a.account_id = d.account_id
           WHERE a.clock_id = $1 AND d.status IN ('pending', 'handing_over')""",
        clock_id,
    )
    return int(count)
