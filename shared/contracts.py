"""The event envelope and the payload of every published event (DESIGN.md, "Messages").

Rules of the contract:
- Every Kafka message is one JSON ``Envelope``; ``payload`` is validated against the model
  registered for ``(event_type, schema_version)`` in ``CATALOGUE``.
- A published field never changes meaning: a new meaning is a new ``schema_version``.
- Money travels as a decimal string with its ISO 4217 currency; instants as ISO 8601 with offset.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
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


Stage = Literal["active", "expired", "suspended", "cancelled"]
InvoicePurpose = Literal["order", "renewal", "installment", "co_term"]

CATALOGUE: dict[tuple[str, int], type[Contract]] = {}
PRODUCER_OF: dict[str, str] = {}

_C = TypeVar("_C", bound=type[Contract])


def event(producer: str, version: int = 1) -> Callable[[_C], _C]:
    """Register a payload model as ``(event_type, version)``, published by ``producer``."""

    def register(model: _C) -> _C:
        CATALOGUE[(model.__name__, version)] = model
        PRODUCER_OF[model.__name__] = producer
        return model

    return register


# --- ordering -------------------------------------------------------------------------------


class Person(Contract):
    user_id: uuid.UUID
    email: EmailStr
    name: str
    language: Language


@event("ordering")
class AccountOpened(Contract):
    name: str
    country: str = Field(min_length=2, max_length=2)
    currency: str = Field(min_length=3, max_length=3)
    language: Language
    time_zone: str
    tax_exempt_reason: str | None = None
    test_clock_id: uuid.UUID | None = None


@event("ordering")
class RolesChanged(Contract):
    """A full snapshot of who holds which role on the account (never a delta)."""

    buyer: Person
    primary_admin: Person
    secondary_admins: list[Person] = []
    payers: list[Person] = []


@event("ordering")
class QuoteIssued(Contract):
    """R16: a partner's quote; the customer accepts it and pays the vendor directly."""

    quote_id: uuid.UUID
    quote_number: str
    partner_id: uuid.UUID
    offering: str
    term: Term
    seats: int = Field(gt=0)
    currency: str
    net_amount: Decimal
    valid_until: date
    # R27 [ours, issue 11]: a renewal quote renews this subscription of the account on its
    # anniversary; it replaces the renewal quote named in ``replaces_quote_id`` (which can no
    # longer be accepted). Added to v1 (None: a quote for a new subscription).
    renews_subscription_id: uuid.UUID | None = None
    replaces_quote_id: uuid.UUID | None = None


class PricedLine(Contract):
    """R16: a line as priced to the customer, before VAT, in the order's currency."""

    offering: str
    term: Term
    quantity: int = Field(gt=0)
    unit_price: Decimal
    net_amount: Decimal  # unit_price x quantity, exactly


@event("ordering")
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
    quote_id: uuid.UUID | None = None
    trial: bool = False  # R17: a trial is activated now and converted in place later
    payment_token: str | None = None  # the gateway's token for card/PayPal (sandbox: tok_*)
    # R16: an accepted quote's lines as the customer accepted them; invoicing bills exactly these
    # (adding VAT), never re-prices them. Empty: a direct order, priced by invoicing (R19).
    # Added to v1 (no published field changed meaning); deploy consumers before ordering.
    priced_lines: list[PricedLine] = []
    # R18-R20 (issue 11, preview): what ordering priced and showed the buyer (None: a trial, or
    # an order placed before ordering priced direct orders). Since then every paid order carries
    # its priced line too, and invoicing bills it as it is. R23: the term's dates as the shared
    # calendar computes them (lifecycle dates the term with the same function).
    price: OrderPrice | None = None
    renews_at: AwareDatetime | None = None
    expires_at: AwareDatetime | None = None


@event("ordering")
class AutoRenewChanged(Contract):
    """R24: auto-renew off is how a subscription is cancelled (full access until expiry)."""

    auto_renew: bool
    changed_at: AwareDatetime


@event("ordering")
class TermChangeScheduled(Contract):
    """R28: takes effect at the next renewal; ``new_term`` None withdraws a pending change."""

    new_term: Term | None
    effective_at: AwareDatetime


