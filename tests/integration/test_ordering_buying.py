"""Buying through ordering's HTTP API: direct orders, partner quotes, payment rules, trials and
idempotency keys (R14-R17), on the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts import OrderPlaced, QuoteIssued, TrialConverted
from tests.integration.ordering_helpers import Ordering, running_ordering, user
from tests.support import Backing

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


async def issue_quote(
    ordering: Ordering, account: uuid.UUID, partner: uuid.UUID, seats: int = 2
) -> dict[str, object]:
    body = {"offering": "autocad", "term": "annual", "seats": seats}
    issued = await ordering.call(
        "POST", f"/v1/accounts/{account}/quotes", ("partner", partner), body
    )
    assert issued.status_code == 201, issued.text
    result: dict[str, object] = issued.json()
    return result


# Proves R16 (../shared/DOMAIN.md).
async def test_r16_partner_quote_accepted_by_the_buyer_places_a_partner_order(
    ordering: Ordering, backing: Backing
) -> None:
    account, buyer, _ = await ordering.open_account(currency="EUR")
    partner = uuid.uuid4()
    quote = await issue_quote(ordering, account, partner, seats=3)
    assert Decimal(str(quote["net_amount"])) == Decimal("5451.00")  # 3 x 1975 USD x 0.92
    [issued] = await ordering.outbox("QuoteIssued", account)
    assert QuoteIssued.model_validate(issued["payload"]).partner_id == partner
    # The partner reads its own quote; another partner gets 404.
    path = f"/v1/quotes/{quote['id']}"
    assert (await ordering.call("GET", path, ("partner", partner))).status_code == 200
    assert (await ordering.call("GET", path, ("partner", uuid.uuid4()))).status_code == 404
    accepted = await ordering.call(
        "POST", f"{path}/acceptance", user(buyer), {"payment_method": "invoice"}
    )
    assert accepted.status_code == 201, accepted.text  # R14: invoice through a partner quote
    order = accepted.json()
    placed = await ordering.published(backing.kafka, "OrderPlaced", account)
    assert len(placed) == 1
    event = placed[0].payload_as(OrderPlaced)
    assert (event.channel, event.quote_id, event.payment_method, event.seats) == (
        "partner",
        uuid.UUID(str(quote["id"])),
        "invoice",
        3,
    )
    assert placed[0].subscription_id == event.subscription_id == uuid.UUID(order["subscription_id"])
    again = await ordering.call(
        "POST", f"{path}/acceptance", user(buyer), {"payment_method": "invoice"}
    )
    assert again.status_code == 409
    assert again.json()["type"] == PROBLEM + "quote-already-accepted"


async def test_r14_pay_by_invoice_direct_only_with_an_invoice_subscription(
    ordering: Ordering,
) -> None:
    account, buyer, _ = await ordering.open_account()
    before = await ordering.counts()
    refused = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/orders",
        user(buyer),
        {"offering": "revit", "term": "annual", "seats": 1, "payment_method": "invoice"},
    )
    assert refused.status_code == 422
    assert refused.json()["type"] == PROBLEM + "pay-by-invoice-not-allowed"
    assert await ordering.counts() == before  # a refused request stores nothing
    # A trial "paid by invoice" pays nothing: it opens no door to pay by invoice.
    trial = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/orders",
        user(buyer),
        {
            "offering": "revit",
            "term": "annual",
            "seats": 1,
            "payment_method": "invoice",
            "trial": True,
        },
    )
    assert trial.status_code == 201
    still_refused = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/orders",
        user(buyer),
        {"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "invoice"},
    )
    assert still_refused.json()["type"] == PROBLEM + "pay-by-invoice-not-allowed"
    quote = await issue_quote(ordering, account, uuid.uuid4())
    accepted = await ordering.call(
        "POST", f"/v1/quotes/{quote['id']}/acceptance", user(buyer), {"payment_method": "invoice"}
    )
    assert accepted.status_code == 201
    # Now the account has a subscription paid by invoice: a direct order may be too.
    direct = await ordering.order(account, buyer, offering="revit", payment_method="invoice")
    assert direct["channel"] == "direct" and direct["payment_method"] == "invoice"


async def test_r15_a_quote_above_usd_25000_is_not_paid_by_card_or_paypal(
    ordering: Ordering,
) -> None:
    account, buyer, _ = await ordering.open_account(currency="NOK")
    quote = await issue_quote(ordering, account, uuid.uuid4(), seats=13)  # 25,675 USD
    assert Decimal(str(quote["usd_value"])) > Decimal(25000)
    path = f"/v1/quotes/{quote['id']}/acceptance"
    before = await ordering.counts()
    for method in ("card", "paypal"):
        refused = await ordering.call("POST", path, user(buyer), {"payment_method": method})
        assert refused.status_code == 422
        assert refused.json()["type"] == PROBLEM + "card-limit-exceeded"
    assert await ordering.counts() == before
    by_invoice = await ordering.call("POST", path, user(buyer), {"payment_method": "invoice"})
    assert by_invoice.status_code == 201
    # The same rule for a direct order of the same size.
    direct = await ordering.call(
        "POST",
        f"/v1/accounts/{account}/orders",
        user(buyer),
        {"offering": "autocad", "term": "annual", "seats": 13, "payment_method": "card"},
    )
    assert direct.json()["type"] == PROBLEM + "card-limit-exceeded"


# Proves R16 (../shared/DOMAIN.md).
async def test_r16_an_expired_quote_cannot_be_accepted(ordering: Ordering) -> None:
    account, buyer, _ = await ordering.open_account()
    quote = await issue_quote(ordering, account, uuid.uuid4())
    ordering.clock.at = datetime.now(UTC) + timedelta(days=31)
    try:
        late = await ordering.call(
            "POST", f"/v1/quotes/{quote['id']}/acceptance", user(buyer), {"payment_method": "card"}
        )
    finally:
        ordering.clock.at = None
    assert late.status_code == 422 and late.json()["type"] == PROBLEM + "quote-expired"


async def test_r17_a_trial_converts_in_place_with_the_same_subscription_id(
    ordering: Ordering,
) -> None:
    account, buyer, _ = await ordering.open_account()
    trial = await ordering.order(account, buyer, trial=True, seats=2)
    [placed] = await ordering.outbox("OrderPlaced", account)
    assert placed["payload"]["trial"] is True
    subscription = trial["subscription_id"]
    await ordering.activate(
        account, trial, renews_at=datetime.now(UTC) + timedelta(days=30), trial=True
    )
    path = f"/v1/subscriptions/{subscription}/conversion"
    converted = await ordering.call(
        "POST", path, user(buyer), {"payment_method": "card", "payment_token": "tok_success"}
    )
    assert converted.status_code == 201, converted.text
    assert converted.json()["subscription_id"] == subscription
    [event] = await ordering.outbox("TrialConverted", account)
    assert event["subscription_id"] == subscription
    payload = TrialConverted.model_validate(event["payload"])
    assert (payload.seats, payload.payment_token) == (2, "tok_success")
    assert (
        await ordering.pool.fetchval(
            "SELECT count(*) FROM subscriptions WHERE account_id = $1", account
        )
        == 1
    )
    twice = await ordering.call("POST", path, user(buyer), {"payment_method": "card"})
    assert twice.status_code == 409 and twice.json()["type"] == PROBLEM + "not-a-trial"


async def test_idempotency_same_key_same_answer_other_body_422(ordering: Ordering) -> None:
    account, buyer, _ = await ordering.open_account()
    path = f"/v1/accounts/{account}/orders"
    body = {"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"}
    first = await ordering.call("POST", path, user(buyer), body, key="order-1")
    repeat = await ordering.call("POST", path, user(buyer), body, key="order-1")
    assert first.status_code == repeat.status_code == 201
    assert first.json() == repeat.json()
    other = await ordering.call("POST", path, user(buyer), {**body, "seats": 2}, key="order-1")
    assert other.status_code == 422
    assert other.json()["type"] == PROBLEM + "idempotency-key-reused"
    assert len(await ordering.outbox("OrderPlaced", account)) == 1
    missing = await ordering.client.post(path, json=body, headers=ordering.auth(user(buyer)))
    assert missing.status_code == 400
    assert missing.json()["type"] == PROBLEM + "idempotency-key-required"


@settings(
    max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(repeats=st.integers(min_value=2, max_value=8), seats=st.integers(min_value=1, max_value=9))
async def test_idempotency_property_concurrent_repeats_create_one_order(
    ordering: Ordering, repeats: int, seats: int
) -> None:
    """However many identical requests race with one key: one order, one event, one answer."""
    account, buyer, _ = await ordering.open_account()
    body = {"offering": "autocad", "term": "annual", "seats": seats, "payment_method": "card"}
    key = str(uuid.uuid4())
    answers = await asyncio.gather(
        *(
            ordering.call("POST", f"/v1/accounts/{account}/orders", user(buyer), body, key=key)
            for _ in range(repeats)
        )
    )
    assert {a.status_code for a in answers} == {201}
    assert len({a.json()["order_number"] for a in answers}) == 1
    assert (
        await ordering.pool.fetchval("SELECT count(*) FROM orders WHERE account_id = $1", account)
        == 1
    )
    assert len(await ordering.outbox("OrderPlaced", account)) == 1
