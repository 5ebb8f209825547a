"""Notifications' SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from shared.db import Conn

from .domain import Member, Recipient, RenderedMail


async def upsert_account(conn: Conn, account_id: uuid.UUID, language: str, time_zone: str) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, language, time_zone) VALUES ($1, $2, $3)
           ON CONFLICT (id) DO UPDATE SET language = EXCLUDED.language,
               time_zone = EXCLUDED.time_zone""",
        account_id,
        language,
        time_zone,
    )


async def account_time_zone(conn: Conn, account_id: uuid.UUID) -> str | None:
    value = await conn.fetchval("SELECT time_zone FROM accounts WHERE id = $1", account_id)
    return str(value) if value else None


async def members(conn: Conn, account_id: uuid.UUID) -> list[Member]:
    rows = await conn.fetch(
        "SELECT email, name, language, roles FROM account_people WHERE account_id = $1",
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
    template: str,
    mail: RenderedMail,
    now: datetime,
) -> bool:
    inserted = await conn.fetchval(
        """INSERT INTO deliveries (id, event_id, event_type, account_id, recipient, roles,
               template, language, subject, body_text, body_html, next_attempt_at, created_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
           ON CONFLICT (event_id, recipient) DO NOTHING RETURNING true""",
        uuid.uuid4(),
        event_id,
        event_type,
        account_id,
        recipient.email,
        list(recipient.roles),
        template,
        recipient.language,
        mail.subject,
        mail.text,
        mail.html,
        now,
    )
    return bool(inserted)


async def claim_due(conn: Conn, now: datetime) -> asyncpg.Record | None:
    return await conn.fetchrow(
        """SELECT * FROM deliveries WHERE status = 'pending' AND next_attempt_at <= $1
           ORDER BY next_attempt_at, created_at LIMIT 1 FOR UPDATE SKIP LOCKED""",
        now,
    )


async def mark_sent(conn: Conn, delivery_id: uuid.UUID, now: datetime) -> None:
    await conn.execute(
        "UPDATE deliveries SET status = 'sent', sent_at = $2, attempts = attempts + 1"
        " WHERE id = $1",
        delivery_id,
        now,
    )


async def mark_failed(conn: Conn, delivery_id: uuid.UUID, error: str) -> None:
    await conn.execute(
        "UPDATE deliveries SET status = 'failed', last_error = $2, attempts = attempts + 1"
        " WHERE id = $1",
        delivery_id,
        error,
    )


async def postpone(
    conn: Conn, delivery_id: uuid.UUID, error: str, next_attempt_at: datetime
) -> None:
    await conn.execute(
        "UPDATE deliveries SET last_error = $2, attempts = attempts + 1, next_attempt_at = $3"
        " WHERE id = $1",
        delivery_id,
        error,
        next_attempt_at,
    )


async def deliveries_of(conn: Conn | asyncpg.Pool, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT id, event_id, event_type, recipient, roles, template, language, subject,
                  status, attempts, last_error, created_at, sent_at
           FROM deliveries WHERE account_id = $1 ORDER BY created_at, recipient""",
        account_id,
    )
