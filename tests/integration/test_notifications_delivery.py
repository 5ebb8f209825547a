"""Notifications over the real Kafka, PostgreSQL and SMTP: R9-R12 end to end, redelivery,
an SMTP outage, and a permanent refusal."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.auth import issue_token
from shared.contracts import InvoiceIssued, RolesChanged, StageChanged
from shared.time.clock import FrozenClock, SystemClock
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.integration.notifications_support import (
    OwnMaildev,
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
from tests.notifications_samples import order_placed, samples
from tests.support import Backing, MailCatcher, deployment, wait_for

pytestmark = pytest.mark.integration


def invoice(payer_emails: list[str]) -> InvoiceIssued:
    sample = samples()["InvoiceIssued"]
    assert isinstance(sample, InvoiceIssued)
    return sample.model_copy(update={"invoice_id": uuid.uuid4(), "payer_emails": payer_emails})


async def received(catcher: MailCatcher, addresses: list[str]) -> dict[str, list[str]]:
    """Address -> subjects of every mail it received."""
    mails = await catcher.messages()
    return {a: [m["subject"] for m in mails if a in m["to"]] for a in addresses}


async def test_r9_r10_r11_r12_each_address_once_even_when_the_event_comes_again(
    backing: Backing,
) -> None:
    """Kari is buyer + primary admin + payer, Ola a secondary admin, Per a payer, and the
    invoice also names an accounts-payable address. The invoice event arrives twice, then once
    more after its inbox row is gone: each address still gets each mail once (R12)."""
    kari, ola, per, ap = (address(r) for r in ("kari", "ola", "per", "ap"))
    account = uuid.uuid4()
    roles = RolesChanged(
        buyer=person(kari, "nb"),
        primary_admin=person(kari, "nb"),
        secondary_admins=[person(ola)],
        payers=[person(kari, "nb"), person(per)],
    )
    billed = envelope(account, invoice([per, ap]))
    stage = envelope(
        account,
        StageChanged(
            from_stage="active",
            to_stage="suspended",
            reason="not renewed",
            entitlements={"product_access": "none"},
            effective_at=datetime.now(UTC),
        ),
    )
    sentinel = envelope(account, order_placed("ORD-SENTINEL", kari))
    catcher = MailCatcher(backing)
    async with (
        deployment(backing, ("notifications",)) as dep,
        notifications_app(notifications_settings(dep)) as app,
    ):
        pool = app.state.runtime.pool
        await publish(backing, dep, *opening(account, roles), billed, billed, stage)

        async def invoice_arrived() -> list[str]:
            return (await received(catcher, [ap]))[ap]

        await wait_for(invoice_arrived, what="the invoice mail to accounts payable")
        # Lose the inbox row: the unique (event, address) key alone must hold.
        await pool.execute("DELETE FROM inbox WHERE event_id = $1", billed.event_id)
        await publish(backing, dep, billed, sentinel)

        async def sentinel_arrived() -> list[str]:
            return [s for s in (await received(catcher, [kari]))[kari] if "ORD-SENTINEL" in s]

        await wait_for(sentinel_arrived, what="the sentinel order confirmation")
        got = await received(catcher, [kari, ola, per, ap])
        assert sorted(got[kari]) == sorted(
            [
                "Du er nå administrator for Fjord Arkitekter AS",  # R10: became primary admin
                "Faktura INV-2025-0001, avdrag 2 av 3",  # R9/R11 once, though three roles
                "abonnementet er nå Suspendert",  # the buyer's stage mail wins (R12)
                "Ordrebekreftelse ORD-SENTINEL",
            ]
        )
        assert sorted(got[ola]) == sorted(
            [
                "You are now an administrator of Fjord Arkitekter AS",
                "Product access has changed",  # R10: no billing or renewal mail
            ]
        )
        assert got[per] == ["Your invoice INV-2025-0001, installment 2 of 3"]  # R11: invoices only
        assert got[ap] == ["Your invoice INV-2025-0001, installment 2 of 3"]

        # The delivery log: the buyer and operators read it, an admin who is not buyer may not.
        rows = await pool.fetch(
            "SELECT recipient, status FROM deliveries WHERE event_id = $1", billed.event_id
        )
        assert sorted((r["recipient"], r["status"]) for r in rows) == sorted(
            (a, "sent") for a in (kari, per, ap)
        )
        kari_id = roles.buyer.user_id
        settings, clock = app.state.runtime.settings, SystemClock()
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://n") as client:

            async def log_as(subject: uuid.UUID, kind: str = "user") -> httpx.Response:
                token = issue_token(settings, clock, subject=subject, kind=kind)  # type: ignore[arg-type]
                return await client.get(
                    f"/v1/accounts/{account}/emails",
                    headers={"Authorization": f"Bearer {token}"},
                )

            mine = await log_as(kari_id)
            assert mine.status_code == 200
            logged = mine.json()["items"]
            assert len(logged) == 8 and {i["status"] for i in logged} == {"sent"}
            assert "body_text" not in logged[0] and "body_html" not in logged[0]
            assert (await log_as(roles.secondary_admins[0].user_id)).status_code == 403
            assert (await log_as(uuid.uuid4(), "operator")).status_code == 200


async def test_smtp_server_down_for_30_seconds_every_mail_arrives_once(
    backing: Backing, tmp_path: Path
) -> None:
    """Mails due while the SMTP server is away are retried from the deliveries table with
    backoff, and each arrives exactly once when it is back (R12)."""
    maildev = OwnMaildev(backing, tmp_path / "maildev")
    await maildev.start()
    try:
        accounts = [uuid.uuid4() for _ in range(2)]
        buyers = {a: address("buyer") for a in accounts}
        payers = {a: address("payer") for a in accounts}
        events = []
        for account in accounts:
            roles = RolesChanged(
                buyer=person(buyers[account]),
                primary_admin=person(buyers[account]),
                payers=[person(payers[account])],
            )
            events += opening(account, roles)
            events += [
                envelope(account, order_placed(f"ORD-{account.hex[:6]}", buyers[account])),
                envelope(account, invoice([])),
            ]
        # buyer: admin_appointed + order + invoice; payer: invoice
        expected = {b: 3 for b in buyers.values()} | {p: 1 for p in payers.values()}
        async with (
            deployment(backing, ("notifications",)) as dep,
            notifications_app(notifications_settings(dep, smtp_url=maildev.smtp_url)) as app,
        ):
            pool = app.state.runtime.pool
            await maildev.stop()
            stopped_at = time.monotonic()
            await publish(backing, dep, *events)

            async def all_failed_once() -> bool:
                failed = await pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'pending' AND attempts >= 1"
                )
                return bool(failed == sum(expected.values()))

            await wait_for(all_failed_once, what="every mail due and refused a connection")
            # The outage itself, not a synchronisation: the server stays away for 30 s.
            await asyncio.sleep(max(0.0, 30 - (time.monotonic() - stopped_at)))
            await maildev.start()

            async def all_arrived() -> dict[str, list[str]] | None:
                got = await received(maildev.catcher, list(expected))
                return (
                    got
                    if all(got[a] for a in expected)
                    and sum(len(s) for s in got.values()) >= sum(expected.values())
                    else None
                )

            await wait_for(all_arrived, timeout=90, what="every mail after the outage")

            async def all_recorded() -> bool:  # a batch is recorded after its last DATA
                sent = "SELECT count(*) FROM deliveries WHERE status = 'sent'"
                return bool(await pool.fetchval(sent) == sum(expected.values()))

            await wait_for(all_recorded, what="every mail recorded sent")
            got = await received(maildev.catcher, list(expected))
            assert {a: len(subjects) for a, subjects in got.items()} == expected
            assert await pool.fetchval("SELECT min(attempts) FROM deliveries") >= 2
    finally:
        await maildev.stop()


async def test_a_5xx_refusal_is_email_failed_and_never_retried(
    backing: Backing, caplog: pytest.LogCaptureFixture
) -> None:
    """550 to RCPT: the delivery is failed, EmailFailed is published, and even a day later
    nothing is sent to that address again; the logs name neither address nor subject."""
    buyer, refused = address("buyer"), address("reject")
    account = uuid.uuid4()
    roles = RolesChanged(buyer=person(buyer), primary_admin=person(buyer), payers=[person(refused)])
    billed = envelope(account, invoice([]))
    clock = FrozenClock(datetime.now(UTC))
    caplog.set_level(logging.DEBUG, logger="services.notifications")
    async with (
        RefusingSmtp() as smtp,
        deployment(backing, ("notifications",)) as dep,
        notifications_app(notifications_settings(dep, smtp_url=smtp.smtp_url), clock) as app,
    ):
        pool = app.state.runtime.pool
        await publish(backing, dep, *opening(account, roles), billed)
        topic = Topics(dep.prefix).events("notifications")
        records = await read_topic(backing.kafka, topic, expected=3)  # 2 sent + 1 failed
        events: list[dict[str, Any]] = [json.loads(r.value) for r in records]
        failed = [e for e in events if e["event_type"] == "EmailFailed"]
        assert len(failed) == 1
        assert failed[0]["payload"]["recipient"] == refused
        assert failed[0]["payload"]["permanent"] is True
        assert failed[0]["payload"]["reason"].startswith("550")
        row = await pool.fetchrow(
            "SELECT status, attempts FROM deliveries WHERE recipient = $1", refused
        )
        assert (row["status"], row["attempts"]) == ("failed", 1)

        # A day later, another mail goes out; any retry of the refused one would be due first.
        clock.advance(timedelta(days=1))
        await publish(backing, dep, envelope(account, order_placed("ORD-LATER", buyer)))

        async def later_sent() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT count(*) FROM deliveries WHERE status = 'sent' AND subject LIKE $1",
                    "%ORD-LATER%",
                )
            )

        await wait_for(later_sent, what="the later order confirmation")
        assert count(smtp.rcpts, refused) == 1
        assert refused not in smtp.accepted
        assert count(smtp.accepted, buyer) == 3  # admin_appointed, invoice, ORD-LATER
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "550" in logged  # the refusal is logged ...
    assert refused not in logged and buyer not in logged  # ... without personal data
    assert "INV-2025-0001" not in logged  # nor subjects
