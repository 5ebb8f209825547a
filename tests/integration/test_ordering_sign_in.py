"""Issue 16: ordering's sign-in links over real HTTP and PostgreSQL (the browser journeys in
tests/browser follow the same link through notifications and the mail catcher)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.ordering_helpers import Ordering, running_ordering
from tests.support import Backing

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


async def test_a_mailed_sign_in_link_signs_in_once_and_only_its_hash_is_kept(
    ordering: Ordering,
) -> None:
    account, buyer, email = await ordering.open_account()
    asked = await ordering.call("POST", "/v1/sign-in-links", body={"email": email.upper()})
    assert asked.status_code == 202
    [event] = await ordering.outbox("SignInLinkRequested", account)
    payload = event["payload"]
    assert (payload["user_id"], payload["email"]) == (str(buyer), email)
    assert payload["link"].startswith(f"{ordering.settings.portal_public_url}/sign-in/")
    secret = payload["link"].rsplit("/", 1)[1]
    stored = await ordering.pool.fetch("SELECT token_hash FROM sign_in_links")
    assert stored and all(secret.encode() not in bytes(r["token_hash"]) for r in stored)

    used = await ordering.call("POST", "/v1/sign-in-links/redemption", body={"secret": secret})
    assert used.status_code == 200, used.text
    signed_in = used.json()
    assert (signed_in["account_id"], signed_in["user_id"]) == (str(account), str(buyer))
    assert signed_in["time_zone"] == "Europe/Oslo"
    token = {"Authorization": f"Bearer {signed_in['token']}"}
    assert (await ordering.client.get(f"/v1/accounts/{account}", headers=token)).status_code == 200

    again = await ordering.call("POST", "/v1/sign-in-links/redemption", body={"secret": secret})
    assert again.status_code == 409
    assert again.json()["type"] == f"{PROBLEM}sign-in-link-used"
    assert "token" not in again.text


async def test_a_link_expires_after_fifteen_minutes_and_unknown_addresses_learn_nothing(
    ordering: Ordering,
) -> None:
    account, _, email = await ordering.open_account()
    ordering.clock.at = datetime.now(UTC)
    try:
        await ordering.call("POST", "/v1/sign-in-links", body={"email": email})
        [event] = await ordering.outbox("SignInLinkRequested", account)
        secret = event["payload"]["link"].rsplit("/", 1)[1]
        ordering.clock.at += timedelta(minutes=15)
        late = await ordering.call("POST", "/v1/sign-in-links/redemption", body={"secret": secret})
        assert late.status_code == 410
        assert late.json()["type"] == f"{PROBLEM}sign-in-link-expired"
    finally:
        ordering.clock.at = None

    nobody = f"nobody-{uuid.uuid4().hex[:8]}@example.com"
    unknown = await ordering.call("POST", "/v1/sign-in-links", body={"email": nobody})
    known = await ordering.call("POST", "/v1/sign-in-links", body={"email": email})
    assert (unknown.status_code, unknown.json()) == (known.status_code, known.json())


async def test_hostile_sign_in_input_is_a_problem_naming_the_field(ordering: Ordering) -> None:
    bad_email = await ordering.call("POST", "/v1/sign-in-links", body={"email": "a\nb@x.example"})
    assert bad_email.status_code == 422 and "email" in bad_email.text
    bad_secret = await ordering.call(
        "POST", "/v1/sign-in-links/redemption", body={"secret": "../../etc/passwd" * 2}
    )
    assert bad_secret.status_code == 422 and "secret" in bad_secret.text
