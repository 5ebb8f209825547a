"""What a crash of the notifications process leaves behind, and what a restart does with it:
nothing lost; a mail handed over again carries the same Message-ID, so a receiver recognises
the repeat (R12), and a copy can be doubled only when the crash falls inside DATA."""

from __future__ import annotations

import asyncio
import email
import email.policy
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.contracts import RolesChanged
from tests.integration.notifications_support import (
    RefusingSmtp,
    address,
    count,
    envelope,
    notifications_app,
    notifications_settings,
    opening,
    person,
    publish,
)
from tests.notifications_samples import order_placed
from tests.support import Backing, ServiceProcess, deployment, wait_for

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
        "message_id": f"<{delivery_id}@subscription-platform>",
        **columns,
    }
    names = ", ".join(values)
    marks = ", ".join(f"${n}" for n in range(1, len(values) + 1))
    await conn.execute(f"INSERT INTO deliveries ({names}) VALUES ({marks})", *values.values())  # noqa: S608
    return delivery_id


async def test_r12_a_restart_sends_leased_and_stopped_hand_overs_with_their_message_ids(
    backing: Backing,
) -> None:
    """A worker died twice: once holding a lease on a mail it had not begun (that mail is sent
    after the lease runs out), once after recording the hand-over and before recording the
    server's answer (that mail may have arrived: it is handed over again, with its
    Message-ID)."""
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

            async def resent() -> bool:
                status = await pool.fetchval("SELECT status FROM deliveries WHERE id = $1", lost)
                return bool(status == "sent")

            await wait_for(resent, what="the stopped hand-over handed over again")
            log = await pool.fetchrow(
                "SELECT status, attempts FROM deliveries WHERE recipient = $1", leased
            )
            assert (log["status"], log["attempts"]) == ("sent", 1)
        assert count(smtp.accepted, leased) == 1
        assert count(smtp.accepted, handed_over) == 1
        ids = {parsed(raw)["To"]: parsed(raw)["Message-ID"] for raw in smtp.received}
        assert ids[handed_over] == f"<{lost}@subscription-platform>"


def parsed(raw: bytes) -> EmailMessage:
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


async def test_killed_inside_data_the_mail_is_resent_with_the_same_message_id(
    backing: Backing, tmp_path: Path
) -> None:
    """Finding 7: notifications is SIGKILLed while the server holds a mail's DATA unanswered.
    After the restart every mail is delivered; the one caught inside DATA arrives twice with one
    Message-ID (the only possible duplicate, counted), so the distinct Message-IDs received
    equal the mails queued."""
    buyer = address("buyer")
    account = uuid.uuid4()
    roles = RolesChanged(buyer=person(buyer), primary_admin=person(buyer))
    orders = [envelope(account, order_placed(f"ORD-K{n}", buyer)) for n in range(4)]
    async with RefusingSmtp() as smtp, deployment(backing, ("notifications",)) as dep:
        dep.extra_env.update(
            {
                "PLATFORM_SMTP_URL": smtp.smtp_url,
                "PLATFORM_SMTP_TIMEOUT_SECONDS": "2",
                "PLATFORM_DELIVERY_CONCURRENCY": "1",
                "PLATFORM_DELIVERY_BATCH_SIZE": "1",
            }
        )
        process = ServiceProcess(dep, "notifications", tmp_path)
        smtp.stall_data = True  # the first mail's DATA is taken and never answered
        process.start()
        try:
            await process.wait_ready()
            await publish(backing, dep, *opening(account, roles), *orders)
            await asyncio.wait_for(smtp.stalled.wait(), 60)
            process.kill()
            conn = await asyncpg.connect(dep.databases["notifications"])
            try:
                in_doubt = await conn.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'handing_over'"
                )
                assert in_doubt == 1, "the kill came outside DATA and proves nothing"
            finally:
                await conn.close()
            process.start()
            await process.wait_ready()

            async def all_sent() -> int:
                conn = await asyncpg.connect(dep.databases["notifications"])
                try:
                    rows = await conn.fetch("SELECT status, message_id FROM deliveries")
                finally:
                    await conn.close()
                return len(rows) if rows and {r["status"] for r in rows} == {"sent"} else 0

            mails = await wait_for(all_sent, timeout=90, what="every mail sent after the restart")
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"{dep.url('notifications')}/metrics")).text
        finally:
            process.stop()
    assert mails == len(orders) + 1  # the order confirmations and the admin-appointed mail
    ids = [str(parsed(raw)["Message-ID"]) for raw in smtp.received]
    assert len(set(ids)) == mails  # every mail arrived; a repeat carries its first Message-ID
    assert len(ids) == mails + 1  # the one caught inside DATA, and nothing else, twice
    [doubled] = [i for i in set(ids) if ids.count(i) == 2]
    assert ids[0] == doubled  # the stalled one
    assert 'platform_mails_possible_duplicates_total{reason="stopped_hand_over"} 1.0' in metrics
