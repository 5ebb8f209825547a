"""Ordering's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Conn


async def insert_account(conn: Conn, account: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, name, country, currency, language, time_zone,
                                 tax_exempt_reason, test_clock_id, opened_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)""",
        account["id"],
        account["name"],
        account["country"],
        account["currency"],
        account["language"],
        account["time_zone"],
        account["tax_exempt_reason"],
        account["test_clock_id"],
        account["opened_at"],
    )


async def insert_user(
    conn: Conn,
    *,
    user_id: uuid.UUID,
    account_id: uuid.UUID,
    email: str,
    name: str,
    language: str,
    created_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO users (id, account_id, email, name, language, created_at)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        user_id,
        account_id,
        email,
        name,
        language,
        created_at,
    )


async def people(conn: Conn, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM account_people WHERE account_id = $1 ORDER BY email", account_id
    )


async def get_account(conn: Conn | asyncpg.Pool, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)


async def next_order_number(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT nextval('order_number_seq')"))


async def has_invoice_subscription(conn: Conn, account_id: uuid.UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM orders WHERE account_id = $1"
            " AND payment_method = 'invoice')",
            account_id,
        )
    )


async def insert_order(conn: Conn, order: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO orders (id, order_number, account_id, placed_by, subscription_id, offering,
                               term, seats, payment_method, channel, auto_renew, placed_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        order["id"],
        order["order_number"],
        order["account_id"],
        order["placed_by"],
        order["subscription_id"],
        order["offering"],
        order["term"],
        order["seats"],
        order["payment_method"],
        order["channel"],
        order["auto_renew"],
        order["placed_at"],
    )


async def get_order(conn: Conn | asyncpg.Pool, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)


async def list_orders(conn: Conn | asyncpg.Pool, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM orders WHERE account_id = $1 ORDER BY placed_at, order_number", account_id
    )
