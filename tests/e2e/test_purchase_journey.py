"""One purchase through all four services, each its own OS process, on the real stack."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support import Backing, Deployment, MailCatcher, ServiceProcess, deployment, wait_for

pytestmark = pytest.mark.e2e
SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")


@pytest.fixture(scope="module")
async def platform(
    backing: Backing, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    logs = tmp_path_factory.mktemp("e2e-logs")
    async with deployment(backing, SERVICES) as dep:
        processes = [ServiceProcess(dep, s, logs) for s in SERVICES]
        for process in processes:
            process.start()
        try:
            for process in processes:
                await process.wait_ready()
            yield dep
        finally:
            for process in processes:
                process.stop()


async def test_r1_r9_r18_r23_card_purchase_end_to_end(
    platform: Deployment, backing: Backing
) -> None:
    """Account → order → invoice with Norwegian VAT (R18) → subscription dates (R23) →
    order confirmation mailed to the buyer (R9), who is also primary admin (R1)."""
    buyer_email = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(timeout=10) as client:
        opened = await client.post(
            f"{platform.url('ordering')}/v1/accounts",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Fjord Arkitekter AS",
                "country": "NO",
                "currency": "NOK",
                "language": "nb",
                "time_zone": "Europe/Oslo",
                "buyer": {"email": buyer_email, "name": "Kari Nordmann"},
            },
        )
        assert opened.status_code == 201, opened.text
        account = opened.json()
        assert set(account["roles"]) == {"buyer", "primary_admin"}
        auth = {"Authorization": f"Bearer {account['token']}"}
        order_key = str(uuid.uuid4())
        order_body = {"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"}
        placed = await client.post(
            f"{platform.url('ordering')}/v1/accounts/{account['id']}/orders",
            headers={**auth, "Idempotency-Key": order_key},
            json=order_body,
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()
        repeated = await client.post(
            f"{platform.url('ordering')}/v1/accounts/{account['id']}/orders",
            headers={**auth, "Idempotency-Key": order_key},
            json=order_body,
        )
        assert repeated.json()["order_number"] == order["order_number"]

        async def invoices() -> list[dict[str, Any]]:
            r = await client.get(
                f"{platform.url('invoicing')}/v1/accounts/{account['id']}/invoices", headers=auth
            )
            items: list[dict[str, Any]] = r.json()["items"] if r.status_code == 200 else []
            return [i for i in items if i["status"] == "paid"]

        [invoice] = await wait_for(invoices, what="the paid invoice")
        detail = (
            await client.get(
                f"{platform.url('invoicing')}/v1/invoices/{invoice['id']}", headers=auth
            )
        ).json()
        net, vat = Decimal(detail["net_total"]), Decimal(detail["vat_total"])
        assert vat == (net * Decimal("0.25")).quantize(Decimal("0.01"))
        assert Decimal(detail["gross_total"]) == net + vat
        assert [Decimal(line["vat_rate"]) for line in detail["lines"]] == [Decimal(25)]

        async def subscription() -> dict[str, Any] | None:
            r = await client.get(
                f"{platform.url('lifecycle')}/v1/subscriptions/{order['subscription_id']}",
                headers=auth,
            )
            return r.json() if r.status_code == 200 else None

        sub = await wait_for(subscription, what="the active subscription")
        assert sub["stage"] == "active"
        placed_at = datetime.fromisoformat(order["placed_at"])
        expires = datetime.fromisoformat(sub["expires_at"])
        assert (expires - placed_at).days in (364, 365)

        catcher = MailCatcher(backing)

        async def confirmation() -> list[dict[str, Any]]:
            return [
                m for m in await catcher.to(buyer_email) if order["order_number"] in m["subject"]
            ]

        [mail] = await wait_for(confirmation, what="the order confirmation mail")
        assert mail["subject"] == f"Ordrebekreftelse {order['order_number']}"  # R13: nb

        async def logged() -> list[dict[str, Any]]:
            r = await client.get(
                f"{platform.url('notifications')}/v1/accounts/{account['id']}/emails", headers=auth
            )
            items = r.json()["items"]
            return [
                d for d in items if d["status"] == "sent" and d["template"] == "order_confirmation"
            ]

        [delivery] = await wait_for(logged, what="the delivery log entry")
        assert delivery["recipient"] == buyer_email and delivery["roles"] == ["buyer"]

        metrics = (await client.get(f"{platform.url('invoicing')}/metrics")).text
        done = [
            line
            for line in metrics.splitlines()
            if line.startswith(
                'platform_events_consumed_total{consumer="invoicing",outcome="done"}'
            )
        ]
        assert done and float(done[0].split()[-1]) >= 3  # AccountOpened, RolesChanged, OrderPlaced
        assert "platform_events_published_total" in metrics
