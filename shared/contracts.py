"""The event envelope and the payload of every published event (DESIGN.md, "Messages").

Rules of the contract:
- Every Kafka message is one JSON ``Envelope``; ``payload`` is validated against the model
  registered for ``(event_type, schema_version)`` in ``CATALOGUE``.
- A published field never changes meaning: a new meaning is a new ``schema_version``.
- Money travels as a decimal string with its ISO 4217 currency; instants as ISO 8601 with offset.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, EmailStr, Field

Term = Literal["monthly", "annual", "three_year"]
PaymentMethod = Literal["card", "paypal", "invoice"]
Channel = Literal["direct", "partner"]
Language = Literal["en", "nb"]


class Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


ContractT = TypeVar("ContractT", bound=BaseModel)


class Envelope(Contract):
    event_id: uuid.UUID
    event_type: str
    schema_version: int = 1
    occurred_at: AwareDatetime
    recorded_at: AwareDatetime
    producer: str
    account_id: uuid.UUID
    subscription_id: uuid.UUID | None = None
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None
    payload: dict[str, Any]

    def payload_as(self, model: type[ContractT]) -> ContractT:
        return model.model_validate(self.payload)


# --- ordering -------------------------------------------------------------------------------


class Person(Contract):
    user_id: uuid.UUID
    email: EmailStr
    name: str
    language: Language


class AccountOpened(Contract):
    name: str
    country: str = Field(min_length=2, max_length=2)
    currency: str = Field(min_length=3, max_length=3)
    language: Language
    time_zone: str
    tax_exempt_reason: str | None = None
    test_clock_id: uuid.UUID | None = None


class RolesChanged(Contract):
    """A full snapshot of who holds which role on the account (never a delta)."""

    buyer: Person
    primary_admin: Person
    secondary_admins: list[Person] = []
    payers: list[Person] = []


class OrderPlaced(Contract):
    order_id: uuid.UUID
    order_number: str
    subscription_id: uuid.UUID
    offering: str
    term: Term
    seats: int = Field(gt=0)
    payment_method: PaymentMethod
    channel: Channel
    billing_country: str
    currency: str
    time_zone: str
    placed_at: AwareDatetime
    auto_renew: bool = True
    buyer_email: EmailStr


# --- invoicing ------------------------------------------------------------------------------


class InvoiceLine(Contract):
    description: str
    quantity: int
    unit_price: Decimal
    net_amount: Decimal
    vat_rate: Decimal
    vat_amount: Decimal


class InvoiceIssued(Contract):
    invoice_id: uuid.UUID
    invoice_number: str
    order_id: uuid.UUID | None
    currency: str
    net_total: Decimal
    vat_total: Decimal
    gross_total: Decimal
    lines: list[InvoiceLine]
    payment_method: PaymentMethod
    issued_at: AwareDatetime
    due_date: date
    tax_exempt_reason: str | None = None


class PaymentSucceeded(Contract):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    paid_at: AwareDatetime


class PaymentFailed(Contract):
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    reason: str
    failed_at: AwareDatetime


class InvoicePaid(Contract):
    invoice_id: uuid.UUID
    invoice_number: str
    paid_at: AwareDatetime


# --- lifecycle ------------------------------------------------------------------------------


class SubscriptionActivated(Contract):
    order_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    time_zone: str
    starts_at: AwareDatetime
    expires_at: AwareDatetime
    renews_at: AwareDatetime
    auto_renew: bool
    stage: Literal["active"] = "active"


# --- notifications --------------------------------------------------------------------------


class EmailSent(Contract):
    delivery_id: uuid.UUID
    source_event_id: uuid.UUID
    source_event_type: str
    template: str
    recipient: EmailStr
    roles: list[str]
    subject: str


class EmailFailed(Contract):
    delivery_id: uuid.UUID
    source_event_id: uuid.UUID
    recipient: EmailStr
    reason: str
    permanent: bool


CATALOGUE: dict[tuple[str, int], type[Contract]] = {
    ("AccountOpened", 1): AccountOpened,
    ("RolesChanged", 1): RolesChanged,
    ("OrderPlaced", 1): OrderPlaced,
    ("InvoiceIssued", 1): InvoiceIssued,
    ("PaymentSucceeded", 1): PaymentSucceeded,
    ("PaymentFailed", 1): PaymentFailed,
    ("InvoicePaid", 1): InvoicePaid,
    ("SubscriptionActivated", 1): SubscriptionActivated,
    ("EmailSent", 1): EmailSent,
    ("EmailFailed", 1): EmailFailed,
}


PRODUCER_OF: dict[str, str] = {
    "AccountOpened": "ordering",
    "RolesChanged": "ordering",
    "OrderPlaced": "ordering",
    "InvoiceIssued": "invoicing",
    "PaymentSucceeded": "invoicing",
    "PaymentFailed": "invoicing",
    "InvoicePaid": "invoicing",
    "SubscriptionActivated": "lifecycle",
    "EmailSent": "notifications",
    "EmailFailed": "notifications",
}


def payload_model(event_type: str, schema_version: int) -> type[Contract]:
    try:
        return CATALOGUE[(event_type, schema_version)]
    except KeyError:
        raise UnknownEventType(f"no contract for {event_type} v{schema_version}") from None


class UnknownEventType(ValueError):
    pass


def new_envelope(
    *,
    event: Contract,
    producer: str,
    account_id: uuid.UUID,
    occurred_at: datetime,
    recorded_at: datetime,
    subscription_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
    causation: Envelope | None = None,
) -> Envelope:
    """Wrap a payload; a caused event inherits its cause's correlation id."""
    event_type = type(event).__name__
    if (event_type, 1) not in CATALOGUE:
        raise UnknownEventType(event_type)
    event_id = uuid.uuid4()
    if causation is not None:
        correlation_id = causation.correlation_id
    return Envelope(
        event_id=event_id,
        event_type=event_type,
        schema_version=1,
        occurred_at=occurred_at,
        recorded_at=recorded_at,
        producer=producer,
        account_id=account_id,
        subscription_id=subscription_id,
        correlation_id=correlation_id or event_id,
        causation_id=causation.event_id if causation else None,
        payload=event.model_dump(mode="json"),
    )
