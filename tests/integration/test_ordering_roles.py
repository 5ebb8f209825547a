"""Accounts and roles through ordering's HTTP API on the real PostgreSQL and Kafka (R1-R6)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.contracts import RolesChanged
from tests.integration.ordering_helpers import Ordering, running_ordering, user
from tests.support import Backing

pytestmark = pytest.mark.integration
PROBLEM = "urn:subscription-platform:problem:"


@pytest.fixture(scope="module")
async def ordering(backing: Backing) -> AsyncIterator[Ordering]:
    async with running_ordering(backing) as service:
        yield service


async def roles_on(ordering: Ordering, account: uuid.UUID) -> dict[uuid.UUID, set[str]]:
    rows = await ordering.pool.fetch(
        "SELECT user_id, roles FROM account_people WHERE account_id = $1", account
    )
    return {r["user_id"]: set(r["roles"]) for r in rows}


async def test_r1_the_first_user_is_buyer_and_primary_admin_and_the_snapshot_is_published(
    ordering: Ordering, backing: Backing
) -> None:
    account, buyer, email = await ordering.open_account()
    assert await roles_on(ordering, account) == {buyer: {"buyer", "primary_admin"}}
    [opened] = await ordering.published(backing.kafka, "AccountOpened", account)
    [roles] = await ordering.published(backing.kafka, "RolesChanged", account)
    assert opened.recorded_at <= roles.recorded_at
    snapshot = roles.payload_as(RolesChanged)
    assert snapshot.buyer.email == email and snapshot.primary_admin.user_id == buyer


async def test_r3_r4_buyer_hands_over_primary_admin_who_appoints_and_removes_secondaries(
    ordering: Ordering,
) -> None:
    account, buyer, _ = await ordering.open_account()
    admin = await ordering.add_user(account, user(buyer))
    helper = await ordering.add_user(account, user(buyer))
    handed = await ordering.call(
        "PUT", f"/v1/accounts/{account}/primary-admin", user(buyer), {"user_id": str(admin)}
    )
    assert handed.status_code == 200, handed.text
    # R3: the buyer becomes secondary admin and keeps the buyer role.
    assert await roles_on(ordering, account) == {
        buyer: {"buyer", "secondary_admin"},
        admin: {"primary_admin"},
    }
    # R4: the buyer is no longer primary admin, so may not appoint; the primary admin may.
    path = f"/v1/accounts/{account}/secondary-admins"
    refused = await ordering.call("POST", path, user(buyer), {"user_id": str(helper)})
    assert refused.status_code == 403
    assert refused.json()["type"] == PROBLEM + "primary-admin-only"
    appointed = await ordering.call("POST", path, user(admin), {"user_id": str(helper)})
    assert appointed.status_code == 200
    assert {p["user_id"] for p in appointed.json()["secondary_admins"]} == {
        str(buyer),
        str(helper),
    }
    removed = await ordering.call("DELETE", f"{path}/{helper}", user(admin))
    assert removed.status_code == 200
    assert helper not in await roles_on(ordering, account)
    snapshots = await ordering.outbox("RolesChanged", account)
    assert len(snapshots) == 4  # opening, hand-over, appointment, removal: each a full snapshot
    assert snapshots[-1]["payload"]["primary_admin"]["user_id"] == str(admin)


# Proves R5 (../shared/DOMAIN.md).
async def test_r5_only_an_operator_changes_the_buyer(ordering: Ordering) -> None:
    account, buyer, _ = await ordering.open_account()
    other = await ordering.add_user(account, user(buyer))
    path = f"/v1/accounts/{account}/buyer"
    self_service = await ordering.call("PUT", path, user(buyer), {"user_id": str(other)})
    assert self_service.status_code == 403
    assert self_service.json()["type"] == PROBLEM + "operator-only"
    by_support = await ordering.call(
        "PUT", path, ("operator", uuid.uuid4()), {"user_id": str(other)}
    )
    assert by_support.status_code == 200, by_support.text
    assert await roles_on(ordering, account) == {buyer: {"primary_admin"}, other: {"buyer"}}


async def test_r6_a_sixth_payer_is_refused_and_nothing_changes(ordering: Ordering) -> None:
    account, buyer, _ = await ordering.open_account()
    path = f"/v1/accounts/{account}/payers"
    for n in range(5):
        added = await ordering.call(
            "POST", path, user(buyer), {"email": f"p{n}-{account}@example.com", "name": "Per"}
        )
        assert added.status_code == 201, added.text
    before = await ordering.state()
    sixth = await ordering.call(
        "POST", path, user(buyer), {"email": f"p6-{account}@example.com", "name": "Six"}
    )
    assert sixth.status_code == 422
    assert sixth.json()["type"] == PROBLEM + "payer-limit"
    assert await ordering.state() == before  # not even the sixth payer's user was kept


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    already=st.integers(min_value=0, max_value=5), concurrent=st.integers(min_value=1, max_value=6)
)
async def test_r6_property_concurrent_payer_registrations_never_exceed_five(
    ordering: Ordering, already: int, concurrent: int
) -> None:
    """R6 under any starting count and any number of simultaneous registrations."""
    account, buyer, _ = await ordering.open_account()
    path = f"/v1/accounts/{account}/payers"
    for n in range(already):
        body = {"email": f"a{n}-{account}@example.com", "name": "A"}
        assert (await ordering.call("POST", path, user(buyer), body)).status_code == 201
    answers = await asyncio.gather(
        *(
            ordering.call(
                "POST", path, user(buyer), {"email": f"c{n}-{account}@example.com", "name": "C"}
            )
            for n in range(concurrent)
        )
    )
    accepted = sum(a.status_code == 201 for a in answers)
    refused = [a for a in answers if a.status_code != 201]
    assert accepted == min(concurrent, 5 - already)
    assert all(a.json()["type"] == PROBLEM + "payer-limit" for a in refused)
    payers = [r for r in (await roles_on(ordering, account)).values() if "payer" in r]
    assert len(payers) == already + accepted <= 5
