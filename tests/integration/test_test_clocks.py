"""Test clocks across the four services: advance fires due work everywhere, in date order."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared.auth import issue_token
from shared.runtime import ServiceSpec, create_app, load_spec
from shared.time.clock import SystemClock
from shared.time.test_clocks import attach_account
from shared.timers import TimerContext, schedule
from tests.support import Backing, Deployment, deployment, wait_for

pytestmark = pytest.mark.integration
SERVICES = ("ordering", "invoicing", "lifecycle", "notifications")
T0 = datetime(2030, 1, 1, 9, 0, tzinfo=UTC)


@contextlib.asynccontextmanager
async def platform(
    dep: Deployment, specs: dict[str, ServiceSpec]
) -> AsyncIterator[dict[str, FastAPI]]:
    async with contextlib.AsyncExitStack() as stack:
        apps = {}
        for name, spec in specs.items():
            settings = dep.settings(name).model_copy(update={"test_clocks_enabled": True})
            app = create_app(spec, settings)
            await stack.enter_async_context(app.router.lifespan_context(app))
            apps[name] = app
        yield apps


async def test_advance_fires_due_timers_across_services_in_date_order(backing: Backing) -> None:
    fired: list[tuple[str, str, datetime]] = []

    def recorder(service: str) -> Any:
        async def record(ctx: TimerContext) -> None:
            fired.append((service, ctx.timer.key, ctx.clock.now()))
            follow_up = ctx.timer.payload.get("then")
            if follow_up:  # work that the fired work itself makes due
                await schedule(
                    ctx.conn,
                    kind="probe",
                    key=follow_up,
                    account_id=ctx.timer.account_id,
                    due_at=ctx.timer.due_at + timedelta(hours=12),
                )

        return record

    specs = {
        name: dataclasses.replace(
            load_spec(name), timers={**load_spec(name).timers, "probe": recorder(name)}
        )
        for name in SERVICES
    }
    async with deployment(backing, SERVICES) as dep, platform(dep, specs) as apps:
        lifecycle = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=apps["lifecycle"]), base_url="http://lifecycle"
        )
        operator = issue_token(
            dep.settings("lifecycle"), SystemClock(), subject=uuid.uuid4(), kind="operator"
        )
        auth = {"Authorization": f"Bearer {operator}"}
        created = await lifecycle.post(
            "/v1/test-clocks", headers=auth, json={"frozen_time": T0.isoformat()}
        )
        assert created.status_code == 201, created.text
        clock_id = created.json()["id"]

        async def status() -> str:
            return str(
                (await lifecycle.get(f"/v1/test-clocks/{clock_id}", headers=auth)).json()["status"]
            )

        async def ready() -> bool:
            return await status() == "ready"

        await wait_for(ready, timeout=30, what="the new clock to settle")
        account = uuid.uuid4()
        plan: dict[str, list[tuple[str, int, str | None]]] = {
            "invoicing": [("inv-day1", 1, "inv-day1-followup"), ("inv-day3", 3, None)],
            "notifications": [("note-day2", 2, None)],
            "ordering": [("ord-day20", 20, None)],  # beyond the target: must not fire
        }
        for service, timers in plan.items():
            async with apps[service].state.runtime.pool.acquire() as conn:
                await attach_account(conn, account, uuid.UUID(clock_id))
                for key, days, then in timers:
                    await schedule(
                        conn,
                        kind="probe",
                        key=key,
                        account_id=account,
                        due_at=T0 + timedelta(days=days),
                        payload={"then": then} if then else {},
                    )
        target = T0 + timedelta(days=10)
        advanced = await lifecycle.post(
            f"/v1/test-clocks/{clock_id}/advance", headers=auth, json={"to": target.isoformat()}
        )
        assert advanced.status_code == 202
        await wait_for(ready, timeout=60, what="the advance to settle")
        assert [key for _, key, _ in fired] == [
            "inv-day1",
            "inv-day1-followup",
            "note-day2",
            "inv-day3",
        ]
        # Each fired at its own due time, on the test clock, not the wall clock.
        assert [at for _, _, at in fired] == [
            T0 + timedelta(days=1),
            T0 + timedelta(days=1, hours=12),
            T0 + timedelta(days=2),
            T0 + timedelta(days=3),
        ]
        clock = (await lifecycle.get(f"/v1/test-clocks/{clock_id}", headers=auth)).json()
        assert datetime.fromisoformat(clock["now"]) == target
        back = await lifecycle.post(
            f"/v1/test-clocks/{clock_id}/advance", headers=auth, json={"to": T0.isoformat()}
        )
        assert back.status_code == 422  # forward only
        await lifecycle.aclose()


async def test_lag_meter_counts_what_a_group_has_not_committed(backing: Backing) -> None:
    """A test-clock step is not settled while any consumer still has messages to read."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from shared.time.test_clocks import LagMeter

    topic, group = f"lag-{uuid.uuid4().hex[:8]}", f"group-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=backing.kafka)
    await producer.start()
    for n in range(5):
        await producer.send_and_wait(topic, f"m{n}".encode(), key=b"k")
    await producer.stop()
    meter = LagMeter(backing.kafka)
    await meter.start()
    try:
        assert await meter.lag(group, [topic]) == 5  # nothing committed yet
        reader = AIOKafkaConsumer(
            topic,
            bootstrap_servers=backing.kafka,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await reader.start()
        read = 0
        while read < 3:
            batch = await reader.getmany(timeout_ms=1000, max_records=3 - read)
            for records in batch.values():
                read += len(records)
        await reader.commit()
        await reader.stop()
        assert await meter.lag(group, [topic]) == 2
    finally:
        await meter.stop()
