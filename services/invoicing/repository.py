"""Invoicing's SQL."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import asyncpg

from shared.contracts import AccountOpened, InvoiceLine, OrderPlaced
from shared.db import Conn

from .domain import AppliedRate

Reader = Conn | asyncpg.Pool


# --- accounts and subscriptions ---------------------------------------------------------------


async def upsert_account(conn: Conn, account_id: uuid.UUID, opened: AccountOpened) -> None:
    await conn.execute(
        """INSERT INTO accounts (id, country, currency, language, time_zone, tax_exempt_reason,
               name, test_clock_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (id) DO UPDATE SET country = EXCLUDED.country,
               currency = EXCLUDED.currency, language = EXCLUDED.language,
               time_zone = EXCLUDED.time_zone, tax_exempt_reason = EXCLUDED.tax_exempt_reason,
               name = EXCLUDED.name, test_clock_id = EXCLUDED.test_clock_id""",
        account_id,
        opened.country,
        opened.currency,
        opened.language,
        opened.time_zone,
        opened.tax_exempt_reason,
        opened.name,
        opened.test_clock_id,
    )


async def get_account(conn: Reader, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM accounts WHERE id = $1", account_id)


async def payer_emails(conn: Conn, account_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch(
        "SELECT email FROM account_people WHERE account_id = $1 AND 'payer' = ANY(roles)",
        account_id,
    )
    return [r["email"] for r in rows]


async def upsert_subscription(conn: Conn, account_id: uuid.UUID, order: OrderPlaced) -> None:
    await conn.execute(
        """INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats, channel,
               payment_method, payment_token, currency, billing_country, time_zone, trial)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
           ON CONFLICT (id) DO UPDATE SET order_id = EXCLUDED.order_id,
               offering = EXCLUDED.offering, term = EXCLUDED.term, seats = EXCLUDED.seats,
               channel = EXCLUDED.channel, payment_method = EXCLUDED.payment_method,
               payment_token = EXCLUDED.payment_token, currency = EXCLUDED.currency,
               billing_country = EXCLUDED.billing_country, time_zone = EXCLUDED.time_zone,
               trial = EXCLUDED.trial""",
        order.subscription_id,
        account_id,
        order.order_id,
        order.offering,
        order.term,
        order.seats,
        order.channel,
        order.payment_method,
        order.payment_token,
        order.currency,
        order.billing_country,
        order.time_zone,
        order.trial,
    )


async def get_subscription(conn: Reader, subscription_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM subscriptions WHERE id = $1", subscription_id)


async def update_subscription(conn: Conn, subscription_id: uuid.UUID, **fields: Any) -> None:
    """Change the named columns (names come from our code, never from a request)."""
    allowed = {"offering", "term", "seats", "channel", "payment_method", "payment_token", "trial"}
    if not fields or not set(fields) <= allowed:
        raise ValueError(f"cannot update subscription fields {sorted(fields)}")
    names = sorted(fields)
    assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
    await conn.execute(
        f"UPDATE subscriptions SET {assignments} WHERE id = $1",  # noqa: S608 - names checked
        subscription_id,
        *(fields[name] for name in names),
    )


async def set_renewal_purchase_order(
    conn: Conn,
    subscription_id: uuid.UUID,
    *,
    po_number: str | None,
    notes: str | None,
    document: bytes | None,
    file_name: str | None,
    mime_type: str | None,
) -> None:
    await conn.execute(
        """UPDATE subscriptions SET renewal_po_number = $2, renewal_notes = $3,
               renewal_po_document = $4, renewal_po_file_name = $5, renewal_po_mime_type = $6
           WHERE id = $1""",
        subscription_id,
        po_number,
        notes,
        document,
        file_name,
        mime_type,
    )


# --- invoices ---------------------------------------------------------------------------------


async def next_in_series(conn: Conn, series: str) -> int:
    """Gapless: the row lock is held until the caller's transaction ends (see 0001)."""
    return int(
        await conn.fetchval(
            """INSERT INTO invoice_series (series, last_number) VALUES ($1, 1)
               ON CONFLICT (series) DO UPDATE SET last_number = invoice_series.last_number + 1
               RETURNING last_number""",
            series,
        )
    )


