"""SIGKILL a service mid-flight, restart it: nothing lost, nothing doubled."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from shared.contracts import Envelope
from shared.topics import Topics
from tests.integration.conftest import read_topic
from tests.support import Backing, Deployment, ServiceProcess, deployment, wait_for

pytestmark = pytest.mark.integration
SERVICES = ("ordering", "invoicing", "lifecycle")
ORDERS = 60


@pytest.fixture
async def stack(
    backing: Backing, tmp_path: Path
) -> AsyncIterator[tuple[Deployment, dict[str, ServiceProcess]]]:
    async with deployment(backing, SERVICES) as dep:
        processes = {s: ServiceProcess(dep, s, tmp_path) for s in SERVICES}
        for process in processes.values():
            process.start()
        try:
            for process in processes.values():
                await process.wait_ready()
            yield dep, processes
        finally:
            for process in processes.values():
                process.stop()


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


async def test_invoicing_killed_mid_flight_loses_and_doubles_nothing(
    backing: Backing, stack: tuple[Deployment, dict[str, ServiceProcess]]
) -> None:
    dep, processes = stack
    async with httpx.AsyncClient(timeout=15) as client:
        opened = await client.post(
            f"{dep.url('ordering')}/v1/accounts",
            headers={"Idempotency-Key": str(uuid.uuid4())},
            json={
                "name": "Crash AS",
                "country": "NO",
                "currency": "NOK",
                "language": "en",
                "time_zone": "Europe/Oslo",
                "buyer": {"email": "crash@example.com", "name": "Crash Tester"},
            },
        )
        account = opened.json()
        headers = {"Authorization": f"Bearer {account['token']}"}

        async def place(n: int) -> None:
            response = await client.post(
                f"{dep.url('ordering')}/v1/accounts/{account['id']}/orders",
                headers={**headers, "Idempotency-Key": f"crash-{n}"},
                json={
                    "offering": "revit",
                    "term": "annual",
                    "seats": 1 + n % 3,
                    "payment_method": "card",
                },
            )
            assert response.status_code == 201, response.text

        placing = asyncio.gather(*(place(n) for n in range(ORDERS)))
        invoices_sql = "SELECT count(*) FROM invoices"

        async def some_invoiced() -> bool:
            return await count(dep.databases["invoicing"], invoices_sql) >= 3

        await wait_for(some_invoiced, what="the first invoices")
        processes["invoicing"].kill()
        at_kill = await count(dep.databases["invoicing"], invoices_sql)
        await placing
        processes["invoicing"].start()
        await processes["invoicing"].wait_ready()

    async def all_invoiced() -> bool:
        return await count(dep.databases["invoicing"], invoices_sql) >= ORDERS

    await wait_for(all_invoiced, timeout=60, what=f"{ORDERS} invoices")
    assert at_kill < ORDERS, "the kill came too late to prove anything"
    inv = dep.databases["invoicing"]
    assert await count(inv, invoices_sql) == ORDERS
    assert await count(inv, "SELECT count(DISTINCT order_id) FROM invoices") == ORDERS
    assert await count(inv, "SELECT count(*) FROM payments") == ORDERS
    assert (
        await count(inv, "SELECT max(substring(invoice_number from 5)::int) FROM invoices")
        == ORDERS
    )
    assert await count(dep.databases["ordering"], "SELECT count(*) FROM orders") == ORDERS

    async def all_active() -> bool:
        return (
            await count(dep.databases["lifecycle"], "SELECT count(*) FROM subscriptions") >= ORDERS
        )

    await wait_for(all_active, what="every subscription")

    async def published() -> bool:
        return await count(inv, "SELECT count(*) FROM outbox WHERE published_at IS NULL") == 0

    await wait_for(published, what="invoicing's outbox drained")
    records = await read_topic(
        backing.kafka, Topics(dep.prefix).events("invoicing"), expected=4 * ORDERS
    )
    issued = {
        Envelope.model_validate_json(r.value).payload["invoice_id"]
        for r in records
        if dict(r.headers).get("event_type") == b"InvoiceIssued"
    }
    assert len(issued) == ORDERS  # every invoice announced (a crash may repeat, never lose)
