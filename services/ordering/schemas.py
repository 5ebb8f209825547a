"""Ordering's HTTP shapes: request bodies (the use cases' commands) and the answers.

Answers are serialised as before this module existed (``shared.runtime.as_json`` of the model's
python dump): uuids, dates and datetimes as ISO strings, amounts as JSON numbers.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StrictInt,
    field_validator,
    model_validator,
)

from shared.contracts import BillingIdentity, Language, OrderPrice, PaymentMethod, Person, Term
from shared.schemas import Name, Text, refuse_control_characters
from shared.time.calendar import local_date

from .domain import MAX_SEATS

# --- request bodies ---------------------------------------------------------------------------


Email = Annotated[EmailStr, Field(max_length=254), AfterValidator(refuse_control_characters)]
Seats = Annotated[StrictInt, Field(gt=0, le=MAX_SEATS)]
OfferingCode = Annotated[Text, Field(min_length=1, max_length=64)]
PaymentToken = Annotated[str, Field(pattern=r"^tok_[A-Za-z0-9_]{1,60}$")]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NewUser(Strict):
    email: Email
    name: Name
    language: Language | None = None


ShortText = Annotated[Text, Field(min_length=1, max_length=40)]


class BillingDetails(Strict):
    """The billing address, organisation number and VAT id (issue 15), validated per country:
    a Norwegian organisation number is 9 digits with a MOD11 check digit, a Norwegian VAT id is
    "NO" + that number + "MVA", an EU VAT id has its country's format."""

    address_lines: list[Name] = Field(min_length=1, max_length=3, examples=[["Storgata 1"]])
    postcode: ShortText = Field(examples=["0155"])
    city: Name = Field(examples=["Oslo"])
    country: str = Field(pattern=r"^[A-Z]{2}$", description="The account's billing country")
    organisation_number: ShortText | None = Field(None, examples=["923609016"])
    vat_id: ShortText | None = Field(None, examples=["NO923609016MVA"])

    def identity(self) -> BillingIdentity:
        return BillingIdentity.model_validate(self.model_dump())


class OpenAccount(Strict):
    name: Name
    country: str = Field(pattern=r"^[A-Z]{2}$", description="ISO 3166 alpha-2 billing country")
    currency: str = Field(pattern=r"^[A-Z]{3}$", description="ISO 4217 currency")
    language: Language = "en"
    time_zone: Text = Field(max_length=64, description="IANA time zone, e.g. Europe/Oslo")
    tax_exempt_reason: Name | None = None
    buyer: NewUser
    test_clock_id: uuid.UUID | None = Field(
        None, description="Operators only, when test clocks are enabled: the account follows it"
    )
    billing_details: BillingDetails | None = None


class UserRef(Strict):
    user_id: uuid.UUID


class PlaceOrder(Strict):
    offering: OfferingCode
    term: Term
    seats: Seats
    payment_method: PaymentMethod
    auto_renew: StrictBool = True
    trial: StrictBool = Field(False, description="R17: start a trial, converted in place later")
    payment_token: PaymentToken | None = None


class IssueQuote(Strict):
    offering: OfferingCode
    term: Term
    seats: Seats
    valid_until: date | None = Field(None, description="[ours] default 30 days, at most 90")
    renews_subscription_id: uuid.UUID | None = Field(
        None,
        description="R27: quote the renewal of this subscription of the account (same product),"
        " renewed on its anniversary; replaces the subscription's open renewal quote",
    )


class AcceptQuote(Strict):
    payment_method: PaymentMethod
    auto_renew: StrictBool = Field(
        True, description="A new subscription's; a renewal quote leaves auto-renew as it is (R24)"
    )
    payment_token: PaymentToken | None = None


class ConvertTrial(Strict):
    term: Term | None = None
    seats: Seats | None = None
    payment_method: PaymentMethod
    payment_token: PaymentToken | None = None


class SetAutoRenew(Strict):
    auto_renew: StrictBool


class ChangeRenewalPaymentMethod(Strict):
    """R14: how the subscription renews: ``invoice``, or a saved card/PayPal method (invoicing's
    ``/v1/accounts/{id}/payment-methods``) by its id."""

    payment_method: PaymentMethod
    payment_method_id: uuid.UUID | None = Field(
        None, description="the saved card or PayPal method; required unless invoice"
    )


class ChangeTerm(Strict):
    new_term: Term | None = Field(description="null withdraws a pending change (R28)")


class SwitchProduct(Strict):
    new_offering: OfferingCode | None = Field(description="null withdraws a pending switch (R29)")


class AddSeats(Strict):
    seats: Seats
    payment_token: PaymentToken | None = None


class RequestRenewal(Strict):
    payment_method: PaymentMethod | None = None
    payment_token: PaymentToken | None = None


class RequestRefund(Strict):
    reason: Name


# --- answers ------------------------------------------------------------------------------------


