"""Invoicing's SQL: ``PostgresRepository`` on one open connection, returning typed rows."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import asyncpg

from shared import people, timers
from shared.contracts import (
    AccountOpened,
    BillingIdentity,
    InvoiceLine,
    OrderPlaced,
    PaymentMethod,
    RolesChanged,
)
from shared.db import Conn

from .exchange_rates import AppliedRate
from .models import (
    Account,
    AppliedRateRecord,
    Buyer,
    ChargeAttempt,
    CreditNote,
    Invoice,
    MarketRate,
    Payment,
    PurchaseOrder,
    Repository,
    SavedMethod,
    StoredLine,
    Subscription,
    Timer,
)

__all__ = ["PostgresRepository", "Repository"]

RowT = TypeVar("RowT")


def _typed(row_type: type[RowT], record: asyncpg.Record | None) -> RowT | None:
    """The row as ``row_type`` (its fields picked by name from the record)."""
    if record is None:
        return None
    names = [f.name for f in dataclasses.fields(row_type)]  # type: ignore[arg-type]
    return row_type(**{name: record[name] for name in names})


def _all(row_type: type[RowT], records: list[asyncpg.Record]) -> list[RowT]:
    found = [_typed(row_type, r) for r in records]
    return [row for row in found if row is not None]


def _columns(row_type: type[Any]) -> str:
    return ", ".join(f.name for f in dataclasses.fields(row_type))


INVOICE_COLUMNS = _columns(Invoice)
SUBSCRIPTION_UPDATABLE = {
    "offering",
    "term",
    "seats",
    "channel",
    "payment_method",
    "payment_token",
    "trial",
    "payment_method_id",
    "cancelled",
}
SAVED_METHOD_COLUMNS = _columns(SavedMethod)


class PostgresRepository:
    """The real ``Repository``: SQL on the caller's connection (and its transaction).

    One instance serves one unit of work. The account and its billing identity, read by
    several steps of one use case (issue 17: up to five times while invoicing an order), are
    read once per instance and kept (an identity map); this repository's own writes to them
    drop what it kept, and nothing else writes them inside the caller's transaction."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self._accounts: dict[uuid.UUID, Account | None] = {}
        self._identities: dict[uuid.UUID, BillingIdentity | None] = {}

    # --- accounts, people and subscriptions ----------------------------------------------------

    async def get_account(self, account_id: uuid.UUID) -> Account | None:
        if account_id not in self._accounts:
            record = await self.conn.fetchrow(
                f"SELECT {_columns(Account)} FROM accounts WHERE id = $1",  # noqa: S608
                account_id,
            )
            self._accounts[account_id] = _typed(Account, record)
        return self._accounts[account_id]

    async def billing_identity(self, account_id: uuid.UUID) -> BillingIdentity | None:
        if account_id not in self._identities:
            found = await self.conn.fetchval(
                "SELECT billing::text FROM account_billing_details WHERE account_id = $1",
                account_id,
            )
            self._identities[account_id] = (
                BillingIdentity.model_validate_json(found) if isinstance(found, str) else None
            )
        return self._identities[account_id]

    async def set_billing_identity(self, account_id: uuid.UUID, identity: BillingIdentity) -> None:
        self._identities.pop(account_id, None)
        await self.conn.execute(
            """INSERT INTO account_billing_details (account_id, billing) VALUES ($1, $2::jsonb)
               ON CONFLICT (account_id) DO UPDATE SET billing = EXCLUDED.billing""",
            account_id,
            identity.model_dump_json(),
        )

    async def require_prepayment(self, account_id: uuid.UUID) -> None:
        self._accounts.pop(account_id, None)
        await self.conn.execute("UPDATE accounts SET prepay_only = true WHERE id = $1", account_id)

    async def upsert_account(self, account_id: uuid.UUID, opened: AccountOpened) -> None:
        self._accounts.pop(account_id, None)
        await self.conn.execute(
            """INSERT INTO accounts (id, country, currency, language, time_zone,
                   tax_exempt_reason, name, test_clock_id)
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

    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None:
        await people.apply_snapshot(self.conn, account_id, snapshot)

    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]:
        return await people.roles_of(self.conn, account_id, user_id)

    async def payer_emails(self, account_id: uuid.UUID) -> list[str]:
        records = await self.conn.fetch(
            "SELECT email FROM account_people WHERE account_id = $1 AND 'payer' = ANY(roles)",
            account_id,
        )
        return [str(r["email"]) for r in records]

    async def buyer_of(self, account_id: uuid.UUID) -> Buyer | None:
        record = await self.conn.fetchrow(
            "SELECT name, email FROM account_people WHERE account_id = $1 AND 'buyer' = ANY(roles)",
            account_id,
        )
        return _typed(Buyer, record)

    async def upsert_subscription(self, account_id: uuid.UUID, order: OrderPlaced) -> None:
        await self.conn.execute(
            """INSERT INTO subscriptions (id, account_id, order_id, offering, term, seats,
                   channel, payment_method, payment_token, currency, billing_country, time_zone,
                   trial)
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

    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None:
        record = await self.conn.fetchrow(
            f"SELECT {_columns(Subscription)} FROM subscriptions WHERE id = $1",  # noqa: S608
            subscription_id,
        )
        return _typed(Subscription, record)

    async def update_subscription(self, subscription_id: uuid.UUID, **fields: object) -> None:
        """Change the named columns (names come from our code, never from a request)."""
        if not fields or not set(fields) <= SUBSCRIPTION_UPDATABLE:
            raise ValueError(f"cannot update subscription fields {sorted(fields)}")
        names = sorted(fields)
        assignments = ", ".join(f"{name} = ${n}" for n, name in enumerate(names, start=2))
        await self.conn.execute(
            f"UPDATE subscriptions SET {assignments} WHERE id = $1",  # noqa: S608 - names checked
            subscription_id,
            *(fields[name] for name in names),
        )

    async def set_renewal_purchase_order(
        self, subscription_id: uuid.UUID, po: PurchaseOrder
    ) -> None:
        await self.conn.execute(
            """UPDATE subscriptions SET renewal_po_number = $2, renewal_notes = $3,
                   renewal_po_document = $4, renewal_po_file_name = $5, renewal_po_mime_type = $6
               WHERE id = $1""",
            subscription_id,
            po.po_number,
            po.notes,
            po.document,
            po.file_name,
            po.mime_type,
        )

    # --- invoices ------------------------------------------------------------------------------

    async def next_in_series(self, series: str) -> int:
        """Gapless: the row lock is held until the caller's transaction ends (see 0001)."""
        return int(
            await self.conn.fetchval(
                """INSERT INTO invoice_series (series, last_number) VALUES ($1, 1)
                   ON CONFLICT (series) DO UPDATE
                   SET last_number = invoice_series.last_number + 1
                   RETURNING last_number""",
                series,
            )
        )

    async def invoice_id_for_source(self, source_key: str) -> uuid.UUID | None:
        value = await self.conn.fetchval(
            "SELECT id FROM invoices WHERE source_key = $1", source_key
        )
        return value if isinstance(value, uuid.UUID) else None

    async def insert_invoice(
        self,
        invoice: Invoice,
        *,
        source_key: str,
        lines: list[InvoiceLine],
        po: PurchaseOrder,
    ) -> None:
        i = invoice
        await self.conn.execute(
            """INSERT INTO invoices (id, invoice_number, source_key, account_id,
                   subscription_id, order_id, purpose, installment, renewal_id, currency,
                   exchange_rate, channel, billing_country, time_zone, net_total, vat_total,
                   gross_total, payment_method, payment_token, status, tax_exempt_reason,
                   payer_emails, issued_at, due_date, po_number, notes, po_document,
                   po_file_name, po_mime_type, buyer_billing, offering, term, period_start,
                   period_end)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                   $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29, $30::jsonb,
                   $31, $32, $33, $34)""",
            i.id,
            i.invoice_number,
            source_key,
            i.account_id,
            i.subscription_id,
            i.order_id,
            i.purpose,
            i.installment,
            i.renewal_id,
            i.currency,
            i.exchange_rate,
            i.channel,
            i.billing_country,
            i.time_zone,
            i.net_total,
            i.vat_total,
            i.gross_total,
            i.payment_method,
            i.payment_token,
            i.status,
            i.tax_exempt_reason,
            i.payer_emails,
            i.issued_at,
            i.due_date,
            po.po_number,
            po.notes,
            po.document,
            po.file_name,
            po.mime_type,
            i.buyer_billing,
            i.offering,
            i.term,
            i.period_start,
            i.period_end,
        )
        await self._insert_lines("invoice_lines", "invoice_id", i.id, lines)

    async def _insert_lines(
        self, table: str, owner_column: str, owner: uuid.UUID, lines: list[InvoiceLine]
    ) -> None:
        await self.conn.executemany(
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

    async def _lines(self, table: str, owner_column: str, owner: uuid.UUID) -> list[StoredLine]:
        records = await self.conn.fetch(
            f"SELECT {_columns(StoredLine)} FROM {table}"  # noqa: S608 - our table names
            f" WHERE {owner_column} = $1 ORDER BY line_no",
            owner,
        )
        return _all(StoredLine, records)

    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        record = await self.conn.fetchrow(
            f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1",  # noqa: S608
            invoice_id,
        )
        return _typed(Invoice, record)

    async def lock_invoice(self, invoice_id: uuid.UUID) -> Invoice | None:
        record = await self.conn.fetchrow(
            f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1 FOR UPDATE",  # noqa: S608
            invoice_id,
        )
        return _typed(Invoice, record)

    async def invoice_lines(self, invoice_id: uuid.UUID) -> list[StoredLine]:
        return await self._lines("invoice_lines", "invoice_id", invoice_id)

    async def list_invoices(self, account_id: uuid.UUID) -> list[Invoice]:
        records = await self.conn.fetch(
            f"SELECT {INVOICE_COLUMNS} FROM invoices WHERE account_id = $1"  # noqa: S608
            " ORDER BY issued_at, invoice_number",
            account_id,
        )
        return _all(Invoice, records)

    async def purchase_invoice(
        self, subscription_id: uuid.UUID, purchase_kind: str, statuses: tuple[str, ...]
    ) -> Invoice | None:
        """The invoice of the subscription's latest purchase of that kind (the order, or the
        latest renewal), not a later co-term or installment invoice (R39 refunds the
        purchase)."""
        record = await self.conn.fetchrow(
            f"""SELECT {INVOICE_COLUMNS} FROM invoices
                WHERE subscription_id = $1 AND purpose = $2 AND status = ANY($3::text[])
                ORDER BY issued_at DESC, invoice_number DESC LIMIT 1 FOR UPDATE""",  # noqa: S608
            subscription_id,
            purchase_kind,
            list(statuses),
        )
        return _typed(Invoice, record)

    async def purchase_order(self, invoice_id: uuid.UUID) -> PurchaseOrder:
        record = await self.conn.fetchrow(
            """SELECT po_number, notes, po_document AS document, po_file_name AS file_name,
                   po_mime_type AS mime_type FROM invoices WHERE id = $1""",
            invoice_id,
        )
        po = _typed(PurchaseOrder, record)
        if po is not None and po.document is not None:
            po = dataclasses.replace(po, document=bytes(po.document))
        return po or PurchaseOrder()

    async def update_purchase_order(self, invoice_id: uuid.UUID, po: PurchaseOrder) -> None:
        await self.conn.execute(
            """UPDATE invoices SET po_number = $2, notes = $3, po_document = $4,
                   po_file_name = $5, po_mime_type = $6 WHERE id = $1""",
            invoice_id,
            po.po_number,
            po.notes,
            po.document,
            po.file_name,
            po.mime_type,
        )

    async def mark_credited(self, invoice_id: uuid.UUID) -> None:
        await self.conn.execute("UPDATE invoices SET status = 'credited' WHERE id = $1", invoice_id)

    async def open_renewal_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]:
        """Unpaid renewal invoices of a subscription that a gateway would charge."""
        records = await self.conn.fetch(
            """SELECT id FROM invoices
               WHERE subscription_id = $1 AND purpose = 'renewal' AND status = 'issued'
                 AND payment_method IN ('card', 'paypal')""",
            subscription_id,
        )
        return [uuid.UUID(str(r["id"])) for r in records]

    async def open_gateway_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]:
        """Unpaid card/PayPal invoices of a subscription (charged at issue: their charge failed),
        oldest first."""
        records = await self.conn.fetch(
            """SELECT id FROM invoices
               WHERE subscription_id = $1 AND status = 'issued'
                 AND payment_method IN ('card', 'paypal')
               ORDER BY issued_at, invoice_number""",
            subscription_id,
        )
        return [uuid.UUID(str(r["id"])) for r in records]

    # --- saved payment methods (R2) ------------------------------------------------------------

    async def insert_payment_method(self, method: SavedMethod) -> None:
        m = method
        await self.conn.execute(
            """INSERT INTO payment_methods (id, account_id, kind, token, label, is_default,
                   added_at) VALUES ($1, $2, $3, $4, $5, false, $6)""",
            m.id,
            m.account_id,
            m.kind,
            m.token,
            m.label,
            m.added_at,
        )
        if m.is_default:
            await self.set_default_payment_method(m.account_id, m.id)

    async def payment_methods(self, account_id: uuid.UUID) -> list[SavedMethod]:
        records = await self.conn.fetch(
            f"""SELECT {SAVED_METHOD_COLUMNS} FROM payment_methods
                WHERE account_id = $1 AND removed_at IS NULL ORDER BY added_at, id""",  # noqa: S608
            account_id,
        )
        return _all(SavedMethod, records)

    async def get_payment_method(self, method_id: uuid.UUID) -> SavedMethod | None:
        record = await self.conn.fetchrow(
            f"SELECT {SAVED_METHOD_COLUMNS} FROM payment_methods WHERE id = $1",  # noqa: S608
            method_id,
        )
        return _typed(SavedMethod, record)

    async def set_default_payment_method(self, account_id: uuid.UUID, method_id: uuid.UUID) -> None:
        """One default per account (a unique index): the old one is cleared first."""
        await self.conn.execute(
            """UPDATE payment_methods SET is_default = false
               WHERE account_id = $1 AND is_default AND id <> $2""",
            account_id,
            method_id,
        )
        await self.conn.execute(
            "UPDATE payment_methods SET is_default = true WHERE id = $1", method_id
        )

    async def remove_payment_method(self, method_id: uuid.UUID, at: datetime) -> None:
        await self.conn.execute(
            "UPDATE payment_methods SET removed_at = $2, is_default = false WHERE id = $1",
            method_id,
            at,
        )

    async def live_gateway_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]:
        records = await self.conn.fetch(
            f"""SELECT {_columns(Subscription)} FROM subscriptions
                WHERE account_id = $1 AND NOT cancelled AND NOT trial
                  AND payment_method IN ('card', 'paypal')""",  # noqa: S608
            account_id,
        )
        return _all(Subscription, records)

    # --- charges and payments ------------------------------------------------------------------

    async def record_charge_attempt(self, attempt: ChargeAttempt) -> None:
        a = attempt
        await self.conn.execute(
            """INSERT INTO charge_attempts (invoice_id, attempt, succeeded, failure_reason,
                   reference, attempted_at) VALUES ($1, $2, $3, $4, $5, $6)""",
            a.invoice_id,
            a.attempt,
            a.succeeded,
            a.failure_reason,
            a.reference,
            a.attempted_at,
        )

    async def charge_attempts(self, invoice_id: uuid.UUID) -> list[ChargeAttempt]:
        """The invoice's charge attempts, in order."""
        records = await self.conn.fetch(
            """SELECT invoice_id, attempt, succeeded, failure_reason, reference, attempted_at
               FROM charge_attempts WHERE invoice_id = $1 ORDER BY attempt""",
            invoice_id,
        )
        return [ChargeAttempt(**dict(r)) for r in records]

    async def set_invoice_payment(
        self, invoice_id: uuid.UUID, method: PaymentMethod, token: str | None
    ) -> None:
        """The method (and gateway token) an open invoice is charged with from now on."""
        await self.conn.execute(
            "UPDATE invoices SET payment_method = $2, payment_token = $3 WHERE id = $1",
            invoice_id,
            method,
            token,
        )

    async def record_payment(self, payment: Payment) -> None:
        p = payment
        await self.conn.execute(
            """INSERT INTO payments (id, invoice_id, amount, currency, method, reference,
                   paid_at) VALUES ($1, $2, $3, $4, $5, $6, $7)""",
            p.id,
            p.invoice_id,
            p.amount,
            p.currency,
            p.method,
            p.reference,
            p.paid_at,
        )
        await self.conn.execute(
            "UPDATE invoices SET status = 'paid', paid_at = $2 WHERE id = $1",
            p.invoice_id,
            p.paid_at,
        )

    async def payment_of(self, invoice_id: uuid.UUID) -> Payment | None:
        record = await self.conn.fetchrow(
            f"SELECT {_columns(Payment)} FROM payments WHERE invoice_id = $1",  # noqa: S608
            invoice_id,
        )
        return _typed(Payment, record)

    # --- credit notes --------------------------------------------------------------------------

    async def credit_note_for_refund(self, refund_id: uuid.UUID) -> uuid.UUID | None:
        value = await self.conn.fetchval(
            "SELECT id FROM credit_notes WHERE refund_id = $1", refund_id
        )
        return value if isinstance(value, uuid.UUID) else None

    async def insert_credit_note(self, note: CreditNote, lines: list[InvoiceLine]) -> None:
        n = note
        await self.conn.execute(
            """INSERT INTO credit_notes (id, credit_note_number, invoice_id, refund_id,
                   account_id, subscription_id, currency, net_total, vat_total, gross_total,
                   reason, issued_at, refund_method, refund_amount, refund_reference,
                   expected_settlement_date)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)""",
            n.id,
            n.credit_note_number,
            n.invoice_id,
            n.refund_id,
            n.account_id,
            n.subscription_id,
            n.currency,
            n.net_total,
            n.vat_total,
            n.gross_total,
            n.reason,
            n.issued_at,
            n.refund_method,
            n.refund_amount,
            n.refund_reference,
            n.expected_settlement_date,
        )
        await self._insert_lines("credit_note_lines", "credit_note_id", n.id, lines)

    async def get_credit_note(self, credit_note_id: uuid.UUID) -> CreditNote | None:
        record = await self.conn.fetchrow(
            f"SELECT {_columns(CreditNote)} FROM credit_notes WHERE id = $1",  # noqa: S608
            credit_note_id,
        )
        return _typed(CreditNote, record)

    async def credit_note_lines(self, credit_note_id: uuid.UUID) -> list[StoredLine]:
        return await self._lines("credit_note_lines", "credit_note_id", credit_note_id)

    async def list_credit_notes(self, account_id: uuid.UUID) -> list[CreditNote]:
        records = await self.conn.fetch(
            f"SELECT {_columns(CreditNote)} FROM credit_notes WHERE account_id = $1"  # noqa: S608
            " ORDER BY issued_at, credit_note_number",
            account_id,
        )
        return _all(CreditNote, records)

    # --- timers (shared.timers) ----------------------------------------------------------------

    async def schedule_timer(self, timer: Timer) -> None:
        await timers.schedule(
            self.conn,
            kind=timer.kind,
            key=timer.key,
            due_at=timer.due_at,
            account_id=timer.account_id,
            clock_id=timer.clock_id,
            payload=timer.payload,
        )

    async def cancel_timer(self, kind: str, key: str, *, wait: bool = True) -> None:
        await timers.cancel(self.conn, kind=kind, key=key, wait=wait)

    async def cancel_subscription_timers(self, kind: str, subscription_id: uuid.UUID) -> int:
        """Pending timers of ``kind`` whose payload names the subscription."""
        records = await self.conn.fetch(
            """DELETE FROM timers WHERE kind = $1 AND status = 'pending'
                   AND payload ->> 'subscription_id' = $2 RETURNING id""",
            kind,
            str(subscription_id),
        )
        return len(records)

    async def timer_known(self, kind: str, key: str) -> bool:
        return bool(
            await self.conn.fetchval(
                "SELECT true FROM timers WHERE kind = $1 AND timer_key = $2", kind, key
            )
        )

    # --- R19: exchange rates -------------------------------------------------------------------

    async def insert_market_rates(
        self, rates: list[MarketRate], source: str, recorded_at: datetime
    ) -> None:
        await self.conn.executemany(
            """INSERT INTO market_rates (currency, rate, as_of, source, recorded_at)
               VALUES ($1, $2, $3, $4, $5)""",
            [(r.currency, r.rate, r.as_of, source, recorded_at) for r in rates],
        )

    async def latest_market_rate(self, currency: str, before: date) -> Decimal | None:
        value = await self.conn.fetchval(
            """SELECT rate FROM market_rates WHERE currency = $1 AND as_of < $2
               ORDER BY as_of DESC, id DESC LIMIT 1""",
            currency,
            before,
        )
        return value if isinstance(value, Decimal) else None

    async def applied_rate_before(
        self, currency: str, channel: str, at: datetime, *, inclusive: bool = True
    ) -> Decimal | None:
        """The applied rate in force at ``at`` (or just before it when not ``inclusive``)."""
        op = "<=" if inclusive else "<"
        value = await self.conn.fetchval(
            f"""SELECT rate FROM applied_rates WHERE currency = $1 AND channel = $2
                   AND effective_from {op} $3 ORDER BY effective_from DESC LIMIT 1""",  # noqa: S608
            currency,
            channel,
            at,
        )
        return value if isinstance(value, Decimal) else None

    async def insert_applied_rates(
        self, currency: str, quarter: date, rates: list[AppliedRate], computed_at: datetime
    ) -> list[AppliedRate]:
        """Idempotent per (currency, channel, effective_from): a recomputed quarter keeps its
        rates; returns those inserted now."""
        inserted: list[AppliedRate] = []
        for r in rates:
            done = await self.conn.fetchval(
                """INSERT INTO applied_rates (currency, channel, effective_from, rate,
                       previous_rate, market_rate, quarter_start, computed_at)
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                   ON CONFLICT DO NOTHING RETURNING true""",
                currency,
                r.channel,
                r.effective_from,
                r.rate,
                r.previous_rate,
                r.market_rate,
                quarter,
                computed_at,
            )
            if done:
                inserted.append(r)
        return inserted

    async def applied_rate_history(
        self, currency: str | None, channel: str | None
    ) -> list[AppliedRateRecord]:
        records = await self.conn.fetch(
            f"""SELECT {_columns(AppliedRateRecord)} FROM applied_rates
               WHERE ($1::text IS NULL OR currency = $1) AND ($2::text IS NULL OR channel = $2)
               ORDER BY currency, channel, effective_from""",  # noqa: S608
            currency,
            channel,
        )
        return _all(AppliedRateRecord, records)
