"""R8: every endpoint x ten principals -> the exact status, and no other account's data leaks.

One account A (buyer B who handed primary admin to P (R3), secondary admin S, payer Y), another
account X (buyer BX), support (operator) and the partner that issued A's quote.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from pydantic import SecretStr

from shared.auth import issue_token
from tests.integration.ordering_helpers import Ordering, running_ordering, user
from tests.support import Backing

pytestmark = pytest.mark.integration

PRINCIPALS = (
    "buyer",
    "primary_admin",
    "secondary_admin",
    "payer",
    "other_buyer",
    "no_token",
    "expired_token",
    "wrong_key",
    "operator",
    "partner",
)
STRANGERS = {"other_buyer", "no_token", "expired_token", "wrong_key", "partner"}


@dataclass
class World:
    ordering: Ordering
    ids: dict[str, uuid.UUID]
    secrets: list[str]  # strings of account A that no refused body and no stranger may see

    def headers(self, principal: str) -> dict[str, str]:
        o = self.ordering
        if principal == "no_token":
            return {}
        if principal == "expired_token":
            token = issue_token(
                o.settings, o.clock, subject=self.ids["buyer"], ttl=timedelta(seconds=-1)
            )
        elif principal == "wrong_key":
            other = o.settings.model_copy(update={"jwt_secret": SecretStr("x" * 48)})
            token = issue_token(other, o.clock, subject=self.ids["buyer"])
        elif principal == "operator":
            token = issue_token(o.settings, o.clock, subject=self.ids[principal], kind="operator")
        elif principal == "partner":
            token = issue_token(o.settings, o.clock, subject=self.ids[principal], kind="partner")
        else:
            token = issue_token(o.settings, o.clock, subject=self.ids[principal])
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
async def world(backing: Backing) -> AsyncIterator[World]:
    async with running_ordering(backing) as o:
        account, buyer, buyer_email = await o.open_account()
        b = user(buyer)
        primary = await o.add_user(account, b)
        secondary = await o.add_user(account, b)
        spare_admin = await o.add_user(account, b)
        assert (
            await o.call(
                "PUT", f"/v1/accounts/{account}/primary-admin", b, {"user_id": str(primary)}
            )
        ).status_code == 200
        for appointed in (secondary, spare_admin):
            response = await o.call(
                "POST",
                f"/v1/accounts/{account}/secondary-admins",
                user(primary),
                {"user_id": str(appointed)},
            )
            assert response.status_code == 200
        payers = []
        for name in ("payer", "spare_payer"):
            response = await o.call(
                "POST",
                f"/v1/accounts/{account}/payers",
                b,
                {"email": f"{name}-{uuid.uuid4().hex[:8]}@example.com", "name": "Per"},
            )
            assert response.status_code == 201
            payers.append(response.json()["payers"])
        payer_ids = [uuid.UUID(p["user_id"]) for p in payers[-1]]
        first_payer = uuid.UUID(payers[0][0]["user_id"])
        spare_payer = next(p for p in payer_ids if p != first_payer)
        changed = await o.order(account, buyer)
        await o.activate(account, changed, o.clock.now() + timedelta(days=60))
        refundable = await o.order(account, buyer)
        trial = await o.order(account, buyer, trial=True)
        partner = uuid.uuid4()
        quote = await o.call(
            "POST",
            f"/v1/accounts/{account}/quotes",
            ("partner", partner),
            {"offering": "revit", "term": "annual", "seats": 1},
        )
        other_account, other_buyer, _ = await o.open_account()
        ids = {
            "account": account,
            "buyer": buyer,
            "primary_admin": primary,
            "secondary_admin": secondary,
            "spare_admin": spare_admin,
            "payer": first_payer,
            "spare_payer": spare_payer,
            "other_buyer": other_buyer,
            "other_account": other_account,
            "operator": uuid.uuid4(),
            "partner": partner,
            "order": uuid.UUID(changed["id"]),
            "subscription": uuid.UUID(changed["subscription_id"]),
            "refundable": uuid.UUID(refundable["subscription_id"]),
            "trial": uuid.UUID(trial["subscription_id"]),
            "quote": uuid.UUID(quote.json()["id"]),
        }
        secrets = [buyer_email, changed["order_number"], refundable["order_number"]]
        yield World(o, ids, secrets)


def expect(ok: dict[str, int], member_default: int = 403, **other: int) -> dict[str, int]:
    """Members without the role 403, strangers 404, bad tokens 401, then the exceptions."""
    table = {p: member_default for p in PRINCIPALS}
    table.update(other_buyer=404, partner=404, operator=403)
    table.update(no_token=401, expired_token=401, wrong_key=401)
    table.update(other)
    table.update(ok)
    return table


def fresh_person() -> dict[str, Any]:
    return {"email": f"n-{uuid.uuid4().hex[:10]}@example.com", "name": "Nina"}


Body = Callable[[dict[str, uuid.UUID]], Any]

# (method, path template, body factory, expected status per principal)
ENDPOINTS: list[tuple[str, str, Body | None, dict[str, int]]] = [
    (
        "POST",
        "/v1/accounts",
        lambda ids: {
            "name": "New AS",
            "country": "NO",
            "currency": "NOK",
            "time_zone": "Europe/Oslo",
            "buyer": fresh_person(),
        },
        {p: 201 for p in PRINCIPALS},  # public sign-up: a token is not looked at
    ),
    (
        "POST",
        "/v1/sign-in-links",
        lambda ids: {"email": fresh_person()["email"]},
        {p: 202 for p in PRINCIPALS},  # public (issue 16): the same answer for any address
    ),
    (
        "POST",
        "/v1/sign-in-links/redemption",
        lambda ids: {"secret": "A" * 43},
        {p: 404 for p in PRINCIPALS},  # public: only the mailed secret signs anyone in
    ),
    (
        "GET",
        "/v1/accounts/{account}",
        None,
        expect({"buyer": 200, "primary_admin": 200, "secondary_admin": 200, "operator": 200}),
    ),
    (
        "POST",
        "/v1/accounts/{account}/users",
        lambda ids: fresh_person(),
        expect({"buyer": 201, "primary_admin": 201, "secondary_admin": 201}),
    ),
    (
        "PUT",
        "/v1/accounts/{account}/primary-admin",
        lambda ids: {"user_id": str(ids["primary_admin"])},
        expect({"buyer": 200}),
    ),
    (
        "POST",
        "/v1/accounts/{account}/secondary-admins",
        lambda ids: {"user_id": str(ids["secondary_admin"])},
        expect({"primary_admin": 200}),
    ),
    (
        "DELETE",
        "/v1/accounts/{account}/secondary-admins/{spare_admin}",
        None,
        expect({"primary_admin": 200}),
    ),
    (
        "PUT",
        "/v1/accounts/{account}/buyer",
        lambda ids: {"user_id": str(ids["buyer"])},
        expect({"operator": 200}),
    ),
    (
        "POST",
        "/v1/accounts/{account}/payers",
        lambda ids: fresh_person(),
        expect({"buyer": 201}),
    ),
    ("DELETE", "/v1/accounts/{account}/payers/{spare_payer}", None, expect({"buyer": 200})),
    (
        "PUT",
        "/v1/accounts/{account}/billing-details",
        lambda ids: {
            "address_lines": ["Storgata 1"],
            "postcode": "0155",
            "city": "Oslo",
            "country": "NO",
            "organisation_number": "923609016",
        },
        expect({"buyer": 200}),  # issue 15, R2: the buyer's
    ),
    (
        "POST",
        "/v1/accounts/{account}/orders",
        lambda ids: {"offering": "docs", "term": "annual", "seats": 1, "payment_method": "card"},
        expect({"buyer": 201}),
    ),
    (
        "POST",
        "/v1/accounts/{account}/orders/preview",
        lambda ids: {"offering": "docs", "term": "annual", "seats": 1, "payment_method": "card"},
        expect({"buyer": 200}),
    ),
    ("GET", "/v1/accounts/{account}/orders", None, expect({"buyer": 200, "operator": 200})),
    ("GET", "/v1/orders/{order}", None, expect({"buyer": 200, "operator": 200})),
    (
        "POST",
        "/v1/accounts/{account}/quotes",
        lambda ids: {"offering": "autocad", "term": "annual", "seats": 1},
        expect({"partner": 201}, other_buyer=403),  # not a partner: refused before any lookup
    ),
    (
        "GET",
        "/v1/quotes/{quote}",
        None,
        expect({"buyer": 200, "operator": 200, "partner": 200}),
    ),
    (
        "POST",
        "/v1/quotes/{quote}/acceptance",
        lambda ids: {"payment_method": "card"},
        expect({"buyer": 201}),
    ),
    (
        "GET",
        "/v1/accounts/{account}/subscriptions",
        None,
        expect({"buyer": 200, "operator": 200}),
    ),
    ("GET", "/v1/subscriptions/{subscription}", None, expect({"buyer": 200, "operator": 200})),
    (
        "POST",
        "/v1/subscriptions/{trial}/conversion",
        lambda ids: {"payment_method": "card"},
        expect({"buyer": 201}),
    ),
    (
        "PUT",
        "/v1/subscriptions/{subscription}/auto-renew",
        lambda ids: {"auto_renew": False},
        expect({"buyer": 200}),
    ),
    (
        "PUT",
        "/v1/subscriptions/{subscription}/payment-method",
        # A saved method that is not the account's: the buyer passes the access check (R2) and
        # is then refused on the field (422); everyone else stops at R8 first.
        lambda ids: {"payment_method": "card", "payment_method_id": str(uuid.uuid4())},
        expect({"buyer": 422}),
    ),
    (
        "PUT",
        "/v1/subscriptions/{subscription}/term-change",
        lambda ids: {"new_term": "monthly"},
        expect({"buyer": 200}),
    ),
    (
        "PUT",
        "/v1/subscriptions/{subscription}/product-switch",
        lambda ids: {"new_offering": "revit"},
        expect({"buyer": 200}),
    ),
    (
        "POST",
        "/v1/subscriptions/{subscription}/seats",
        lambda ids: {"seats": 1},
        expect({"buyer": 201}),
    ),
    (
        "POST",
        "/v1/subscriptions/{subscription}/renewals",
        lambda ids: {},
        expect({"buyer": 201}),
    ),
    (
        "POST",
        "/v1/subscriptions/{refundable}/refunds",
        lambda ids: {"reason": "mistake"},
        expect({"buyer": 201}),
    ),
]


def test_r8_the_table_covers_every_endpoint_of_the_api() -> None:
    from fastapi.routing import APIRoute

    from services.ordering.api import router

    def shape(path: str) -> str:
        return re.sub(r"\{[^}]+\}", "{}", path)

    routes = {
        (method, shape(route.path))
        for route in router.routes
        if isinstance(route, APIRoute)
        for method in route.methods or ()
    }
    assert {(m, shape(p)) for m, p, _, _ in ENDPOINTS} == routes


@pytest.mark.parametrize(
    ("method", "template", "body", "expected"),
    ENDPOINTS,
    ids=[f"{m} {p}" for m, p, _, _ in ENDPOINTS],
)
async def test_r8_access_table(
    world: World, method: str, template: str, body: Body | None, expected: dict[str, int]
) -> None:
    path = template.format(**world.ids)
    got: dict[str, int] = {}
    # Refusals first: they store nothing, so the one allowed write then meets the setup state.
    for principal in sorted(PRINCIPALS, key=lambda p: expected[p] < 400):
        headers = world.headers(principal)
        if method != "GET":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        payload = body(world.ids) if body else None
        response = await world.ordering.client.request(method, path, json=payload, headers=headers)
        got[principal] = response.status_code
        if response.status_code >= 400 or principal in STRANGERS - {"partner"}:
            leaked = [s for s in world.secrets if s in response.text]
            assert not leaked, f"{principal} saw {leaked} in {response.text}"
    assert got == expected