async def invoice_id_for_source(conn: Conn, source_key: str) -> uuid.UUID | None:
    value = await conn.fetchval("SELECT id FROM invoices WHERE source_key = $1", source_key)
    return value if isinstance(value, uuid.UUID) else None


async def insert_invoice(
    conn: Conn,
    *,
    invoice_id: uuid.UUID,
    number: str,
    source_key: str,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
    order_id: uuid.UUID | None,
    purpose: str,
    installment: int | None,
    renewal_id: uuid.UUID | None,
    currency: str,
    exchange_rate: Decimal,
    channel: str,
    billing_country: str,
    time_zone: str,
    net_total: Decimal,
    vat_total: Decimal,
    gross_total: Decimal,
    payment_method: str,
    payment_token: str | None,
    tax_exempt_reason: str | None,
    payer_emails: list[str],
    issued_at: datetime,
    due_date: date,
    lines: list[InvoiceLine],
    po_number: str | None = None,
    notes: str | None = None,
    po_document: bytes | None = None,
    po_file_name: str | None = None,
    po_mime_type: str | None = None,
) -> None:
    await conn.execute(
        """INSERT INTO invoices (id, invoice_number, source_key, account_id, subscription_id,
               order_id, purpose, installment, renewal_id, currency, exchange_rate, channel,
               billing_country, time_zone, net_total, vat_total, gross_total, payment_method,
               payment_token, status, tax_exempt_reason, payer_emails, issued_at, due_date,
               po_number, notes, po_document, po_file_name, po_mime_type)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
               $18, $19, 'issued', $20, $21, $22, $23, $24, $25, $26, $27, $28)""",
        invoice_id,
        number,
        source_key,
        account_id,
        subscription_id,
        order_id,
        purpose,
        installment,
        renewal_id,
        currency,
        exchange_rate,
        channel,
        billing_country,
        time_zone,
        net_total,
        vat_total,
        gross_total,
        payment_method,
        payment_token,
        tax_exempt_reason,
        payer_emails,
        issued_at,
        due_date,
        po_number,
        notes,
        po_document,
        po_file_name,
        po_mime_type,
    )
    await _insert_lines(conn, "invoice_lines", "invoice_id", invoice_id, lines)


