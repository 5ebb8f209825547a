"""Changes and refunds on ordering's projection of lifecycle's events, fed through real Kafka
(R24, R27-R30, R34, R38)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.contracts import (
    RefundApproved,
    SeatsAdded,
    StageChanged,
    SubscriptionRenewed,
    TermChangeScheduled,
)
from tests.integration.ordering_helpers import Ordering, running_ordering, user
from tests.support import Backing

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


@pytest.fixture(autouse=True)
def real_time(ordering: Ordering) -> None:
    ordering.clock.at = None


async def active(
    ordering: Ordering, renews_in: timedelta, **order_fields: Any
) -> tuple[uuid.UUID, uuid.UUID, str, datetime]:
    """An account with one active subscription renewing ``renews_in`` from now (lifecycle's
    SubscriptionActivated goes through Kafka). Returns (account, buyer, subscription, renews)."""
    account, buyer, _ = await ordering.open_account()
    order = await ordering.order(account, buyer, **order_fields)
    renews_at = (ordering.clock.now() + renews_in).replace(microsecond=0)
    await ordering.activate(account, order, renews_at, term=order["term"])
    return account, buyer, order["subscription_id"], renews_at


async def test_r24_turning_auto_renew_off_publishes_the_change(ordering: Ordering) -> None:
    account, buyer, subscription, _ = await active(ordering, timedelta(days=200))
    path = f"/v1/subscriptions/{subscription}/auto-renew"
    off = await ordering.call("PUT", path, user(buyer), {"auto_renew": False})
    assert off.status_code == 200 and off.json()["auto_renew"] is False
    [event] = await ordering.outbox("AutoRenewChanged", account)
    assert event["payload"]["auto_renew"] is False and event["subscription_id"] == subscription


async def test_r24_auto_renew_turned_off_before_activation_arrives_stays_off(
    ordering: Ordering,
) -> None:
    """Ordering owns auto-renew: lifecycle's late SubscriptionActivated (auto_renew on, as
    ordered) does not undo the buyer's change made while it was on its way."""
    account, buyer, _ = await ordering.open_account()
    order = await ordering.order(account, buyer)
    path = f"/v1/subscriptions/{order['subscription_id']}/auto-renew"
    off = await ordering.call("PUT", path, user(buyer), {"auto_renew": False})
    assert off.status_code == 200 and off.json()["auto_renew"] is False
    renews_at = (ordering.clock.now() + timedelta(days=300)).replace(microsecond=0)
    await ordering.activate(account, order, renews_at)
    row = await ordering.pool.fetchrow(
        "SELECT auto_renew FROM subscriptions WHERE id = $1", uuid.UUID(order["subscription_id"])
    )
    assert row is not None and row["auto_renew"] is False


async def test_r28_term_change_for_the_next_renewal_changeable_until_then(
    ordering: Ordering,
) -> None:
    account, buyer, subscription, renews_at = await active(ordering, timedelta(days=200))
    path = f"/v1/subscriptions/{subscription}/term-change"
    for new_term in ("monthly", "three_year", None):
        changed = await ordering.call("PUT", path, user(buyer), {"new_term": new_term})
        assert changed.status_code == 200, changed.text
        assert changed.json()["pending_term"] == new_term
    events = [
        TermChangeScheduled.model_validate(e["payload"])
        for e in await ordering.outbox("TermChangeScheduled", account)
    ]
    assert [e.new_term for e in events] == ["monthly", "three_year", None]
    assert {e.effective_at for e in events} == {renews_at}
    ordering.clock.at = renews_at + timedelta(hours=1)
    late = await ordering.call("PUT", path, user(buyer), {"new_term": "monthly"})
    assert late.status_code == 422 and late.json()["type"] == PROBLEM + "term-change-too-late"


# Proves R29 (../shared/DOMAIN.md).
async def test_r29_product_switch_only_inside_the_renewal_window(ordering: Ordering) -> None:
    account, buyer, subscription, renews_at = await active(ordering, timedelta(days=120))
    path = f"/v1/subscriptions/{subscription}/product-switch"
    before = await ordering.counts()
    early = await ordering.call("PUT", path, user(buyer), {"new_offering": "revit"})
    assert early.status_code == 422
    assert early.json()["type"] == PROBLEM + "product-switch-outside-window"
    assert await ordering.counts() == before
    ordering.clock.at = renews_at - timedelta(days=89)
    inside = await ordering.call("PUT", path, user(buyer), {"new_offering": "revit"})
    assert inside.status_code == 200, inside.text
    [event] = await ordering.outbox("ProductSwitchScheduled", account)
    assert event["payload"]["new_offering"] == "revit"
    assert datetime.fromisoformat(event["payload"]["effective_at"]) == renews_at


