"""Ordering's SQL."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from shared.db import Conn

Db = Conn | asyncpg.Pool


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


async def lock_account(conn: Conn, account_id: uuid.UUID) -> asyncpg.Record | None:
    """Serialises role changes of one account (R6 holds under concurrent requests)."""
    return await conn.fetchrow("SELECT * FROM accounts WHERE id = $1 FOR UPDATE", account_id)


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


async def user_by_email(conn: Conn, account_id: uuid.UUID, email: str) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM users WHERE account_id = $1 AND lower(email) = lower($2)",
        account_id,
        email,
    )


async def user(conn: Db, account_id: uuid.UUID, user_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT * FROM users WHERE account_id = $1 AND id = $2", account_id, user_id
    )


async def users(conn: Db, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT id, email, name, language FROM users WHERE account_id = $1 ORDER BY email",
        account_id,
    )


async def role_rows(conn: Db, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT user_id, roles FROM account_people WHERE account_id = $1", account_id
    )


async def people(conn: Db, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM account_people WHERE account_id = $1 ORDER BY email", account_id
    )


async def get_account(conn: Db, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)


async def next_order_number(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT nextval('order_number_seq')"))


async def next_quote_number(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT nextval('quote_number_seq')"))


async def has_invoice_subscription(conn: Conn, account_id: uuid.UUID) -> bool:
    """R14: a live, paid subscription of the account is paid by invoice (a trial pays nothing,
    so it does not count)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE account_id = $1"
            " AND payment_method = 'invoice' AND NOT trial AND stage <> 'cancelled'"
            " AND refunded_at IS NULL)",
            account_id,
        )
    )


ORDER_COLUMNS = (
    "id",
    "order_number",
    "account_id",
    "placed_by",
    "subscription_id",
    "offering",
    "term",
    "seats",
    "payment_method",
    "channel",
    "auto_renew",
    "placed_at",
    "kind",
    "quote_id",
)


async def insert_order(conn: Conn, order: dict[str, Any]) -> None:
    placeholders = ", ".join(f"${i}" for i in range(1, len(ORDER_COLUMNS) + 1))
    await conn.execute(
        f"INSERT INTO orders ({', '.join(ORDER_COLUMNS)}) VALUES ({placeholders})",  # noqa: S608
        *(order[c] for c in ORDER_COLUMNS),
    )


async def get_order(conn: Db, order_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)


async def list_orders(conn: Db, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM orders WHERE account_id = $1 ORDER BY placed_at, order_number", account_id
    )


async def insert_quote(conn: Conn, quote: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO quotes (id, quote_number, account_id, partner_id, offering, term, seats,
                               currency, net_amount, usd_value, valid_until, issued_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
        quote["id"],
        quote["quote_number"],
        quote["account_id"],
        quote["partner_id"],
        quote["offering"],
        quote["term"],
        quote["seats"],
        quote["currency"],
        quote["net_amount"],
        quote["usd_value"],
        quote["valid_until"],
        quote["issued_at"],
    )


async def get_quote(conn: Db, quote_id: uuid.UUID, *, lock: bool = False) -> asyncpg.Record | None:
    if lock:
        return await conn.fetchrow("SELECT * FROM quotes WHERE id = $1 FOR UPDATE", quote_id)
    return await conn.fetchrow("SELECT * FROM quotes WHERE id = $1", quote_id)


async def mark_quote_accepted(
    conn: Conn, quote_id: uuid.UUID, order_id: uuid.UUID, at: datetime
) -> None:
    await conn.execute(
        "UPDATE quotes SET order_id = $2, accepted_at = $3 WHERE id = $1", quote_id, order_id, at
    )


async def insert_subscription(conn: Conn, sub: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO subscriptions (id, account_id, offering, term, seats, payment_method,
                                      channel, auto_renew, trial, time_zone, purchased_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)""",
        sub["id"],
        sub["account_id"],
        sub["offering"],
        sub["term"],
        sub["seats"],
        sub["payment_method"],
        sub["channel"],
        sub["auto_renew"],
        sub["trial"],
        sub["time_zone"],
        sub["purchased_at"],
    )


async def get_subscription(
    conn: Db, subscription_id: uuid.UUID, *, lock: bool = False
) -> asyncpg.Record | None:
    if lock:
        return await conn.fetchrow(
            "SELECT * FROM subscriptions WHERE id = $1 FOR UPDATE", subscription_id
        )
    return await conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)


async def list_subscriptions(conn: Db, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM subscriptions WHERE account_id = $1 ORDER BY purchased_at", account_id
    )


_SUBSCRIPTION_FIELDS = frozenset(
    {
        "offering",
        "term",
        "seats",
        "payment_method",
        "auto_renew",
        "trial",
        "stage",
        "time_zone",
        "starts_at",
        "expires_at",
        "renews_at",
        "purchased_at",
        "purchase_kind",
        "pending_term",
        "pending_offering",
        "refunded_at",
        "lapsed_unpaid",
    }
)


async def require_prepayment(conn: Conn, subscription_id: uuid.UUID) -> None:
    """R34: the account of a subscription cancelled on an unpaid invoice pays up front."""
    await conn.execute(
        """UPDATE accounts SET prepay_only = true
           WHERE id = (SELECT account_id FROM subscriptions WHERE id = $1 AND lapsed_unpaid)""",
        subscription_id,
    )


async def update_subscription(conn: Conn, subscription_id: uuid.UUID, **changes: Any) -> bool:
    """Set the named columns; returns False when ordering does not know the subscription."""
    unknown = set(changes) - _SUBSCRIPTION_FIELDS
    if unknown:
        raise ValueError(f"not subscription fields: {sorted(unknown)}")
    names = sorted(changes)
    assignments = ", ".join(f"{n} = ${i}" for i, n in enumerate(names, start=2))
    status = await conn.execute(
        f"UPDATE subscriptions SET {assignments} WHERE id = $1",  # noqa: S608
        subscription_id,
        *(changes[n] for n in names),
    )
    return status != "UPDATE 0"


async def insert_renewal_request(conn: Conn, request: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO renewal_requests (id, subscription_id, kind, renews_at, payment_method,
                                         requested_by, requested_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        request["id"],
        request["subscription_id"],
        request["kind"],
        request["renews_at"],
        request["payment_method"],
        request["requested_by"],
        request["requested_at"],
    )


async def renewal_requested(conn: Conn, subscription_id: uuid.UUID, renews_at: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM renewal_requests"
            " WHERE subscription_id = $1 AND renews_at = $2)",
            subscription_id,
            renews_at,
        )
    )


async def insert_refund(conn: Conn, refund: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO refunds (id, subscription_id, purchase_kind, purchased_at, reason,
                                approved_by, approved_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        refund["id"],
        refund["subscription_id"],
        refund["purchase_kind"],
        refund["purchased_at"],
        refund["reason"],
        refund["approved_by"],
        refund["approved_at"],
    )
