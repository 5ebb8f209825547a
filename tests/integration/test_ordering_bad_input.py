"""Bad input gets a 4xx problem naming the field, and the database stays as it was."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.integration.ordering_helpers import Ordering, running_ordering, user
from tests.support import Backing

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[tuple[Ordering, uuid.UUID, uuid.UUID]]:
    async with running_ordering(backing) as service:
        account, buyer, _ = await service.open_account()
        yield service, account, buyer


GOOD_ORDER = {"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"}
GOOD_ACCOUNT = {
    "name": "Fjord AS",
    "country": "NO",
    "currency": "NOK",
    "time_zone": "Europe/Oslo",
    "buyer": {"email": "kari@example.com", "name": "Kari"},
}

GOOD_BILLING = {
    "address_lines": ["Storgata 1"],
    "postcode": "0155",
    "city": "Oslo",
    "country": "NO",
    "organisation_number": "923609016",
    "vat_id": "NO923609016MVA",
}

CASES: list[tuple[str, str, Any, str]] = [
    # (path kind, case, body, the field the problem must name)
    ("orders", "unknown field", {**GOOD_ORDER, "discount": 50}, "discount"),
    ("orders", "seats as a string", {**GOOD_ORDER, "seats": "3"}, "seats"),
    ("orders", "zero seats", {**GOOD_ORDER, "seats": 0}, "seats"),
    ("orders", "negative seats", {**GOOD_ORDER, "seats": -2}, "seats"),
    ("orders", "too many seats", {**GOOD_ORDER, "seats": 10_001}, "seats"),
    ("orders", "unknown offering", {**GOOD_ORDER, "offering": "photoshop"}, "offering"),
    ("orders", "term not sold", {**GOOD_ORDER, "offering": "docs", "term": "monthly"}, "term"),
    ("orders", "unknown term", {**GOOD_ORDER, "term": "weekly"}, "term"),
    (
        "orders",
        "unknown payment method",
        {**GOOD_ORDER, "payment_method": "cash"},
        "payment_method",
    ),
    ("orders", "trial as a string", {**GOOD_ORDER, "trial": "yes"}, "trial"),
    ("orders", "bad payment token", {**GOOD_ORDER, "payment_token": "4111\r\n"}, "payment_token"),
    ("orders", "missing field", {k: v for k, v in GOOD_ORDER.items() if k != "term"}, "term"),
    ("orders", "a list, not an object", [GOOD_ORDER], "body"),
    (
        "accounts",
        "CR/LF in the buyer's name",
        {**GOOD_ACCOUNT, "buyer": {"email": "kari@example.com", "name": "Kari\r\nBcc: x@y.z"}},
        "buyer.name",
    ),
    (
        "accounts",
        "CR/LF in the buyer's e-mail",
        {**GOOD_ACCOUNT, "buyer": {"email": "kari@example.com\r\nBcc: x@y.z", "name": "Kari"}},
        "buyer.email",
    ),
    ("accounts", "LF in the account name", {**GOOD_ACCOUNT, "name": "A\nB"}, "name"),
    ("accounts", "unknown country", {**GOOD_ACCOUNT, "country": "XX"}, "country"),
    ("accounts", "not a time zone", {**GOOD_ACCOUNT, "time_zone": "Mars/Olympus"}, "time_zone"),
    (
        "accounts",
        "issue 15: a Norwegian org no with a wrong MOD11 check digit",
        {**GOOD_ACCOUNT, "billing_details": {**GOOD_BILLING, "organisation_number": "923609017"}},
        "billing_details.organisation_number",
    ),
    (
        "accounts",
        "issue 15: a Norwegian VAT id without MVA",
        {**GOOD_ACCOUNT, "billing_details": {**GOOD_BILLING, "vat_id": "NO923609016"}},
        "billing_details.vat_id",
    ),
    (
        "accounts",
        "issue 15: a billing address in another country",
        {**GOOD_ACCOUNT, "billing_details": {**GOOD_BILLING, "country": "SE"}},
        "billing_details.country",
    ),
    (
        "accounts",
        "issue 15: CR/LF in the billing address",
        {**GOOD_ACCOUNT, "billing_details": {**GOOD_BILLING, "address_lines": ["A\r\nB"]}},
        "billing_details.address_lines.0",
    ),
    ("payers", "CR/LF in a payer's e-mail", {"email": "p@example.com\n", "name": "P"}, "email"),
    (
        "quotes",
        "valid_until out of range",
        {"offering": "autocad", "term": "annual", "seats": 1, "valid_until": "2999-01-01"},
        "valid_until",
    ),
    (
        "quotes",
        "valid_until not a date",
        {"offering": "autocad", "term": "annual", "seats": 1, "valid_until": "2025-02-30"},
        "valid_until",
    ),
]


def path_and_who(kind: str, account: uuid.UUID, buyer: uuid.UUID) -> tuple[str, Any]:
    if kind == "accounts":
        return "/v1/accounts", None
    if kind == "quotes":
        return f"/v1/accounts/{account}/quotes", ("partner", uuid.uuid4())
    return f"/v1/accounts/{account}/{kind}", user(buyer)


@pytest.mark.parametrize(("kind", "case", "body", "field"), CASES, ids=[c[1] for c in CASES])
async def test_bad_input_names_the_field_and_stores_nothing(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID], kind: str, case: str, body: Any, field: str
) -> None:
    service, account, buyer = ordering
    path, who = path_and_who(kind, account, buyer)
    before = await service.state()
    response = await service.call("POST", path, who, body)
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert problem["type"] == PROBLEM + "validation"
    assert field in {e["field"] for e in problem["errors"]}, problem
    assert await service.state() == before


async def test_malformed_json_is_a_422_problem(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID],
) -> None:
    service, account, buyer = ordering
    before = await service.state()
    headers = {
        **service.auth(user(buyer)),
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    response = await service.client.post(
        f"/v1/accounts/{account}/orders", content=b'{"offering": "autocad",', headers=headers
    )
    assert response.status_code == 422
    assert response.json()["type"] == PROBLEM + "validation"
    assert await service.state() == before


async def test_oversized_bodies_are_refused_with_413_declared_or_streamed(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID],
) -> None:
    service, account, buyer = ordering
    before = await service.state()
    huge = json.dumps({**GOOD_ORDER, "padding": "x" * 20_000}).encode()
    headers = {
        **service.auth(user(buyer)),
        "Idempotency-Key": str(uuid.uuid4()),
        "Content-Type": "application/json",
    }
    declared = await service.client.post(
        f"/v1/accounts/{account}/orders", content=huge, headers=headers
    )
    assert declared.status_code == 413
    assert declared.json()["type"] == PROBLEM + "body-too-large"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted while read
        for start in range(0, len(huge), 4096):
            yield huge[start : start + 4096]

    streamed = await service.client.post(
        f"/v1/accounts/{account}/orders", content=chunks(), headers=headers
    )
    assert streamed.status_code == 413
    assert await service.state() == before


async def test_an_unknown_idempotency_key_format_is_refused(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID],
) -> None:
    service, account, buyer = ordering
    response = await service.call(
        "POST", f"/v1/accounts/{account}/orders", user(buyer), GOOD_ORDER, key="k" * 201
    )
    assert response.status_code == 400
    assert response.json()["type"] == PROBLEM + "idempotency-key-invalid"


async def test_issue15_the_buyer_sets_billing_details_validated_and_published_whole(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID],
) -> None:
    service, account, buyer = ordering
    path = f"/v1/accounts/{account}/billing-details"
    wrong = await service.call("PUT", path, user(buyer), {**GOOD_BILLING, "vat_id": "SE123"})
    assert wrong.status_code == 422
    assert [e["field"] for e in wrong.json()["errors"]] == ["vat_id"]
    assert await service.outbox("BillingDetailsChanged", account) == []
    spaced = {**GOOD_BILLING, "organisation_number": "923 609 016", "vat_id": "no923609016mva"}
    answer = await service.call("PUT", path, user(buyer), spaced)
    assert answer.status_code == 200, answer.text
    assert answer.json()["organisation_number"] == "923609016"
    assert answer.json()["vat_id"] == "NO923609016MVA"
    again = await service.call("PUT", path, user(buyer), GOOD_BILLING)  # the same, compacted
    assert again.status_code == 200
    [published] = await service.outbox("BillingDetailsChanged", account)  # once: unchanged
    assert published["payload"]["billing"] == answer.json()
    seen = await service.call("GET", f"/v1/accounts/{account}", user(buyer))
    assert seen.json()["billing_details"] == answer.json()


async def test_issue15_sign_up_with_billing_details_publishes_them_after_the_account(
    ordering: tuple[Ordering, uuid.UUID, uuid.UUID],
) -> None:
    service, _, _ = ordering
    body = {
        **GOOD_ACCOUNT,
        "buyer": {"email": f"k-{uuid.uuid4().hex[:8]}@example.com", "name": "Kari"},
        "billing_details": GOOD_BILLING,
    }
    opened = await service.call("POST", "/v1/accounts", None, body)
    assert opened.status_code == 201, opened.text
    account = uuid.UUID(opened.json()["id"])
    assert opened.json()["billing_details"]["organisation_number"] == "923609016"
    [published] = await service.outbox("BillingDetailsChanged", account)
    [account_opened] = await service.outbox("AccountOpened", account)
    assert published["payload"]["billing"] == opened.json()["billing_details"]
    assert account_opened["recorded_at"] <= published["recorded_at"]