@event("ordering")
class ProductSwitchScheduled(Contract):
    """R29: takes effect at the renewal date; ``new_offering`` None withdraws it."""

    new_offering: str | None
    effective_at: AwareDatetime


@event("ordering")
class SeatsAdded(Contract):
    """R30: licences co-termed with the subscription, priced pro rata by days."""

    order_id: uuid.UUID
    order_number: str
    offering: str
    term: Term
    seats_added: int = Field(gt=0)
    total_seats: int = Field(gt=0)
    prorate_from: AwareDatetime
    coterm_until: AwareDatetime  # the subscription's current renewal instant
    payment_method: PaymentMethod
    billing_country: str
    currency: str
    time_zone: str
    payment_token: str | None = None  # the gateway's token for card/PayPal (sandbox: tok_*)


@event("ordering")
class RenewalRequested(Contract):
    """R27: a manual renewal, or a late one inside the window after the renewal date."""

    request_id: uuid.UUID
    kind: Literal["manual", "late"]
    offering: str
    term: Term
    seats: int = Field(gt=0)
    payment_method: PaymentMethod
    channel: Channel
    requested_at: AwareDatetime
    payment_token: str | None = None  # the gateway's token for card/PayPal (sandbox: tok_*)
    # R16, R27 [ours, issue 11]: a renewal bought by accepting a partner's renewal quote: its
    # priced lines as accepted, billed as they are (lifecycle carries them into RenewalDue).
    # Added to v1 (empty: a renewal priced by invoicing, R19).
    quote_id: uuid.UUID | None = None
    priced_lines: list[PricedLine] = []


@event("ordering")
class TrialConverted(Contract):
    """R17: the same subscription id, now paid."""

    order_id: uuid.UUID
    order_number: str
    term: Term
    seats: int = Field(gt=0)
    payment_method: PaymentMethod
    converted_at: AwareDatetime
    payment_token: str | None = None  # the gateway's token for card/PayPal (sandbox: tok_*)


@event("ordering")
class RefundApproved(Contract):
    """R38: a direct purchase or renewal refunded inside its window; R39: access ends now."""

    refund_id: uuid.UUID
    purchase_kind: Literal["order", "renewal"]
    purchased_at: AwareDatetime
    reason: str
    approved_at: AwareDatetime


@event("ordering")
class RenewalPaymentMethodChanged(Contract):
    """R14 (R2): the buyer chose how the subscription renews (ordering judged it, once).
    ``payment_method_id``: the saved card or PayPal method (invoicing's wallet) it is charged
    with; None for ``invoice``. Invoicing charges with it (an open failed charge at once),
    lifecycle remembers the kind for ``RenewalDue``."""

    payment_method: PaymentMethod
    payment_method_id: uuid.UUID | None = None
    changed_at: AwareDatetime


@event("ordering")
class SignInLinkRequested(Contract):
    """Issue 16: a person asked the portal for a sign-in link; notifications mails ``link`` to
    ``email`` only (whatever roles the person holds). The link is single-use and expires at
    ``expires_at``; ordering keeps only its hash."""

    user_id: uuid.UUID
    email: EmailStr
    name: str
    language: Language
    link: str
    expires_at: AwareDatetime


# --- invoicing ------------------------------------------------------------------------------


class InvoiceLine(Contract):
    description: str
    quantity: int
    unit_price: Decimal
    net_amount: Decimal
    vat_rate: Decimal
    vat_amount: Decimal


@event("invoicing")
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
    purpose: InvoicePurpose = "order"
    installment: int | None = None  # R20: 1, 2 or 3 for three-year installments
    renewal_id: uuid.UUID | None = None  # set when purpose is "renewal"
    payer_emails: list[EmailStr] = []  # R7: at most five
    # Issue 15 [links]: the product billed (offering code), so an invoice mail names it without
    # waiting for OrderPlaced (another topic). Added to v1; None from producers before it.
    offering: str | None = None


@event("invoicing")
class PaymentSucceeded(Contract):
    payment_id: uuid.UUID
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    paid_at: AwareDatetime


