"""What a crash of the notifications process leaves behind, and what a restart does with it
(R12: the same event never mails the same address twice)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from tests.integration.notifications_support import (
    RefusingSmtp,
    address,
    count,
    notifications_app,
    notifications_settings,
)
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


async def insert_delivery(
    conn: asyncpg.Connection, recipient: str, status: str, **columns: object
) -> uuid.UUID:
    delivery_id = uuid.uuid4()
    now = datetime.now(UTC)
    values = {
        "id": delivery_id,
        "event_id": uuid.uuid4(),
        "event_type": "OrderPlaced",
        "account_id": uuid.uuid4(),
        "recipient": recipient,
        "roles": ["buyer"],
        "template": "order_confirmation",
        "language": "en",
        "subject": "Order confirmation ORD-CRASH",
        "body_text": "text",
        "body_html": "<p>html</p>",
        "status": status,
        "next_attempt_at": now - timedelta(minutes=5),
        "created_at": now - timedelta(minutes=5),
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO deliveries ({names}) VALUES ({marks})", *values.values())  # noqa: S608
    return delivery_id


async def test_r12_a_restart_resends_unstarted_mails_but_never_a_handed_over_one(
    backing: Backing,
) -> None:
    """A worker died twice: once holding a lease on a mail it had not begun (that mail is sent
    after the lease runs out), once after recording the hand-over and before recording the
    server's answer (that mail may have arrived: it becomes ``unconfirmed`` and is not sent
    again). The window of doubt is that one DATA round trip plus one commit."""
    leased, handed_over = address("leased"), address("handedover")
    async with RefusingSmtp() as smtp, deployment(backing, ("notifications",)) as dep:
        settings = notifications_settings(dep, smtp_url=smtp.smtp_url)
        async with notifications_app(settings):
            pass  # migrations
        conn = await asyncpg.connect(dep.databases["notifications"])
        try:
            now = datetime.now(UTC)
            await insert_delivery(
                conn, leased, "pending", claim_token=uuid.uuid4(), claimed_until=now
            )
            lost = await insert_delivery(
                conn,
                handed_over,
                "handing_over",
                claim_token=uuid.uuid4(),
                claimed_until=now + timedelta(minutes=5),
                handed_over_at=now - timedelta(hours=1),
                attempts=1,
            )
        finally:
            await conn.close()

        async with notifications_app(settings) as app:
            pool = app.state.runtime.pool

            async def leased_sent() -> bool:
                return bool(
                    await pool.fetchval(
                        "SELECT status = 'sent' FROM deliveries WHERE recipient = $1", leased
                    )
                )

            await wait_for(leased_sent, what="the mail whose lease ran out")

            async def lost_unconfirmed() -> bool:
                status = await pool.fetchval("SELECT status FROM deliveries WHERE id = $1", lost)
                return bool(status == "unconfirmed")

            await wait_for(lost_unconfirmed, what="the stopped hand-over marked unconfirmed")
            log = await pool.fetchrow(
                "SELECT status, attempts FROM deliveries WHERE recipient = $1", leased
            )
            assert (log["status"], log["attempts"]) == ("sent", 1)
        assert count(smtp.accepted, leased) == 1
        assert count(smtp.rcpts, handed_over) == 0  # never handed over a second time
