"""The typed commands invoicing's use cases take (besides the events' own contracts)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.contracts import Channel, PaymentMethod, Term

from .domain import ReminderKind


@dataclass(frozen=True)
class Cause:
    """The consumed event a use case answers: whose it is and when it happened."""

    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    occurred_at: datetime


@dataclass(frozen=True)
class BillingTime:
    """``at`` dates the documents (issue, payment, attempt); ``events_at`` is the events' time:
    a timer's due time, or None for the account's clock."""

    at: datetime
    events_at: datetime | None = None


@dataclass(frozen=True)
class Billed:
    """What is billed and how: one subscription term (or an installment of it)."""

    account_id: uuid.UUID
    subscription_id: uuid.UUID | None
    order_id: uuid.UUID | None
    offering: str
    term: Term
    seats: int
    channel: Channel
    payment_method: PaymentMethod
    payment_token: str | None
    currency: str
    billing_country: str
    time_zone: str
    quoted_unit_price: Decimal | None = None  # R16: an accepted quote's price, billed as is


@dataclass(frozen=True)
class RetryDue:
    """R37: the next charge attempt of a failed card/PayPal invoice (a durable timer's payload)."""

    invoice_id: uuid.UUID
    attempt: int
    first_failed_at: datetime
    subscription_id: uuid.UUID | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "invoice_id": str(self.invoice_id),
            "attempt": self.attempt,
            "first_failed_at": self.first_failed_at.isoformat(),
            "subscription_id": str(self.subscription_id),
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> RetryDue:
        subscription = p.get("subscription_id")
        return cls(
            invoice_id=uuid.UUID(p["invoice_id"]),
            attempt=int(p["attempt"]),
            first_failed_at=datetime.fromisoformat(p["first_failed_at"]),
            subscription_id=uuid.UUID(subscription) if subscription not in (None, "None") else None,
        )


@dataclass(frozen=True)
class ReminderDue:
    """R9, R11: the next due-date reminder of an open pay-by-invoice invoice (a durable timer's
    payload; the subscription id lets a cancellation delete it, R34)."""

    invoice_id: uuid.UUID
    kind: ReminderKind
    days: int
    subscription_id: uuid.UUID | None = None

    def payload(self) -> dict[str, Any]:
        return {
            "invoice_id": str(self.invoice_id),
            "reminder": self.kind,
            "days": self.days,
            "subscription_id": str(self.subscription_id) if self.subscription_id else None,
        }

    @classmethod
    def from_payload(cls, p: dict[str, Any]) -> ReminderDue:
        kind = p["reminder"]
        if kind not in ("due_soon", "overdue"):
            raise ValueError(f"unknown reminder {kind!r}")
        subscription = p.get("subscription_id")
        return cls(
            invoice_id=uuid.UUID(p["invoice_id"]),
            kind=kind,
            days=int(p["days"]),
            subscription_id=uuid.UUID(subscription) if subscription else None,
        )


@dataclass(frozen=True)
class InstallmentDue:
    """R20: installment 2 or 3 of a three-year term, at the transaction's rate."""

    origin: str
    installment: int
    billed: Billed
    renewal_id: uuid.UUID | None
    rate: Decimal | None

    def payload(self) -> dict[str, Any]:
        billed = self.billed
        return {
            "origin": self.origin,
            "installment": self.installment,
            "subscription_id": str(billed.subscription_id),
            "order_id": str(billed.order_id) if billed.order_id else None,
            "renewal_id": str(self.renewal_id) if self.renewal_id else None,
            "offering": billed.offering,
            "term": billed.term,
            "seats": billed.seats,
            "channel": billed.channel,
            "payment_method": billed.payment_method,
            "currency": billed.currency,
            "billing_country": billed.billing_country,
            "time_zone": billed.time_zone,
            "rate": str(self.rate),  # R20: one price for the term, at the transaction's rate
            "quoted_unit_price": (
                str(billed.quoted_unit_price) if billed.quoted_unit_price is not None else None
            ),
        }

    @classmethod
    def from_payload(cls, account_id: uuid.UUID, p: dict[str, Any]) -> InstallmentDue:
        """The timer's payload; the payment token is the subscription's when it is issued."""
        billed = Billed(
            account_id=account_id,
            subscription_id=uuid.UUID(p["subscription_id"]),
            order_id=uuid.UUID(p["order_id"]) if p.get("order_id") else None,
            offering=p["offering"],
            term=p["term"],
            seats=p["seats"],
            channel=p["channel"],
            payment_method=p["payment_method"],
            payment_token=None,
            currency=p["currency"],
            billing_country=p["billing_country"],
            time_zone=p["time_zone"],
            quoted_unit_price=(
                Decimal(p["quoted_unit_price"]) if p.get("quoted_unit_price") else None
            ),
        )
        return cls(
            origin=p["origin"],
            installment=int(p["installment"]),
            billed=billed,
            renewal_id=uuid.UUID(p["renewal_id"]) if p.get("renewal_id") else None,
            rate=Decimal(p["rate"]) if p.get("rate") else None,
        )


@dataclass(frozen=True)
class BankTransfer:
    amount: Decimal
    reference: str
    paid_at: datetime | None = None