# Proves R29 (../shared/DOMAIN.md).
async def test_r29_no_switch_for_a_subscription_bought_before_2024_09_16_until_renewed(
    ordering: Ordering,
) -> None:
    ordering.clock.at = datetime(2024, 6, 10, 10, 0, tzinfo=UTC)
    account, buyer, _ = await ordering.open_account()
    order = await ordering.order(account, buyer)
    subscription = uuid.UUID(order["subscription_id"])
    renews_at = datetime(2025, 6, 9, 22, 0, tzinfo=UTC)
    await ordering.activate(account, order, renews_at)
    ordering.clock.at = renews_at - timedelta(days=30)
    path = f"/v1/subscriptions/{subscription}/product-switch"
    refused = await ordering.call("PUT", path, user(buyer), {"new_offering": "revit"})
    assert refused.status_code == 422
    assert refused.json()["type"] == PROBLEM + "product-switch-not-eligible"
    # Lifecycle renews it (2025-06-10): a renewal after the cut-off makes it eligible next time.
    next_renewal = datetime(2026, 6, 9, 22, 0, tzinfo=UTC)
    renewed = SubscriptionRenewed(
        renewal_id=uuid.uuid4(),
        offering="autocad",
        term="annual",
        seats=1,
        starts_at=renews_at,
        expires_at=next_renewal - timedelta(seconds=1),
        renews_at=next_renewal,
    )
    await ordering.publish(renewed, account, subscription, renews_at)
    await ordering.wait_projection(subscription, "renews_at", next_renewal)
    ordering.clock.at = next_renewal - timedelta(days=30)
    allowed = await ordering.call("PUT", path, user(buyer), {"new_offering": "revit"})
    assert allowed.status_code == 200, allowed.text


async def test_r30_added_seats_are_co_termed_with_the_subscription(ordering: Ordering) -> None:
    account, buyer, subscription, renews_at = await active(ordering, timedelta(days=200), seats=2)
    added = await ordering.call(
        "POST", f"/v1/subscriptions/{subscription}/seats", user(buyer), {"seats": 3}
    )
    assert added.status_code == 201, added.text
    [event] = await ordering.outbox("SeatsAdded", account)
    seats = SeatsAdded.model_validate(event["payload"])
    assert (seats.seats_added, seats.total_seats, seats.coterm_until) == (3, 5, renews_at)
    assert seats.prorate_from < seats.coterm_until


async def test_r27_manual_renewal_in_the_window_and_late_renewal_after_it(
    ordering: Ordering,
) -> None:
    _account, buyer, subscription, _renews_at = await active(ordering, timedelta(days=60))
    path = f"/v1/subscriptions/{subscription}/renewals"
    manual = await ordering.call("POST", path, user(buyer), {})
    assert manual.status_code == 201 and manual.json()["kind"] == "manual"
    twice = await ordering.call("POST", path, user(buyer), {})
    assert twice.status_code == 409
    # Another subscription, lapsed 44 days ago (annual: 45 days allowed), then 46 days ago.
    account2, buyer2, lapsed, lapsed_at = await active(ordering, timedelta(days=10))
    ordering.clock.at = lapsed_at + timedelta(days=44)
    late_path = f"/v1/subscriptions/{lapsed}/renewals"
    late = await ordering.call("POST", late_path, user(buyer2), {"payment_token": "tok_success"})
    assert late.status_code == 201 and late.json()["kind"] == "late"
    [event] = await ordering.outbox("RenewalRequested", account2)
    assert (event["payload"]["kind"], event["payload"]["payment_token"]) == ("late", "tok_success")
    _account3, buyer3, closed, closed_at = await active(ordering, timedelta(days=10))
    ordering.clock.at = closed_at + timedelta(days=46)
    refused = await ordering.call("POST", f"/v1/subscriptions/{closed}/renewals", user(buyer3), {})
    assert refused.status_code == 422
    assert refused.json()["type"] == PROBLEM + "renewal-window-closed"


async def test_r34_a_cancelled_subscription_refuses_every_change(ordering: Ordering) -> None:
    account, buyer, subscription, _ = await active(ordering, timedelta(days=60))
    cancelled = StageChanged(
        from_stage="suspended",
        to_stage="cancelled",
        reason="not renewed",
        entitlements={"product_access": "none"},
        effective_at=datetime.now(UTC),
    )
    await ordering.publish(cancelled, account, uuid.UUID(subscription), datetime.now(UTC))
    await ordering.wait_projection(uuid.UUID(subscription), "stage", "cancelled")
    before = await ordering.counts()
    base = f"/v1/subscriptions/{subscription}"
    for method, path, body in (
        ("PUT", f"{base}/auto-renew", {"auto_renew": True}),
        ("PUT", f"{base}/term-change", {"new_term": "monthly"}),
        ("PUT", f"{base}/product-switch", {"new_offering": "revit"}),
        ("POST", f"{base}/seats", {"seats": 1}),
        ("POST", f"{base}/renewals", {}),
        ("POST", f"{base}/refunds", {"reason": "changed my mind"}),
    ):
        refused = await ordering.call(method, path, user(buyer), body)
        assert refused.status_code == 409, (path, refused.text)
        assert refused.json()["type"] == PROBLEM + "subscription-cancelled"
    assert await ordering.counts() == before