class Answer(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class AccountFields(Answer):
    id: uuid.UUID
    name: str
    country: str
    currency: str
    language: Language
    time_zone: str
    tax_exempt_reason: str | None
    test_clock_id: uuid.UUID | None
    opened_at: datetime
    billing_details: BillingIdentity | None = None


class NewAccount(AccountFields):
    """The new account and its buyer (R1)."""

    buyer: Person
    roles: list[str] = Field(examples=[["buyer", "primary_admin"]])


class OpenedAccount(NewAccount):
    """The new account, its buyer (R1) and the buyer's bearer token."""

    token: str | None = Field(
        None,
        description="A bearer token for the buyer; only in the first answer, never in a replay",
    )


class Member(Answer):
    account_id: uuid.UUID
    user_id: uuid.UUID
    email: str
    name: str
    language: Language
    roles: list[str]


class AccountUser(Answer):
    id: uuid.UUID
    email: str
    name: str
    language: Language


class AccountView(AccountFields):
    """The account, who holds which role and its users."""

    prepay_only: bool = Field(description="R34: later orders are paid by card or PayPal")
    people: list[Member]
    users: list[AccountUser]


class Order(Answer):
    id: uuid.UUID
    order_number: str
    account_id: uuid.UUID
    placed_by: uuid.UUID
    subscription_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    channel: Literal["direct", "partner"]
    auto_renew: bool
    placed_at: datetime
    kind: Literal["purchase", "trial", "conversion", "seats", "renewal"]
    quote_id: uuid.UUID | None
    price: OrderPrice | None = Field(
        None, description="R18-R20: what the order costs, as invoiced (null: a trial)"
    )
    renews_at: datetime | None = Field(None, description="R23: the first term's renewal instant")
    expires_at: datetime | None = Field(None, description="R23: the second before it")
    time_zone: str | None = None

    @field_validator("price", mode="before")
    @classmethod
    def _stored_price(cls, value: object) -> object:
        return OrderPrice.model_validate_json(value) if isinstance(value, str) else value

    renewal_date: date | None = Field(
        None, description="R23: auto-renew on: the renewal day in the account's time zone"
    )
    expiry_date: date | None = Field(
        None, description="R23: auto-renew off: the last day of access in the account's time zone"
    )

    @model_validator(mode="after")
    def _local_dates(self) -> Order:
        if self.time_zone is not None and self.renews_at and self.expires_at:
            if self.auto_renew:
                self.renewal_date = local_date(self.renews_at, self.time_zone)
            else:
                self.expiry_date = local_date(self.expires_at, self.time_zone)
        return self


class OrderPreview(Answer):
    """R18-R20, R23: what an order would cost and when its term would end, if placed now."""

    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    auto_renew: bool
    trial: bool
    priced_at: datetime
    price: OrderPrice | None = Field(None, description="null: a trial costs nothing (R17)")
    renews_at: datetime | None = None
    expires_at: datetime | None = None
    time_zone: str
    renewal_date: date | None = Field(None, description="auto-renew on: the renewal day")
    expiry_date: date | None = Field(None, description="auto-renew off: the last day of access")


class SeatsOrder(Order):
    """R30: the order for the added seats, co-termed with the subscription."""

    total_seats: int
    coterm_until: datetime


class Orders(BaseModel):
    items: list[Order]


class Quote(Answer):
    id: uuid.UUID
    quote_number: str
    account_id: uuid.UUID
    partner_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    currency: str
    net_amount: Decimal
    usd_value: Decimal
    valid_until: date
    issued_at: datetime
    renews_subscription_id: uuid.UUID | None = Field(
        description="R27: the subscription this quote renews (None: a new subscription)"
    )
    renews_at: datetime | None = Field(description="R27: the renewal date it renews")
    order_id: uuid.UUID | None
    accepted_at: datetime | None
    superseded_by: uuid.UUID | None = Field(
        description="R27 [ours]: the later renewal quote that replaced this one"
    )
    superseded_at: datetime | None


class Subscription(Answer):
    id: uuid.UUID
    account_id: uuid.UUID
    offering: str
    term: Term
    seats: int
    payment_method: PaymentMethod
    channel: Literal["direct", "partner"]
    auto_renew: bool
    trial: bool
    stage: Literal["pending", "active", "expired", "suspended", "cancelled"]
    time_zone: str
    starts_at: datetime | None
    expires_at: datetime | None
    renews_at: datetime | None
    purchased_at: datetime
    purchase_kind: Literal["order", "renewal"]
    pending_term: Term | None
    pending_offering: str | None
    refunded_at: datetime | None
    lapsed_unpaid: bool
    renewal_charge_failed: bool = Field(
        description="R37: the renewal charge was declined; its invoice is open"
    )


class Subscriptions(BaseModel):
    items: list[Subscription]


class Renewal(Answer):
    """R26, R27: the renewal request, with what it renews as (pending changes applied)."""

    id: uuid.UUID
    subscription_id: uuid.UUID
    kind: Literal["manual", "late"]
    renews_at: datetime
    payment_method: PaymentMethod
    requested_by: uuid.UUID
    requested_at: datetime
    offering: str
    term: Term
    seats: int


class Refund(Answer):
    id: uuid.UUID
    subscription_id: uuid.UUID
    purchase_kind: Literal["order", "renewal"]
    purchased_at: datetime
    reason: str
    approved_by: uuid.UUID
    approved_at: datetime


# --- sign-in links for the portal (issue 16) --------------------------------------------------


class SignInLinkRequest(Strict):
    email: Email


class SignInLinkAccepted(BaseModel):
    """The same answer whether or not the address is known (nothing to learn from it)."""

    detail: str = (
        "If the address belongs to a user of an account, a sign-in link is on its way to it."
    )


class SignInLinkRedemption(Strict):
    secret: str = Field(
        min_length=20, max_length=128, pattern=r"^[A-Za-z0-9_-]+$", description="From the link"
    )


class SignedIn(BaseModel):
    """Who the link signs in, and a bearer token for that user on that account."""

    account_id: uuid.UUID
    account_name: str
    time_zone: str
    user_id: uuid.UUID
    email: str
    name: str
    language: Language
    token: str
