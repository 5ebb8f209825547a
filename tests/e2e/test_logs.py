"""Logs an operator can search (issue 14): one JSON object per line from every service, with the
ids of what was being done, and no personal data."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.journeys import SERVICES
from tests.support import Backing, ServiceProcess, deployment, wait_for

pytestmark = pytest.mark.e2e
BUYER_EMAIL = f"logs-{uuid.uuid4().hex[:8]}@example.com"
BUYER_NAME = "Ingrid Loggestad"
COMPANY = "Loggfjord Personvern AS"


def read_lines(folder: Path) -> list[str]:
    return [
        line
        for path in sorted(folder.glob("*.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


async def test_every_line_is_json_with_ids_and_no_personal_data(
    backing: Backing, tmp_path: Path
) -> None:
    async with deployment(backing, SERVICES) as dep:
        dep.extra_env["PLATFORM_LOG_LEVEL"] = "INFO"
        processes = [ServiceProcess(dep, s, tmp_path) for s in SERVICES]
        for process in processes:
            process.start()
        try:
            for process in processes:
                await process.wait_ready()
            async with httpx.AsyncClient(timeout=15) as client:
                opened = await client.post(
                    f"{dep.url('ordering')}/v1/accounts",
                    headers={"Idempotency-Key": str(uuid.uuid4()), "X-Request-ID": "req-logs-1"},
                    json={
                        "name": COMPANY,
                        "country": "NO",
                        "currency": "NOK",
                        "language": "nb",
                        "time_zone": "Europe/Oslo",
                        "buyer": {"email": BUYER_EMAIL, "name": BUYER_NAME},
                    },
                )
                assert opened.headers["X-Request-ID"] == "req-logs-1"
                account = opened.json()
                auth = {"Authorization": f"Bearer {account['token']}"}
                ordered = await client.post(
                    f"{dep.url('ordering')}/v1/accounts/{account['id']}/orders",
                    headers={**auth, "Idempotency-Key": str(uuid.uuid4())},
                    json={
                        "offering": "autocad",
                        "term": "annual",
                        "seats": 1,
                        "payment_method": "card",
                    },
                )
                assert ordered.status_code == 201, ordered.text
                assert uuid.UUID(ordered.headers["X-Request-ID"])  # a new id when none came

                async def confirmation_sent() -> bool:
                    mails = await client.get(
                        f"{dep.url('notifications')}/v1/accounts/{account['id']}/emails",
                        headers=auth,
                    )
                    if mails.status_code != 200:  # the roles may not have arrived yet
                        return False
                    return any(
                        m["template"] == "order_confirmation" and m["status"] == "sent"
                        for m in mails.json()["items"]
                    )

                await wait_for(confirmation_sent, timeout=60, what="the order confirmation sent")
        finally:
            for process in processes:
                process.stop()

    lines = read_lines(tmp_path)
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {r["service"] for r in records} == set(SERVICES)
    assert all({"time", "level", "service", "logger", "message"} <= r.keys() for r in records)
    consumed = [r for r in records if r.get("event_type") == "OrderPlaced"]
    assert consumed, "no line names the OrderPlaced it handled"
    for record in consumed:
        assert record["account_id"] == account["id"]
        assert uuid.UUID(record["event_id"]) and uuid.UUID(record["correlation_id"])
    text = "\n".join(lines)
    for personal in (BUYER_EMAIL, BUYER_NAME, COMPANY, "Loggfjord"):
        assert personal not in text, f"{personal!r} is in a log line"
