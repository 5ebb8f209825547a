"""What invoicing keeps, as typed rows (frozen dataclasses), and the repository port the use
cases work through (``Repository``; the SQL one is ``repository.PostgresRepository``, unit
tests use an in-memory fake)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Protocol

from shared.contracts import (
    AccountOpened,
    BillingIdentity,
    Channel,
    InvoiceLine,
    InvoicePurpose,
    OrderPlaced,
    PaymentMethod,
    RolesChanged,
    Term,
)

from .domain import PurchaseOrder
from .exchange_rates import AppliedRate, MarketRate

__all__ = ["MarketRate", "PurchaseOrder"]  # value types of the domain, stored as they are


@dataclass(frozen=True)
class Account:
    id: uuid.UUID
    country: str
    currency: str
    language: str
    time_zone: str
    tax_exempt_reason: str | None
    name: str | None
    test_clock_id: uuid.UUID | None
    prepay_only: bool = False  # R34: cancelled once on an unpaid invoice


@dataclass(frozen=True)
class Subscription:
    """Invoicing's projection of a subscription: how it is billed and charged."""

    id: uuid.UUID
    account_id: uuid.UUID
    order_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    channel: Channel
    payment_method: PaymentMethod
    payment_token: str | None
    currency: str
    billing_country: str
    time_zone: str
    trial: bool
    renewal_po_number: str | None
    renewal_notes: str | None
    renewal_po_document: bytes | None
    renewal_po_file_name: str | None
    renewal_po_mime_type: str | None
    payment_method_id: uuid.UUID | None = None  # the saved method it renews with (R2, R14)
    cancelled: bool = False  # R34: final; nothing renews or is charged any more


@dataclass(frozen=True)
class SavedMethod:
    """A card or PayPal method the buyer saved (R2): the gateway's token and its label."""

    id: uuid.UUID
    account_id: uuid.UUID
    kind: PaymentMethod
    token: str
    label: str
    is_default: bool
    added_at: datetime
    removed_at: datetime | None = None


@dataclass(frozen=True)
class Invoice:
    """An invoice as stored (its PO document is read apart: ``Repository.purchase_order``)."""

    id: uuid.UUID
    invoice_number: str
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    order_id: uuid.UUID | None
    purpose: InvoicePurpose
    installment: int | None
    renewal_id: uuid.UUID | None
    currency: str
    exchange_rate: Decimal
    channel: Channel
    billing_country: str | None
    time_zone: str
    net_total: Decimal
    vat_total: Decimal
    gross_total: Decimal
    payment_method: PaymentMethod
    payment_token: str | None
    status: str
    tax_exempt_reason: str | None
    payer_emails: list[str]
    issued_at: datetime
    due_date: date
    paid_at: datetime | None
    po_number: str | None
    notes: str | None
    po_file_name: str | None
    po_mime_type: str | None
    # Issue 15, fixed at issue: the buyer's identity then (BillingIdentity as JSON), what was
    # billed (printed by name) and the service period covered (local dates, both inclusive).
    buyer_billing: str | None = None
    offering: str | None = None
    term: Term | None = None
    period_start: date | None = None
    period_end: date | None = None


@dataclass(frozen=True)
class StoredLine:
    """A line of an invoice or credit note as stored (amounts to 4 places)."""

    description: str
    quantity: int
    unit_price: Decimal
    net_amount: Decimal
    vat_rate: Decimal
    vat_amount: Decimal


@dataclass(frozen=True)
class CreditNote:
    id: uuid.UUID
    credit_note_number: str
    invoice_id: uuid.UUID
    refund_id: uuid.UUID
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    currency: str
    net_total: Decimal
    vat_total: Decimal
    gross_total: Decimal
    reason: str
    issued_at: datetime
    refund_method: PaymentMethod
    refund_amount: Decimal
    refund_reference: str | None
    expected_settlement_date: date | None


@dataclass(frozen=True)
class Payment:
    id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    reference: str
    paid_at: datetime


@dataclass(frozen=True)
class ChargeAttempt:
    invoice_id: uuid.UUID
    attempt: int
    succeeded: bool
    failure_reason: str | None
    reference: str
    attempted_at: datetime


@dataclass(frozen=True)
class AppliedRateRecord:
    """R19: one applied rate of the history, as an operator reads it."""

    currency: str
    channel: Channel
    effective_from: datetime
    rate: Decimal
    previous_rate: Decimal
    market_rate: Decimal
    quarter_start: date
    computed_at: datetime


@dataclass(frozen=True)
class Buyer:
    name: str
    email: str


@dataclass(frozen=True)
class Timer:
    """A durable timer to schedule (shared.timers)."""

    kind: str
    key: str
    due_at: datetime
    account_id: uuid.UUID | None = None
    clock_id: uuid.UUID | None = None
    payload: dict[str, Any] | None = None


