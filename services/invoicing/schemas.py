"""Invoicing's HTTP request and response models.

Responses read as they always did: uuids, decimals (rounded to the currency, as strings) and
datetimes (ISO 8601 with their offset, ``+00:00``) as strings.
"""

from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.schemas import Instant, MultilineText, Text

from . import domain
from .models import AppliedRateRecord, CreditNote, Invoice, Payment, StoredLine

# --- requests ------------------------------------------------------------------------------------


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PoDocument(Body):
    file_name: Text = Field(min_length=1, max_length=200)
    mime_type: Text = Field("application/pdf", max_length=100)
    content_base64: str = Field(min_length=1)


class PurchaseOrderChange(Body):
    """R22: fields present replace what is stored; null clears; absent stays."""

    po_number: Text | None = Field(None, max_length=100)
    notes: MultilineText | None = Field(None, max_length=2000)
    po_document: PoDocument | None = None


class BankPayment(Body):
    amount: Decimal = Field(gt=0)
    reference: Text = Field(min_length=1, max_length=200)
    paid_at: AwareDatetime | None = None


class MarketRateIn(Body):
    currency: Text = Field(min_length=3, max_length=3)
    rate: Decimal = Field(gt=0)
    as_of: date


class MarketRates(Body):
    rates: list[MarketRateIn] = Field(min_length=1, max_length=1000)


class Recompute(Body):
    quarter_start: date


# --- responses -----------------------------------------------------------------------------------


def money(value: Decimal, currency: str) -> str:
    return str(domain.round_money(value, currency))


class Line(BaseModel):
    description: str
    quantity: int
    unit_price: str
    net_amount: str
    vat_rate: str
    vat_amount: str

    @classmethod
    def of(cls, line: StoredLine, currency: str) -> Line:
        return cls(
            description=line.description,
            quantity=line.quantity,
            unit_price=money(line.unit_price, currency),
            net_amount=money(line.net_amount, currency),
            vat_rate=str(line.vat_rate.normalize()),
            vat_amount=money(line.vat_amount, currency),
        )


class InvoiceSummary(BaseModel):
    id: uuid.UUID
    invoice_number: str
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    order_id: uuid.UUID | None
    purpose: str
    installment: int | None
    renewal_id: uuid.UUID | None
    currency: str
    exchange_rate: str = Field(description="Exact, as a decimal string")
    channel: str
    billing_country: str | None
    payment_method: str
    status: str
    tax_exempt_reason: str | None
    payer_emails: list[str]
    issued_at: Instant
    due_date: date
    paid_at: Instant | None
    po_number: str | None
    notes: str | None
    po_file_name: str | None
    po_mime_type: str | None
    net_total: str
    vat_total: str
    gross_total: str
    has_po_document: bool

    @classmethod
    def of(cls, i: Invoice) -> InvoiceSummary:
        return cls(**summary_fields(i))


def summary_fields(i: Invoice) -> dict[str, object]:
    currency = i.currency
    return {
        "id": i.id,
        "invoice_number": i.invoice_number,
        "account_id": i.account_id,
        "subscription_id": i.subscription_id,
        "order_id": i.order_id,
        "purpose": i.purpose,
        "installment": i.installment,
        "renewal_id": i.renewal_id,
        "currency": currency,
        "exchange_rate": str(i.exchange_rate.normalize()),
        "channel": i.channel,
        "billing_country": i.billing_country,
        "payment_method": i.payment_method,
        "status": i.status,
        "tax_exempt_reason": i.tax_exempt_reason,
        "payer_emails": i.payer_emails,
        "issued_at": i.issued_at,
        "due_date": i.due_date,
        "paid_at": i.paid_at,
        "po_number": i.po_number,
        "notes": i.notes,
        "po_file_name": i.po_file_name,
        "po_mime_type": i.po_mime_type,
        "net_total": money(i.net_total, currency),
        "vat_total": money(i.vat_total, currency),
        "gross_total": money(i.gross_total, currency),
        "has_po_document": i.po_file_name is not None,
    }


class InvoiceDetail(InvoiceSummary):
    lines: list[Line]

    @classmethod
    def with_lines(cls, i: Invoice, lines: list[StoredLine]) -> InvoiceDetail:
        return cls(**summary_fields(i), lines=[Line.of(line, i.currency) for line in lines])


class Invoices(BaseModel):
    items: list[InvoiceSummary]


class CreditNoteSummary(BaseModel):
    id: uuid.UUID
    credit_note_number: str
    invoice_id: uuid.UUID
    refund_id: uuid.UUID
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    currency: str
    reason: str
    issued_at: Instant
    refund_method: str
    refund_reference: str | None
    expected_settlement_date: date | None
    net_total: str
    vat_total: str
    gross_total: str
    refund_amount: str

    @classmethod
    def of(cls, n: CreditNote) -> CreditNoteSummary:
        return cls(**note_fields(n))


def note_fields(n: CreditNote) -> dict[str, object]:
    currency = n.currency
    return {
        "id": n.id,
        "credit_note_number": n.credit_note_number,
        "invoice_id": n.invoice_id,
        "refund_id": n.refund_id,
        "account_id": n.account_id,
        "subscription_id": n.subscription_id,
        "currency": currency,
        "reason": n.reason,
        "issued_at": n.issued_at,
        "refund_method": n.refund_method,
        "refund_reference": n.refund_reference,
        "expected_settlement_date": n.expected_settlement_date,
        "net_total": money(n.net_total, currency),
        "vat_total": money(n.vat_total, currency),
        "gross_total": money(n.gross_total, currency),
        "refund_amount": money(n.refund_amount, currency),
    }


class CreditNoteDetail(CreditNoteSummary):
    lines: list[Line]

    @classmethod
    def with_lines(cls, n: CreditNote, lines: list[StoredLine]) -> CreditNoteDetail:
        return cls(**note_fields(n), lines=[Line.of(line, n.currency) for line in lines])


class CreditNotes(BaseModel):
    items: list[CreditNoteSummary]


class RenewalPurchaseOrder(BaseModel):
    """R22: what the coming renewal invoice will carry."""

    subscription_id: uuid.UUID
    po_number: str | None
    notes: str | None
    po_file_name: str | None


class BankPaymentRecorded(BaseModel):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: str
    currency: str
    paid_at: Instant

    @classmethod
    def of(cls, payment: Payment) -> BankPaymentRecorded:
        return cls(
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            amount=str(payment.amount),
            currency=payment.currency,
            paid_at=payment.paid_at,
        )


class MarketRatesRecorded(BaseModel):
    recorded: int
    source: str


class RatesRecomputed(BaseModel):
    quarter_start: date
    rates_added: int


class AppliedRateOut(BaseModel):
    currency: str
    channel: str
    effective_from: Instant
    rate: str
    previous_rate: str
    market_rate: str
    quarter_start: date
    computed_at: Instant

    @classmethod
    def of(cls, r: AppliedRateRecord) -> AppliedRateOut:
        return cls(
            currency=r.currency,
            channel=r.channel,
            effective_from=r.effective_from,
            rate=str(r.rate),  # exact decimal strings
            previous_rate=str(r.previous_rate),
            market_rate=str(r.market_rate),
            quarter_start=r.quarter_start,
            computed_at=r.computed_at,
        )


class ExchangeRates(BaseModel):
    base_currency: str
    initial_rates: dict[str, str]
    history: list[AppliedRateOut]