@event("invoicing")
class PaymentFailed(Contract):
    invoice_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    reason: str
    failed_at: AwareDatetime
    purpose: InvoicePurpose = "order"
    attempt: int = 1
    next_attempt_at: AwareDatetime | None = None  # R37: retried on days 1, 3, 7 and 14
    offering: str | None = None  # issue 15 [links]: the product billed, as in InvoiceIssued


@event("invoicing")
class InvoicePaid(Contract):
    invoice_id: uuid.UUID
    invoice_number: str
    paid_at: AwareDatetime
    purpose: InvoicePurpose = "order"
    renewal_id: uuid.UUID | None = None


@event("invoicing")
class CreditNoteIssued(Contract):
    credit_note_id: uuid.UUID
    credit_note_number: str
    invoice_id: uuid.UUID
    currency: str
    net_total: Decimal  # amounts credited, as positive numbers
    vat_total: Decimal
    gross_total: Decimal
    issued_at: AwareDatetime


@event("invoicing")
class RefundProcessed(Contract):
    """R39: paid back through the original method; card refunds settle in 5-7 business days."""

    refund_id: uuid.UUID
    credit_note_id: uuid.UUID
    amount: Decimal
    currency: str
    method: PaymentMethod
    expected_settlement_date: date


@event("invoicing")
class PaymentMethodAdded(Contract):
    """R2: a card or PayPal method saved by the buyer (the gateway's token stays in invoicing;
    the label is what the gateway shows: brand and last four, or the PayPal e-mail)."""

    payment_method_id: uuid.UUID
    kind: Literal["card", "paypal"]
    label: str
    is_default: bool
    added_at: AwareDatetime


@event("invoicing")
class PaymentMethodRemoved(Contract):
    """R2: a saved method removed by the buyer; nothing renews with it any more."""

    payment_method_id: uuid.UUID
    removed_at: AwareDatetime


# --- lifecycle ------------------------------------------------------------------------------


@event("lifecycle")
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
    trial: bool = False


@event("lifecycle")
class RenewalWindowOpened(Contract):
    """R26: a renewal can be bought from 90 days before the renewal date."""

    renews_at: AwareDatetime
    expires_at: AwareDatetime
    auto_renew: bool


@event("lifecycle")
class RenewalReminderDue(Contract):
    """R26: reminders 45, 30 and 4 days before expiry when auto-renew is off."""

    days_before: int
    expires_at: AwareDatetime


@event("lifecycle")
class RenewalDue(Contract):
    """R25: the renewal date of an auto-renewing subscription; invoicing bills it."""

    renewal_id: uuid.UUID
    offering: str  # pending product switch applied (R29)
    term: Term  # pending term change applied (R28)
    seats: int
    payment_method: PaymentMethod
    channel: Channel
    time_zone: str
    period_starts_at: AwareDatetime
    period_ends_at: AwareDatetime  # the new expiry instant
    # R16, R27: the priced lines of the accepted renewal quote (``RenewalRequested``) that asked
    # for this renewal; invoicing bills them as they are. Added to v1 (empty: priced by invoicing).
    quote_id: uuid.UUID | None = None
    priced_lines: list[PricedLine] = []


@event("lifecycle")
class SubscriptionRenewed(Contract):
    renewal_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    starts_at: AwareDatetime
    expires_at: AwareDatetime
    renews_at: AwareDatetime


@event("lifecycle")
class StageChanged(Contract):
    """R31-R36: a step of the expiry process, with what the new stage still allows (R35)."""

    from_stage: Stage
    to_stage: Stage
    reason: str
    entitlements: dict[str, str]
    effective_at: AwareDatetime
    next_stage_at: AwareDatetime | None = None


@event("lifecycle")
class SubscriptionReactivated(Contract):
    """R32, R33: payment or renewal during Expired or Suspended returns it to Active."""

    from_stage: Stage
    reason: str
    expires_at: AwareDatetime
    renews_at: AwareDatetime


# --- notifications --------------------------------------------------------------------------


@event("notifications")
class EmailSent(Contract):
    delivery_id: uuid.UUID
    source_event_id: uuid.UUID
    source_event_type: str
    template: str
    recipient: EmailStr
    roles: list[str]
    subject: str


@event("notifications")
class EmailFailed(Contract):
    delivery_id: uuid.UUID
    source_event_id: uuid.UUID
    recipient: EmailStr
    reason: str
    permanent: bool