async def _insert_lines(
    conn: Conn, table: str, owner_column: str, owner: uuid.UUID, lines: list[InvoiceLine]
) -> None:
    await conn.executemany(
        f"""INSERT INTO {table} ({owner_column}, line_no, description, quantity, unit_price,
               net_amount, vat_rate, vat_amount) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",  # noqa: S608 - our table names
        [
            (
                owner,
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


INVOICE_COLUMNS = """id, invoice_number, account_id, subscription_id, order_id, purpose,
    installment, renewal_id, currency, exchange_rate, channel, billing_country, time_zone,
    net_total, vat_total, gross_total, payment_method, status, tax_exempt_reason, payer_emails,
    issued_at, due_date, paid_at, po_number, notes, po_file_name, po_mime_type"""


async def get_invoice(conn: Reader, invoice_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM invoices WHERE id = $1", invoice_id)


async def lock_invoice(conn: Conn, invoice_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM invoices WHERE id = $1 FOR UPDATE", invoice_id)


async def invoice_lines(conn: Reader, invoice_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM invoice_lines WHERE invoice_id = $1 ORDER BY line_no", invoice_id
    )


async def list_invoices(conn: Reader, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE account_id = $1"  # noqa: S608
        " ORDER BY issued_at, invoice_number",
        account_id,
    )


async def purchase_invoice(
    conn: Conn, subscription_id: uuid.UUID, purchase_kind: str, statuses: tuple[str, ...]
) -> asyncpg.Record | None:
    """The invoice of the subscription's latest purchase of that kind (the order, or the latest
    renewal), not a later co-term or installment invoice (R39 refunds the purchase)."""
    return await conn.fetchrow(
        """SELECT * FROM invoices WHERE subscription_id = $1 AND purpose = $2
               AND status = ANY($3::text[])
           ORDER BY issued_at DESC, invoice_number DESC LIMIT 1 FOR UPDATE""",
        subscription_id,
        purchase_kind,
        list(statuses),
    )


async def update_purchase_order(
    conn: Conn,
    invoice_id: uuid.UUID,
    *,
    po_number: str | None,
    notes: str | None,
    document: bytes | None,
    file_name: str | None,
    mime_type: str | None,
) -> None:
    await conn.execute(
        """UPDATE invoices SET po_number = $2, notes = $3, po_document = $4, po_file_name = $5,
               po_mime_type = $6 WHERE id = $1""",
        invoice_id,
        po_number,
        notes,
        document,
        file_name,
        mime_type,
    )


async def mark_credited(conn: Conn, invoice_id: uuid.UUID) -> None:
    await conn.execute("UPDATE invoices SET status = 'credited' WHERE id = $1", invoice_id)


# --- charges and payments ---------------------------------------------------------------------


async def record_charge_attempt(
    conn: Conn,
    *,
    invoice_id: uuid.UUID,
    attempt: int,
    succeeded: bool,
    failure_reason: str | None,
    reference: str,
    attempted_at: datetime,
) -> None:
    await conn.execute(
        """INSERT INTO charge_attempts (invoice_id, attempt, succeeded, failure_reason,
               reference, attempted_at) VALUES ($1, $2, $3, $4, $5, $6)""",
        invoice_id,
        attempt,
        succeeded,
        failure_reason,
        reference,
        attempted_at,
    )


async def charge_attempts(conn: Reader, invoice_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM charge_attempts WHERE invoice_id = $1 ORDER BY attempt", invoice_id
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


async def payment_of(conn: Reader, invoice_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM payments WHERE invoice_id = $1", invoice_id)


# --- credit notes -----------------------------------------------------------------------------


async def credit_note_for_refund(conn: Conn, refund_id: uuid.UUID) -> uuid.UUID | None:
    value = await conn.fetchval("SELECT id FROM credit_notes WHERE refund_id = $1", refund_id)
    return value if isinstance(value, uuid.UUID) else None


async def insert_credit_note(
    conn: Conn,
    *,
    credit_note_id: uuid.UUID,
    number: str,
    invoice_id: uuid.UUID,
    refund_id: uuid.UUID,
    account_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
    currency: str,
    lines: list[InvoiceLine],
    reason: str,
    issued_at: datetime,
    refund_method: str,
    refund_amount: Decimal,
    refund_reference: str | None,
    expected_settlement_date: date | None,
) -> None:
    await conn.execute(
        """INSERT INTO credit_notes (id, credit_note_number, invoice_id, refund_id, account_id,
               subscription_id, currency, net_total, vat_total, gross_total, reason, issued_at,
               refund_method, refund_amount, refund_reference, expected_settlement_date)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
        credit_note_id,
        number,
        invoice_id,
        refund_id,
        account_id,
        subscription_id,
        currency,
        sum((line.net_amount for line in lines), Decimal(0)),
        sum((line.vat_amount for line in lines), Decimal(0)),
        sum((line.net_amount + line.vat_amount for line in lines), Decimal(0)),
        reason,
        issued_at,
        refund_method,
        refund_amount,
        refund_reference,
        expected_settlement_date,
    )
    await _insert_lines(conn, "credit_note_lines", "credit_note_id", credit_note_id, lines)