async def test_r34_cancelled_on_an_unpaid_invoice_the_account_prepays_from_then_on(
    ordering: Ordering,
) -> None:
    """R34: the subscription lapsed on an unpaid invoice (lifecycle's reason invoice_unpaid) and
    ended Cancelled: later orders of the account are paid by card or PayPal, never by invoice."""
    account, buyer, _ = await ordering.open_account()
    quote = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/quotes",
        ("partner", uuid.uuid4()),
        {"offering": "autocad", "term": "annual", "seats": 1},
    )
    accepted = await ordering.call(
        "POST",
        f"/v1/quotes/{quote.json()['id']}/acceptance",
        user(buyer),
        {"payment_method": "invoice"},
    )
    assert accepted.status_code == 201, accepted.text
    order = accepted.json()
    subscription = uuid.UUID(order["subscription_id"])
    renews_at = (ordering.clock.now() + timedelta(days=300)).replace(microsecond=0)
    await ordering.activate(account, order, renews_at)
    now = datetime.now(UTC)
    for old, new, reason in (
        ("active", "expired", "invoice_unpaid"),
        ("expired", "suspended", "expired_period_ended"),
        ("suspended", "cancelled", "suspended_period_ended"),
    ):
        change = StageChanged(
            from_stage=old, to_stage=new, reason=reason, entitlements={}, effective_at=now
        )
        await ordering.publish(change, account, subscription, now)
    await ordering.wait_projection(subscription, "stage", "cancelled")
    second = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/quotes",
        ("partner", uuid.uuid4()),
        {"offering": "revit", "term": "annual", "seats": 1},
    )
    path = f"/v1/quotes/{second.json()['id']}/acceptance"
    refused = await ordering.call("POST", path, user(buyer), {"payment_method": "invoice"})
    assert refused.status_code == 422
    assert refused.json()["type"] == PROBLEM + "prepayment-required"
    by_card = await ordering.call("POST", path, user(buyer), {"payment_method": "card"})
    assert by_card.status_code == 201, by_card.text


async def test_r38_a_direct_purchase_is_refunded_inside_its_window_and_access_ends(
    ordering: Ordering,
) -> None:
    account, buyer, subscription, _ = await active(ordering, timedelta(days=300))
    path = f"/v1/subscriptions/{subscription}/refunds"
    refunded = await ordering.call("POST", path, user(buyer), {"reason": "Bought by mistake"})
    assert refunded.status_code == 201, refunded.text
    [event] = await ordering.outbox("RefundApproved", account)
    assert event["subscription_id"] == subscription
    approved = RefundApproved.model_validate(event["payload"])
    assert approved.purchase_kind == "order" and approved.reason == "Bought by mistake"
    again = await ordering.call("POST", path, user(buyer), {"reason": "again"})
    assert again.json()["type"] == PROBLEM + "subscription-cancelled"


async def test_r38_refunds_refused_late_for_partners_and_for_non_refundable_products(
    ordering: Ordering,
) -> None:
    account, buyer, subscription, _ = await active(ordering, timedelta(days=300))
    ordering.clock.at = datetime.now(UTC) + timedelta(days=31)
    late = await ordering.call(
        "POST", f"/v1/subscriptions/{subscription}/refunds", user(buyer), {"reason": "late"}
    )
    assert late.json()["type"] == PROBLEM + "refund-window-closed"
    ordering.clock.at = None
    _, buyer2, consulting, _ = await active(
        ordering, timedelta(days=300), offering="consulting-day"
    )
    never = await ordering.call(
        "POST", f"/v1/subscriptions/{consulting}/refunds", user(buyer2), {"reason": "no"}
    )
    assert never.json()["type"] == PROBLEM + "refund-product-not-refundable"
    quote = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/quotes",
        ("partner", uuid.uuid4()),
        {"offering": "autocad", "term": "annual", "seats": 1},
    )
    order = await ordering.call(
        "POST",
        f"/v1/quotes/{quote.json()['id']}/acceptance",
        user(buyer),
        {"payment_method": "card"},
    )
    partner_subscription = order.json()["subscription_id"]
    partner = await ordering.call(
        "POST", f"/v1/subscriptions/{partner_subscription}/refunds", user(buyer), {"reason": "x"}
    )
    assert partner.json()["type"] == PROBLEM + "refund-partner-purchase"
    assert await ordering.outbox("RefundApproved", account) == []