class Repository(Protocol):
    """Invoicing's storage, on one open transaction."""

    # accounts, people, subscriptions
    async def get_account(self, account_id: uuid.UUID) -> Account | None: ...
    async def require_prepayment(self, account_id: uuid.UUID) -> None: ...
    async def upsert_account(self, account_id: uuid.UUID, opened: AccountOpened) -> None: ...
    async def billing_identity(self, account_id: uuid.UUID) -> BillingIdentity | None: ...
    async def set_billing_identity(
        self, account_id: uuid.UUID, identity: BillingIdentity
    ) -> None: ...
    async def apply_roles(self, account_id: uuid.UUID, snapshot: RolesChanged) -> None: ...
    async def roles_of(self, account_id: uuid.UUID, user_id: uuid.UUID) -> set[str]: ...
    async def payer_emails(self, account_id: uuid.UUID) -> list[str]: ...
    async def buyer_of(self, account_id: uuid.UUID) -> Buyer | None: ...
    async def upsert_subscription(self, account_id: uuid.UUID, order: OrderPlaced) -> None: ...
    async def get_subscription(self, subscription_id: uuid.UUID) -> Subscription | None: ...
    async def update_subscription(self, subscription_id: uuid.UUID, **fields: object) -> None: ...
    async def set_renewal_purchase_order(
        self, subscription_id: uuid.UUID, po: PurchaseOrder
    ) -> None: ...

    # invoices
    async def next_in_series(self, series: str) -> int: ...
    async def invoice_id_for_source(self, source_key: str) -> uuid.UUID | None: ...
    async def insert_invoice(
        self,
        invoice: Invoice,
        *,
        source_key: str,
        lines: list[InvoiceLine],
        po: PurchaseOrder,
    ) -> None: ...
    async def get_invoice(self, invoice_id: uuid.UUID) -> Invoice | None: ...
    async def lock_invoice(self, invoice_id: uuid.UUID) -> Invoice | None: ...
    async def invoice_lines(self, invoice_id: uuid.UUID) -> list[StoredLine]: ...
    async def list_invoices(self, account_id: uuid.UUID) -> list[Invoice]: ...
    async def purchase_invoice(
        self, subscription_id: uuid.UUID, purchase_kind: str, statuses: tuple[str, ...]
    ) -> Invoice | None: ...
    async def purchase_order(self, invoice_id: uuid.UUID) -> PurchaseOrder: ...
    async def update_purchase_order(self, invoice_id: uuid.UUID, po: PurchaseOrder) -> None: ...
    async def mark_credited(self, invoice_id: uuid.UUID) -> None: ...
    async def open_renewal_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]: ...
    async def open_gateway_invoices(self, subscription_id: uuid.UUID) -> list[uuid.UUID]: ...

    # charges and payments
    async def record_charge_attempt(self, attempt: ChargeAttempt) -> None: ...
    async def charge_attempts(self, invoice_id: uuid.UUID) -> list[ChargeAttempt]: ...
    async def set_invoice_payment(
        self, invoice_id: uuid.UUID, method: PaymentMethod, token: str | None
    ) -> None: ...
    async def record_payment(self, payment: Payment) -> None: ...
    async def payment_of(self, invoice_id: uuid.UUID) -> Payment | None: ...

    # saved payment methods (R2)
    async def insert_payment_method(self, method: SavedMethod) -> None: ...
    async def payment_methods(self, account_id: uuid.UUID) -> list[SavedMethod]: ...
    async def get_payment_method(self, method_id: uuid.UUID) -> SavedMethod | None: ...
    async def set_default_payment_method(
        self, account_id: uuid.UUID, method_id: uuid.UUID
    ) -> None: ...
    async def remove_payment_method(self, method_id: uuid.UUID, at: datetime) -> None: ...
    async def live_gateway_subscriptions(self, account_id: uuid.UUID) -> list[Subscription]: ...
    # credit notes
    async def credit_note_for_refund(self, refund_id: uuid.UUID) -> uuid.UUID | None: ...
    async def insert_credit_note(self, note: CreditNote, lines: list[InvoiceLine]) -> None: ...
    async def get_credit_note(self, credit_note_id: uuid.UUID) -> CreditNote | None: ...
    async def credit_note_lines(self, credit_note_id: uuid.UUID) -> list[StoredLine]: ...
    async def list_credit_notes(self, account_id: uuid.UUID) -> list[CreditNote]: ...

    # timers
    async def schedule_timer(self, timer: Timer) -> None: ...
    async def cancel_timer(self, kind: str, key: str, *, wait: bool = True) -> None: ...
    async def cancel_subscription_timers(self, kind: str, subscription_id: uuid.UUID) -> int: ...
    async def timer_known(self, kind: str, key: str) -> bool: ...

    # R19: exchange rates
    async def insert_market_rates(
        self, rates: list[MarketRate], source: str, recorded_at: datetime
    ) -> None: ...
    async def latest_market_rate(self, currency: str, before: date) -> Decimal | None: ...
    async def applied_rate_before(
        self, currency: str, channel: str, at: datetime, *, inclusive: bool = True
    ) -> Decimal | None: ...
    async def insert_applied_rates(
        self, currency: str, quarter: date, rates: list[AppliedRate], computed_at: datetime
    ) -> list[AppliedRate]:
        """The rates inserted (a rate already computed is kept, and not returned)."""
        ...

    async def applied_rate_history(
        self, currency: str | None, channel: str | None
    ) -> list[AppliedRateRecord]: ...
