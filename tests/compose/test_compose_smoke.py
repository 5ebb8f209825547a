"""The compose deployment (deploy/docker-compose.yml) as shipped: one purchase through the four
service containers, Kafka, PostgreSQL and Mailpit. Run by ``make compose-smoke``
(deploy/images/compose smoke), which brings the deployment up and passes its addresses in
COMPOSE_*_URL; skipped when they are absent."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tests.support import Backing, MailCatcher, wait_for

URLS = {
    s: os.environ.get(f"COMPOSE_{s.upper()}_URL", "")
    for s in ("ordering", "invoicing", "lifecycle", "notifications", "mailpit")
}
pytestmark = pytest.mark.skipif(
    not all(URLS.values()), reason="needs a compose deployment: make compose-smoke"
)


async def test_r9_r18_r23_purchase_through_the_compose_deployment() -> None:
    """Order → paid invoice with Norwegian VAT (R18) → active subscription (R23) → the order
    confirmation (R9), read whole from Mailpit: every hop crosses containers."""
    buyer = f"buyer-{uuid.uuid4().hex[:8]}@example.com"
    async with httpx.AsyncClient(timeout=15) as client:
        for service in ("ordering", "invoicing", "lifecycle", "notifications"):
            ready = await client.get(f"{URLS[service]}/ready")
            assert ready.status_code == 200, (service, ready.text)
        opened = await client.post(
            f"{URLS['ordering']}/v1/accounts",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Fjord Arkitekter AS",
                "country": "NO",
                "currency": "NOK",
                "language": "nb",
                "time_zone": "Europe/Oslo",
                "buyer": {"email": buyer, "name": "Kari Nordmann"},
            },
        )
        assert opened.status_code == 201, opened.text
        account = opened.json()
        auth = {"Authorization": f"Bearer {account['token']}"}
        placed = await client.post(
            f"{URLS['ordering']}/v1/accounts/{account['id']}/orders",
            headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
            json={"offering": "autocad", "term": "annual", "seats": 1, "payment_method": "card"},
        )
        assert placed.status_code == 201, placed.text
        order = placed.json()

        async def paid() -> list[dict[str, Any]]:
            r = await client.get(
                f"{URLS['invoicing']}/v1/accounts/{account['id']}/invoices", headers=auth
            )
            items: list[dict[str, Any]] = r.json()["items"] if r.status_code == 200 else []
            return [i for i in items if i["status"] == "paid"]

        [invoice] = await wait_for(paid, timeout=60, what="the paid invoice")
        detail = (
            await client.get(f"{URLS['invoicing']}/v1/invoices/{invoice['id']}", headers=auth)
        ).json()
        net, vat = Decimal(detail["net_total"]), Decimal(detail["vat_total"])
        assert vat == (net * Decimal("0.25")).quantize(Decimal("0.01")) and net > 0

        async def active() -> dict[str, Any] | None:
            r = await client.get(
                f"{URLS['lifecycle']}/v1/subscriptions/{order['subscription_id']}", headers=auth
            )
            return r.json() if r.status_code == 200 and r.json()["stage"] == "active" else None

        sub = await wait_for(active, timeout=60, what="the active subscription")
        expires = datetime.fromisoformat(sub["expires_at"])
        assert (expires - datetime.fromisoformat(order["placed_at"])).days in (364, 365)

    catcher = MailCatcher(
        Backing(
            kafka="", postgres_dsn="", smtp_url="", mail_api=URLS["mailpit"], mail_kind="mailpit"
        )
    )

    async def confirmation() -> list[dict[str, Any]]:
        return [m for m in await catcher.to(buyer) if order["order_number"] in m["subject"]]

    [mail] = await wait_for(confirmation, timeout=60, what="the order confirmation in Mailpit")
    assert mail["subject"] == f"Ordrebekreftelse {order['order_number']}"  # R13: nb
    # The whole text body (not Mailpit's 250-character snippet) names the order and the buyer.
    assert order["order_number"] in mail["text"]
    assert len(mail["text"]) > 250, mail["text"]
