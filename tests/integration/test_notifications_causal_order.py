"""Notifications over the real Kafka: an event from another topic that arrives before its cause.

One account's events are ordered within a topic only. ``SubscriptionActivated`` (lifecycle) is
caused by ``OrderPlaced`` (ordering); the roles it is routed by come from ``RolesChanged`` on
ordering's topic, before the order. Found by journey 2 (issue 7): a secondary admin appointed
just before the order missed ``product_access_granted`` when lifecycle's event overtook
ordering's topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from shared.contracts import RolesChanged, SubscriptionActivated, new_envelope
from tests.integration.notifications_support import (
    address,
    envelope,
    notifications_app,
    notifications_settings,
    opening,
    person,
    publish,
)
from tests.notifications_samples import order_placed
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


async def test_r10_an_admin_appointed_before_the_order_gets_the_access_mail_of_its_activation(
    backing: Backing,
) -> None:
    """R10: the admin appointed before the order is told of the product access it grants, even
    when the activation arrives before the appointment and the order have been consumed."""
    kari, ola = address("kari"), address("ola")
    account = uuid.uuid4()
    first = RolesChanged(buyer=person(kari), primary_admin=person(kari))
    appointed = RolesChanged(
        buyer=first.buyer, primary_admin=first.primary_admin, secondary_admins=[person(ola)]
    )
    placed = envelope(account, order_placed("ORD-CAUSAL", kari))
    now = datetime.now(UTC)
    activated = new_envelope(
        event=SubscriptionActivated(
            order_id=uuid.uuid4(),
            offering="autocad",
            term="annual",
            seats=2,
            time_zone="Europe/Oslo",
            starts_at=now,
            expires_at=now,
            renews_at=now,
            auto_renew=True,
        ),
        producer="lifecycle",
        account_id=account,
        occurred_at=now,
        recorded_at=now,
        causation=placed,
    )
    async with (
        deployment(backing, ("notifications",)) as dep,
        notifications_app(notifications_settings(dep)) as app,
    ):
        pool = app.state.runtime.pool

        async def mails() -> list[tuple[str, str]]:
            rows = await pool.fetch(
                "SELECT template, recipient FROM deliveries WHERE account_id = $1", account
            )
            return sorted((r["template"], r["recipient"]) for r in rows)

        await publish(backing, dep, *opening(account, first))
        await wait_for(mails, what="the first admin's mail")
        await publish(backing, dep, activated)  # overtakes the appointment and the order

        async def activation_consumed() -> bool:
            query = "SELECT true FROM inbox WHERE event_id = $1"
            return bool(await pool.fetchval(query, activated.event_id))

        await wait_for(activation_consumed, what="the activation consumed")
        await publish(backing, dep, envelope(account, appointed), placed)

        async def order_confirmed() -> list[tuple[str, str]]:
            got = await mails()
            return got if ("order_confirmation", kari) in got else []

        await wait_for(order_confirmed, what="the order confirmation")

        async def settled() -> list[tuple[str, str]]:
            got = await mails()
            return got if ("product_access_granted", ola) in got else []

        got = await wait_for(settled, timeout=10, what="the admin's access mail")
        assert got == sorted(
            [
                ("admin_appointed", kari),
                ("admin_appointed", ola),
                ("order_confirmation", kari),
                ("product_access_granted", kari),
                ("product_access_granted", ola),
            ]
        )