async def get_credit_note(conn: Reader, credit_note_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM credit_notes WHERE id = $1", credit_note_id)


async def credit_note_lines(conn: Reader, credit_note_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM credit_note_lines WHERE credit_note_id = $1 ORDER BY line_no",
        credit_note_id,
    )


async def list_credit_notes(conn: Reader, account_id: uuid.UUID) -> list[asyncpg.Record]:
    return await conn.fetch(
        "SELECT * FROM credit_notes WHERE account_id = $1 ORDER BY issued_at, credit_note_number",
        account_id,
    )


# --- timers that belong to a subscription ------------------------------------------------------


async def cancel_subscription_timers(conn: Conn, kind: str, subscription_id: uuid.UUID) -> int:
    """Pending timers of ``kind`` whose payload names the subscription (shared/timers table)."""
    rows = await conn.fetch(
        """DELETE FROM timers WHERE kind = $1 AND status = 'pending'
               AND payload ->> 'subscription_id' = $2 RETURNING id""",
        kind,
        str(subscription_id),
    )
    return len(rows)


async def timer_known(conn: Conn, kind: str, key: str) -> bool:
    return bool(
        await conn.fetchval("SELECT true FROM timers WHERE kind = $1 AND timer_key = $2", kind, key)
    )


# --- R19: exchange rates ----------------------------------------------------------------------


async def insert_market_rates(
    conn: Conn, rates: list[tuple[str, Decimal, date]], source: str, recorded_at: datetime
) -> None:
    await conn.executemany(
        """INSERT INTO market_rates (currency, rate, as_of, source, recorded_at)
           VALUES ($1, $2, $3, $4, $5)""",
        [(currency, rate, as_of, source, recorded_at) for currency, rate, as_of in rates],
    )


async def latest_market_rate(conn: Conn, currency: str, before: date) -> Decimal | None:
    value = await conn.fetchval(
        """SELECT rate FROM market_rates WHERE currency = $1 AND as_of < $2
           ORDER BY as_of DESC, id DESC LIMIT 1""",
        currency,
        before,
    )
    return value if isinstance(value, Decimal) else None


async def applied_rate_before(
    conn: Reader, currency: str, channel: str, at: datetime, *, inclusive: bool = True
) -> Decimal | None:
    """The applied rate in force at ``at`` (or just before it when not ``inclusive``)."""
    op = "<=" if inclusive else "<"
    value = await conn.fetchval(
        f"""SELECT rate FROM applied_rates WHERE currency = $1 AND channel = $2
               AND effective_from {op} $3 ORDER BY effective_from DESC LIMIT 1""",  # noqa: S608
        currency,
        channel,
        at,
    )
    return value if isinstance(value, Decimal) else None


async def insert_applied_rates(
    conn: Conn, currency: str, quarter: date, rates: list[AppliedRate], computed_at: datetime
) -> int:
    """Idempotent per (currency, channel, effective_from): a recomputed quarter keeps its rates."""
    inserted = 0
    for r in rates:
        done = await conn.fetchval(
            """INSERT INTO applied_rates (currency, channel, effective_from, rate, previous_rate,
                   market_rate, quarter_start, computed_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING true""",
            currency,
            r.channel,
            r.effective_from,
            r.rate,
            r.previous_rate,
            r.market_rate,
            quarter,
            computed_at,
        )
        inserted += 1 if done else 0
    return inserted


async def applied_rate_history(
    conn: Reader, currency: str | None, channel: str | None
) -> list[asyncpg.Record]:
    return await conn.fetch(
        """SELECT currency, channel, effective_from, rate, previous_rate, market_rate,
               quarter_start, computed_at FROM applied_rates
           WHERE ($1::text IS NULL OR currency = $1) AND ($2::text IS NULL OR channel = $2)
           ORDER BY currency, channel, effective_from""",
        currency,
        channel,
    )


async def buyer_of(conn: Reader, account_id: uuid.UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT name, email FROM account_people WHERE account_id = $1 AND 'buyer' = ANY(roles)",
        account_id,
    )


async def open_renewal_invoices(conn: Conn, subscription_id: uuid.UUID) -> list[uuid.UUID]:
    """Unpaid renewal invoices of a subscription that a gateway would charge (card, PayPal)."""
    rows = await conn.fetch(
        """SELECT id FROM invoices
           WHERE subscription_id = $1 AND purpose = 'renewal' AND status = 'issued'
             AND payment_method IN ('card', 'paypal')""",
        subscription_id,
    )
    return [row["id"] for row in rows]
