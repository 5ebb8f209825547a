"""The typed commands invoicing's use cases take (besides the events' own contracts)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from shared.contracts import Channel, PaymentMethod, Term


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


@dataclass(frozen=True)
class RetryDue:
    """R37: the next charge attempt of a failed renewal invoice."""

    invoice_id: uuid.UUID
    attempt: int
    first_failed_at: datetime


@dataclass(frozen=True)
class InstallmentDue:
    """R20: installment 2 or 3 of a three-year term, at the transaction's rate."""

    origin: str
    installment: int
    billed: Billed
    renewal_id: uuid.UUID | None
    rate: Decimal | None


@dataclass(frozen=True)
class BankTransfer:
    amount: Decimal
    reference: str
    paid_at: datetime | None = None
