"""Invoicing's SQL."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal

import asyncpg

from shared.contracts import AccountOpened, InvoiceLine
from shared.db import Conn


async def upsert_account(conn: Conn, account_id: uuid.UUID, opened: AccountOpened) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, country, currency, language, time_zone, tax_exempt_reason)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (id) DO UPDATE SET country = EXCLUDED.country,
               currency = EXCLUDED.currency, language = EXCLUDED.language,
               time_zone = EXCLUDED.time_zone, tax_exempt_reason = EXCLUDED.tax_exempt_reason""",
        account_id,
        opened.country,
        opened.currency,
        opened.language,
        opened.time_zone,
        opened.tax_exempt_reason,
    )


async def get_account(conn: Conn, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)


async def next_in_series(conn: Conn, series: str) -> int:
    return int(
        await conn.fetchval(
            """INSERT INTO invoice_series (series, last_number) VALUES ($1, 1)
               ON CONFLICT (series) DO UPDATE SET last_number = invoice_series.last_number + 1
               RETURNING last_number""",
            series,
        )
    )


async def invoice_id_for_order(conn: Conn, order_id: uuid.UUID) -> uuid.UUID | None:
    value = await conn.fetchval("SELECT id FROM invoices WHERE order_id = $1", order_id)
    return value if isinstance(value, uuid.UUID) else None


async def insert_invoice(
    conn: Conn,
    *,
    invoice_id: uuid.UUID,
    number: str,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
    order_id: uuid.UUID | None,
    currency: str,
    exchange_rate: Decimal,
    net_total: Decimal,
    vat_total: Decimal,
    gross_total: Decimal,
    payment_method: str,
    tax_exempt_reason: str | None,
    issued_at: datetime,
    due_date: date,
    lines: list[InvoiceLine],
) -> None:
    await conn.execute(
        """INSERT INTO invoices (id, invoice_number, account_id, subscription_id, order_id,
               currency, exchange_rate, net_total, vat_total, gross_total, payment_method,
               status, tax_exempt_reason, issued_at, due_date)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'issued', $12, $13, $14)""",
        invoice_id,
        number,
        account_id,
        subscription_id,
        order_id,
        currency,
        exchange_rate,
        net_total,
        vat_total,
        gross_total,
        payment_method,
        tax_exempt_reason,
        issued_at,
        due_date,
    )
    await conn.executemany(
        """INSERT INTO invoice_lines (invoice_id, line_no, description, quantity, unit_price,
               net_amount, vat_rate, vat_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        [
            (
                invoice_id,
                n,
                line.description,
                line.quantity,
                line.unit_price,
                line.net_amount,
                line.vat_rate,
                line.vat_amount,
            )
            for n, line in enumerate(lines, start=1)
        ],
    )


async def record_payment(
    conn: Conn,
    *,
    payment_id: uuid.UUID,
    invoice_id: uuid.UUID,
    amount: Decimal,
    currency: str,
    method: str,
    reference: str,
    paid_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO payments (id, invoice_id, amount, currency, method, reference, paid_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        payment_id,
        invoice_id,
        amount,
        currency,
        method,
        reference,
        paid_at,
    )
    await conn.execute(
        "UPDATE invoices SET status = 'paid', paid_at = $2 WHERE id = $1", invoice_id, paid_at
    )


async def get_invoice(conn: Conn | asyncpg.Pool, invoice_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice_id)


async def invoice_lines(conn: Conn | asyncpg.Pool, invoice_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", invoice_id
    )


async def list_invoices(conn: Conn | asyncpg.Pool, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM invoices WHERE account_id = $1 ORDER BY issued_at, invoice_number",
        account_id,
    )
