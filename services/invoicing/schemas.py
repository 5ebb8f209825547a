"""Invoicing's HTTP request and response models.

Responses read as they always did: uuids, decimals (rounded to the currency, as strings) and
datetimes (ISO 8601 with their offset, ``+00:00``) as strings.
"""

from __future__ import annotations

import re
import uuid
from datetime import date
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from shared.schemas import Instant, MultilineText, Text

from . import domain
from .models import AppliedRateRecord, CreditNote, Invoice, Payment, SavedMethod, StoredLine

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


def _not_a_card_number(value: str) -> str:
    """A gateway token only: a card number (12-19 digits) is refused and never stored."""
    if re.fullmatch(r"\d{12,19}", value):
        raise ValueError("looks like a card number: send the gateway's token, never the number")
    return value


GatewayToken = Annotated[
    str,
    Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_\-]+$"),
    AfterValidator(_not_a_card_number),
]
GatewayMethod = Literal["card", "paypal"]


class NewPaymentMethod(Body):
    """R2: a card or PayPal method, as the gateway's token (the gateway's form tokenises)."""

    type: GatewayMethod
    payment_token: GatewayToken
    make_default: bool = False


class DefaultPaymentMethod(Body):
    payment_method_id: uuid.UUID


class InvoicePayment(Body):
    """Pay an open invoice now: a saved method (the buyer's) or a one-off gateway token."""

    payment_method_id: uuid.UUID | None = None
    type: GatewayMethod | None = None
    payment_token: GatewayToken | None = None

    @model_validator(mode="after")
    def one_way_to_pay(self) -> InvoicePayment:
        one_off = self.type is not None or self.payment_token is not None
        if (self.payment_method_id is None) == (not one_off):
            raise ValueError("give payment_method_id, or type and payment_token (not both)")
        if one_off and (self.type is None or self.payment_token is None):
            raise ValueError("a one-off payment needs both type and payment_token")
        return self


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


class PaymentMethodOut(BaseModel):
    """A saved method as the buyer sees it: its label, never the token."""

    id: uuid.UUID
    account_id: uuid.UUID
    type: str
    label: str
    is_default: bool
    added_at: Instant

    @classmethod
    def of(cls, m: SavedMethod) -> PaymentMethodOut:
        return cls(
            id=m.id,
            account_id=m.account_id,
            type=m.kind,
            label=m.label,
            is_default=m.is_default,
            added_at=m.added_at,
        )


class PaymentMethods(BaseModel):
    items: list[PaymentMethodOut]


class InvoicePaymentRecorded(BaseModel):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: str
    currency: str
    method: str
    paid_at: Instant

    @classmethod
    def of(cls, payment: Payment) -> InvoicePaymentRecorded:
        return cls(
            payment_id=payment.id,
            invoice_id=payment.invoice_id,
            amount=str(payment.amount),
            currency=payment.currency,
            method=payment.method,
            paid_at=payment.paid_at,
        )