# --- added in round 5 (preview) ---------------------------------------------------------------


class OrderPrice(Contract):
    """R18-R20: an order's price as shown before and when it is placed, in the order's currency.
    ``lines`` and the totals are the whole term's; ``first_invoice_*`` what the invoice issued
    for the order bills (R20: installment 1 of ``installments``)."""

    currency: str
    exchange_rate: Decimal | None = None  # R19: the applied rate used (None: a quote's price)
    lines: list[InvoiceLine]
    vat_rate: Decimal
    tax_exempt_reason: str | None = None
    net_total: Decimal
    vat_total: Decimal
    gross_total: Decimal
    installments: int = 1
    first_invoice_net: Decimal
    first_invoice_vat: Decimal
    first_invoice_gross: Decimal


OrderPlaced.model_rebuild()


@event("invoicing")
class ExchangeRateApplied(Contract):
    """R19: an applied rate invoicing computed (keyed by the nil account: it is everyone's).
    Ordering keeps a projection of them to price the orders it places."""

    currency: str
    channel: Channel
    effective_from: AwareDatetime
    rate: Decimal


def payload_model(event_type: str, schema_version: int) -> type[Contract]:
    try:
        return CATALOGUE[(event_type, schema_version)]
    except KeyError:
        raise UnknownEventType(f"no contract for {event_type} v{schema_version}") from None


class UnknownEventType(ValueError):
    pass


@dataclass(frozen=True)
class Cause:
    """What caused an event when the causing envelope is not at hand (only its ids were kept,
    e.g. a mail sent long after the event that asked for it)."""

    event_id: uuid.UUID
    correlation_id: uuid.UUID


Causation = Envelope | Cause


def new_envelope(
    *,
    event: Contract,
    producer: str,
    account_id: uuid.UUID,
    occurred_at: datetime,
    recorded_at: datetime,
    subscription_id: uuid.UUID | None = None,
    correlation_id: uuid.UUID | None = None,
    causation: Causation | None = None,
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


# --- invoicing: invoice-due reminders (R9, R11; issue 11) ----------------------------------------


@event("invoicing")
class InvoiceDueSoon(Contract):
    """R9, R11, R21: an open pay-by-invoice invoice falls due in ``days_before_due`` days; the
    buyer and its payers are told (services/invoicing/README.md says which days)."""

    invoice_id: uuid.UUID
    invoice_number: str
    currency: str
    gross_total: Decimal  # what is to be paid
    due_date: date  # the last local day to pay, in the invoice's time zone
    days_before_due: int
    issued_at: AwareDatetime
    purpose: InvoicePurpose = "order"
    installment: int | None = None
    payer_emails: list[EmailStr] = []  # R7, R11: the payers printed on the invoice
    offering: str | None = None  # issue 15 [links]: the product billed, as in InvoiceIssued


@event("invoicing")
class InvoiceOverdue(Contract):
    """R9, R11, R31: an open pay-by-invoice invoice was not paid by its due date and is
    ``days_overdue`` days late; the buyer and its payers are told."""

    invoice_id: uuid.UUID
    invoice_number: str
    currency: str
    gross_total: Decimal
    due_date: date
    days_overdue: int
    issued_at: AwareDatetime
    purpose: InvoicePurpose = "order"
    installment: int | None = None
    payer_emails: list[EmailStr] = []
    offering: str | None = None  # issue 15 [links]: the product billed, as in InvoiceIssued


# --- ordering: the account's billing identity (issue 15) ---------------------------------------


class BillingIdentity(Contract):
    """Who the buyer is on an invoice (bokføringsforskriften § 5-1-1): the billing address and,
    for a business, its organisation number and VAT id (validated by ordering per country)."""

    address_lines: list[str] = Field(min_length=1, max_length=3)
    postcode: str
    city: str
    country: str = Field(min_length=2, max_length=2)
    organisation_number: str | None = None
    vat_id: str | None = None


@event("ordering")
class BillingDetailsChanged(Contract):
    """The account's billing identity, whole (never a delta): at sign-up when given, and on
    every change by the buyer. Invoicing prints it on documents issued from then on."""

    billing: BillingIdentity
