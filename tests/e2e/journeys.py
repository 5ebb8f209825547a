"""The whole life of a subscription, driven by test clocks across the four service processes."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx

from shared.auth import issue_token
from shared.time.clock import SystemClock
from tests.support import Backing, Deployment, MailCatcher, wait_for

SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")
OSLO = ZoneInfo("Europe/Oslo")

# R35, written out here (not read from lifecycle's stages.json) so journeys check the rule itself.
ACTIVE = {
    "product_access": "full",
    "user_management": "full",
    "downloads_uploads": "full",
    "insight_reporting": "full",
    "product_support": "full",
}
EXPIRED = {
    "product_access": "full",
    "user_management": "full",
    "downloads_uploads": "no_upgrades",
    "insight_reporting": "none",
    "product_support": "self_help",
}
SUSPENDED = {
    "product_access": "none",
    "user_management": "assignments_preserved",
    "downloads_uploads": "none",
    "insight_reporting": "none",
    "product_support": "self_help",
}
CANCELLED = {
    "product_access": "none",
    "user_management": "assignments_deleted",
    "downloads_uploads": "none",
    "insight_reporting": "none",
    "product_support": "self_help",
}


def local(y: int, m: int, d: int, h: int = 0, mi: int = 0, s: int = 0) -> datetime:
    """An Oslo wall-clock time as a UTC instant."""
    return datetime(y, m, d, h, mi, s, tzinfo=OSLO).astimezone(UTC)


@dataclass
class Account:
    id: str
    buyer_email: str
    token: str
    clock_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Journey:
    """One customer's story on its own test clock; every call goes through the public APIs."""

    def __init__(self, dep: Deployment, backing: Backing, client: httpx.AsyncClient) -> None:
        self.dep = dep
        self.http = client
        self.mail = MailCatcher(backing)
        operator = issue_token(
            dep.settings("lifecycle"),
            SystemClock(),
            subject=uuid.uuid4(),
            kind="operator",
            ttl=timedelta(hours=2),
        )
        self.operator = {"Authorization": f"Bearer {operator}"}
        self.clock_id = ""
        self.timings: list[tuple[str, float]] = []

    def url(self, service: str, path: str) -> str:
        return f"{self.dep.url(service)}{path}"

    async def start_clock(self, at: datetime) -> None:
        created = await self.http.post(
            self.url("lifecycle", "/v1/test-clocks"),
            headers=self.operator,
            json={"frozen_time": at.isoformat(), "name": "journey"},
        )
        assert created.status_code == 201, created.text
        self.clock_id = created.json()["id"]
        await self.settled("clock created")

    async def clock(self) -> dict[str, Any]:
        response = await self.http.get(
            self.url("lifecycle", f"/v1/test-clocks/{self.clock_id}"), headers=self.operator
        )
        data: dict[str, Any] = response.json()
        return data

    async def settled(self, what: str, timeout: float = 90) -> None:
        started = time.monotonic()

        async def ready() -> bool:
            return bool((await self.clock())["status"] == "ready")

        await wait_for(ready, timeout=timeout, what=f"the test clock to settle ({what})")
        self.timings.append((what, time.monotonic() - started))

    async def advance(self, to: datetime, what: str = "") -> None:
        response = await self.http.post(
            self.url("lifecycle", f"/v1/test-clocks/{self.clock_id}/advance"),
            headers=self.operator,
            json={"to": to.isoformat()},
        )
        assert response.status_code == 202, response.text
        await self.settled(what or f"advance to {to.isoformat()}")

    async def now(self) -> datetime:
        return datetime.fromisoformat((await self.clock())["now"])

    async def open_account(
        self,
        *,
        country: str = "NO",
        currency: str = "NOK",
        language: str = "en",
        time_zone: str = "Europe/Oslo",
    ) -> Account:
        buyer = f"buyer-{uuid.uuid4().hex[:10]}@example.com"
        response = await self.http.post(
            self.url("ordering", "/v1/accounts"),
            headers={**self.operator, "Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Fjord Arkitekter AS",
                "country": country,
                "currency": currency,
                "language": language,
                "time_zone": time_zone,
                "test_clock_id": self.clock_id,
                "buyer": {"email": buyer, "name": "Kari Nordmann"},
            },
        )
        assert response.status_code == 201, response.text
        body = response.json()
        return Account(body["id"], buyer, body["token"], self.clock_id)

    async def post(
        self,
        service: str,
        path: str,
        who: dict[str, str],
        body: dict[str, Any] | None = None,
        expect: int = 201,
    ) -> dict[str, Any]:
        response = await self.http.post(
            self.url(service, path),
            headers={**who, "Idempotency-Key": str(uuid.uuid4())},
            json=body or {},
        )
        assert response.status_code == expect, f"{path}: {response.status_code} {response.text}"
        data: dict[str, Any] = response.json()
        return data

    async def get(self, service: str, path: str, who: dict[str, str]) -> Any:
        response = await self.http.get(self.url(service, path), headers=who)
        assert response.status_code == 200, f"{path}: {response.status_code} {response.text}"
        return response.json()

    async def subscription(self, account: Account, subscription_id: str) -> dict[str, Any]:
        data: dict[str, Any] = await self.get(
            "lifecycle", f"/v1/subscriptions/{subscription_id}", account.auth
        )
        return data

    async def invoices(self, account: Account) -> list[dict[str, Any]]:
        data = await self.get("invoicing", f"/v1/accounts/{account.id}/invoices", account.auth)
        items: list[dict[str, Any]] = data["items"]
        return sorted(items, key=lambda i: (i["issued_at"], i["invoice_number"]))

    async def deliveries(self, account: Account) -> list[dict[str, Any]]:
        """The delivery log, oldest first (templates, recipients, roles, status)."""
        data = await self.get(
            "notifications", f"/v1/accounts/{account.id}/emails?limit=500", account.auth
        )
        items: list[dict[str, Any]] = data["items"]
        return sorted(items, key=lambda d: (d["created_at"], d["recipient"]))

    async def mails_to(self, account: Account, address: str) -> list[str]:
        """Templates of the mails sent to ``address`` (from the delivery log), in order."""
        return [
            d["template"]
            for d in await self.deliveries(account)
            if d["recipient"] == address.lower() and d["status"] == "sent"
        ]
