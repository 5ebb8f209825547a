"""One purchase is one correlation (issue 14): the mail notifications sends for an order keeps
the order's correlation id and names the event that asked for it as its cause."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from shared.contracts import Envelope
from tests.integration.notifications_support import (
    notifications_app,
    notifications_settings,
    publish,
)
from tests.integration.ordering_helpers import running_ordering, user
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


async def outbox(pool: asyncpg.Pool) -> list[Envelope]:
    rows = await pool.fetch("SELECT body FROM outbox ORDER BY id")
    return [Envelope.model_validate_json(bytes(r["body"])) for r in rows]


async def test_the_order_confirmation_keeps_the_orders_correlation(backing: Backing) -> None:
    async with running_ordering(backing) as ordering:
        account, buyer, _ = await ordering.open_account()
        await ordering.order(account, buyer)
        produced = [e for e in await outbox(ordering.pool) if e.account_id == account]
    (placed,) = [e for e in produced if e.event_type == "OrderPlaced"]
    assert user(buyer)  # the order was the buyer's

    async with (
        deployment(backing, ("notifications",)) as dep,
        notifications_app(notifications_settings(dep)) as app,
    ):
        await publish(backing, dep, *produced)  # ordering's own envelopes, as it wrote them
        pool = app.state.runtime.pool

        async def confirmation_sent() -> list[Envelope]:
            return [
                e
                for e in await outbox(pool)
                if e.event_type == "EmailSent" and e.payload["template"] == "order_confirmation"
            ]

        (sent,) = await wait_for(confirmation_sent, timeout=60, what="the EmailSent")
    assert sent.correlation_id == placed.correlation_id
    assert sent.causation_id == placed.event_id
    assert sent.correlation_id != sent.event_id  # not a correlation of its own
    assert uuid.UUID(str(sent.payload["source_event_id"])) == placed.event_id
