"""Lifecycle's HTTP requests and answers.

Instants read as ``datetime.isoformat()`` gives them (``+00:00``, not ``Z``): the answers stay
what clients have always read.
"""

from __future__ import annotations

import uuid
from datetime import date

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.contracts import Channel, PaymentMethod, Stage, Term
from shared.schemas import Instant, Text

from . import domain
from .repository import TestClock


class SubscriptionProduct(BaseModel):
    """R8: what an admin who is not the buyer sees: the product view."""

    id: uuid.UUID
    account_id: uuid.UUID
    offering: str = Field(examples=["autocad"])
    seats: int
    stage: Stage
    trial: bool
    entitlements: dict[str, str] = Field(
        description="R35: what the stage still allows, by capability",
        examples=[{"product_access": "full", "product_support": "full"}],
    )

    @classmethod
    def of(cls, sub: domain.Subscription) -> SubscriptionProduct:
        return cls(
            id=sub.id,
            account_id=sub.account_id,
            offering=sub.offering,
            seats=sub.seats,
            stage=sub.stage,
            trial=sub.trial,
            entitlements=domain.entitlements(sub.stage),
        )


class PendingChanges(BaseModel):
    term: Term | None = Field(description="R28: applied at the next renewal")
    offering: str | None = Field(description="R29: applied at the renewal date")


class SubscriptionFull(SubscriptionProduct):
    """R8: what the buyer (and support) sees: the product view, term, dates and renewal."""

    order_id: uuid.UUID
    term: Term
    time_zone: str = Field(examples=["Europe/Oslo"])
    auto_renew: bool
    payment_method: PaymentMethod
    channel: Channel
    anniversary: date
    starts_at: Instant
    expires_at: Instant
    renews_at: Instant
    renewal_window_opens_at: Instant
    stage_changed_at: Instant | None
    stage_reason: str | None
    next_stage_at: Instant | None
    pending_changes: PendingChanges

    @classmethod
    def of(cls, sub: domain.Subscription) -> SubscriptionFull:
        return cls(
            **SubscriptionProduct.of(sub).model_dump(),
            order_id=sub.order_id,
            term=sub.term,
            time_zone=sub.time_zone,
            auto_renew=sub.auto_renew,
            payment_method=sub.payment_method,
            channel=sub.channel,
            anniversary=sub.anniversary,
            starts_at=sub.starts_at,
            expires_at=sub.expires_at,
            renews_at=sub.renews_at,
            renewal_window_opens_at=domain.renewal_window_opens_at(sub.renews_at, sub.time_zone),
            stage_changed_at=sub.stage_changed_at,
            stage_reason=sub.stage_reason,
            next_stage_at=sub.next_stage_at,
            pending_changes=PendingChanges(term=sub.pending_term, offering=sub.pending_offering),
        )


SubscriptionView = SubscriptionFull | SubscriptionProduct


def view_for(roles: set[str], sub: domain.Subscription) -> SubscriptionView:
    """R8: the buyer's view or the product view."""
    if domain.sees_renewal_data(roles):
        return SubscriptionFull.of(sub)
    return SubscriptionProduct.of(sub)


class SubscriptionList(BaseModel):
    items: list[SubscriptionView]


# --- test clocks ------------------------------------------------------------------------------


class NewClock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frozen_time: AwareDatetime
    name: Text = Field("test clock", min_length=1, max_length=200)


class Advance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: AwareDatetime


class TestClockView(BaseModel):
    """A test clock: ``advancing`` until every service has settled at ``target``, then
    ``ready``."""

    __test__ = False  # not a pytest test class

    id: uuid.UUID
    name: str
    now: Instant
    target: Instant
    status: str = Field(examples=["ready"])
    step: int
    created_at: Instant

    @classmethod
    def of(cls, clock: TestClock) -> TestClockView:
        return cls(
            id=clock.id,
            name=clock.name,
            now=clock.now,
            target=clock.target,
            status=clock.status,
            step=clock.step,
            created_at=clock.created_at,
        )
