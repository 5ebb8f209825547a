"""Lifecycle's SQL."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg

from shared.db import Conn


async def insert_subscription(conn: Conn, sub: dict[str, Any]) -> bool:
    """Insert once; False when the subscription exists already."""
    inserted = await conn.fetchval(
        """INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats, time_zone,
               auto_renew, stage, anniversary, starts_at, expires_at, renews_at, activated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'active', $9, $10, $11, $12, $13)
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
    )
    return bool(inserted)


async def get_subscription(
    conn: Conn | asyncpg.Pool, subscription_id: uuid.UUID
) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)


async def list_subscriptions(
    conn: Conn | asyncpg.Pool, account_id: uuid.UUID
) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM subscriptions WHERE account_id = $1 ORDER BY starts_at", account_id
    )
