"""Test clocks: created and advanced by operators; lifecycle drives every service's time.

``POST /v1/test-clocks`` creates a clock frozen at a time; accounts opened with its id follow it.
``POST /v1/test-clocks/{id}/advance`` moves it forward (never back) to a target, in steps: each
step goes to the earliest time any service still has due for the clock, or to the target; the
clock reports ``advancing`` until every step has settled across the four services (see
shared/time/test_clocks.py for the protocol), then ``ready``. Refused unless
``PLATFORM_TEST_CLOCKS_ENABLED`` is true; operator tokens only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any

from aiokafka import AIOKafkaConsumer
from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from shared.auth import verify_token
from shared.db import Conn
from shared.problems import Problem, not_found
from shared.runtime import Runtime, as_json, runtime_of
from shared.time.test_clocks import ClockMessage, LagMeter, set_clock_time

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/test-clocks", tags=["test clocks"])
Authorization = Annotated[str | None, Header()]


class NewClock(BaseModel):
    model_config = ConfigDict(extra="forbid")
    frozen_time: AwareDatetime
    name: str = Field("test clock", max_length=200)


class Advance(BaseModel):
    model_config = ConfigDict(extra="forbid")
    to: AwareDatetime


def _operator_only(request: Request, authorization: str | None) -> Runtime:
    rt = runtime_of(request)
    if not rt.settings.test_clocks_enabled:
        raise Problem(
            404,
            "test-clocks-disabled",
            "Test clocks are disabled",
            "Set PLATFORM_TEST_CLOCKS_ENABLED=true on every service to use test clocks.",
        )
    who = verify_token(rt.settings, rt.clock, authorization)
    if who.kind != "operator":
        raise Problem(403, "operator-only", "Operators only", "Test clocks are for operators.")
    return rt


async def _get(conn: Conn, clock_id: uuid.UUID) -> dict[str, Any]:
    row = await conn.fetchrow("SELECT * FROM test_clocks WHERE id = $1", clock_id)
    if row is None:
        raise not_found("test clock")
    return dict(row)


@router.post("", status_code=201)
async def create_clock(
    body: NewClock, request: Request, authorization: Authorization = None
) -> JSONResponse:
    rt = _operator_only(request, authorization)
    clock_id = uuid.uuid4()
    async with rt.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            """INSERT INTO test_clocks (id, name, now, target, status, step, created_at)
               VALUES ($1, $2, $3, $3, 'advancing', 0, $4)""",
            clock_id,
            body.name,
            body.frozen_time,
            rt.clock.now(),
        )
        await set_clock_time(conn, clock_id, body.frozen_time)
        clock = await _get(conn, clock_id)
    return JSONResponse(as_json(clock), status_code=201)


@router.get("/{clock_id}")
async def get_clock(
    clock_id: uuid.UUID, request: Request, authorization: Authorization = None
) -> dict[str, Any]:
    rt = _operator_only(request, authorization)
    async with rt.pool.acquire() as conn:
        return as_json(await _get(conn, clock_id))  # type: ignore[no-any-return]


@router.post("/{clock_id}/advance", status_code=202)
async def advance_clock(
    clock_id: uuid.UUID, body: Advance, request: Request, authorization: Authorization = None
) -> JSONResponse:
    rt = _operator_only(request, authorization)
    async with rt.pool.acquire() as conn, conn.transaction():
        clock = await _get(conn, clock_id)
        if body.to <= clock["target"]:
            raise Problem(
                422,
                "clock-forward-only",
                "A test clock only moves forward",
                f"Advance to a time after {clock['target'].isoformat()}.",
                errors=[{"field": "to", "message": "must be later than the clock's time"}],
            )
        await conn.execute(
            "UPDATE test_clocks SET target = $2, status = 'advancing' WHERE id = $1",
            clock_id,
            body.to,
        )
        clock = await _get(conn, clock_id)
    return JSONResponse(as_json(clock), status_code=202)


@dataclass
class StepState:
    step: int
    now: datetime
    quiet_checks: int = 0
    probe: int = 0  # the last probe sent; a fresh report echoes it


class ClockDriver:
    """Drives advancing clocks step by step (one lifecycle replica drives at a time)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.topic = rt.topics.test_clocks()
        self.services = [s.strip() for s in rt.settings.test_clock_services.split(",") if s]
        self.reports: dict[tuple[uuid.UUID, str], ClockMessage] = {}
        self.steps: dict[uuid.UUID, StepState] = {}
        self.lag = LagMeter(rt.settings.kafka_bootstrap_servers)

    async def run(self) -> None:
        reader = AIOKafkaConsumer(
            self.topic,
            bootstrap_servers=self.rt.settings.kafka_bootstrap_servers,
            group_id=self.rt.topics.group("lifecycle.clock-driver"),
            auto_offset_reset="latest",
        )
        await reader.start()
        await self.lag.start()
        listening = asyncio.create_task(self._listen(reader))
        try:
            while True:
                try:
                    await self.tick()
                except Exception as error:  # keep driving; the next tick retries
                    log.warning("clock driver: %r", error)
                await asyncio.sleep(0.05)
        finally:
            listening.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listening
            await reader.stop()
            await self.lag.stop()

    async def _listen(self, reader: AIOKafkaConsumer) -> None:
        async for record in reader:
            with contextlib.suppress(ValueError):
                message = ClockMessage.model_validate_json(record.value)
                if message.kind == "report" and message.service:
                    self.reports[(message.clock_id, message.service)] = message

    async def publish(self, message: ClockMessage) -> None:
        await self.rt.producer.send_and_wait(
            self.topic, message.model_dump_json().encode(), key=str(message.clock_id).encode()
        )

    async def tick(self) -> None:
        rows = await self.rt.pool.fetch("SELECT * FROM test_clocks WHERE status = 'advancing'")
        for row in rows:
            await self.drive(row["id"], row["now"], row["target"], row["step"])

    async def drive(self, clock_id: uuid.UUID, now: datetime, target: datetime, step: int) -> None:
        state = self.steps.get(clock_id)
        if state is None or state.step != step:
            # (Re)announce the current step: after a restart, or for a new clock (step 0).
            state = StepState(step=step, now=now)
            self.steps[clock_id] = state
            await self.publish(ClockMessage(kind="moved", clock_id=clock_id, step=step, now=now))
            return
        verdict = await self.quiet(clock_id, state)
        if verdict == "stale":
            return  # wait for reports made after the last check
        if verdict == "busy":
            state.quiet_checks = 0
            return
        state.quiet_checks += 1
        if state.quiet_checks < 2:
            state.probe += 1  # the next check accepts only reports made after this one
            await self.publish(
                ClockMessage(kind="probe", clock_id=clock_id, step=step, probe=state.probe)
            )
            return
        await self.publish(ClockMessage(kind="settled", clock_id=clock_id, step=step, now=now))
        if now >= target:
            await self.rt.pool.execute(
                "UPDATE test_clocks SET status = 'ready' WHERE id = $1 AND target = $2",
                clock_id,
                target,
            )
            del self.steps[clock_id]
            return
        dues = [
            r.next_due_at
            for s in self.services
            if (r := self.reports.get((clock_id, s))) and r.next_due_at is not None
        ]
        next_now = min([target, *dues])
        async with self.rt.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "UPDATE test_clocks SET now = $2, step = step + 1 WHERE id = $1", clock_id, next_now
            )
        self.steps[clock_id] = StepState(step=step + 1, now=next_now)
        await self.publish(
            ClockMessage(kind="moved", clock_id=clock_id, step=step + 1, now=next_now)
        )

    async def quiet(self, clock_id: uuid.UUID, state: StepState) -> str:
        """ "quiet": every service reported on this step, fresh since the last check, with
        nothing to do, and no consumer group has anything left to read; "busy": something is
        still to do; "stale": a report from before the last check is all there is yet."""
        latest: dict[str, ClockMessage] = {}
        for service in self.services:
            report = self.reports.get((clock_id, service))
            if report is None or report.step != state.step:
                return "stale"
            if report.pending or report.unsent:
                return "busy"
            if state.quiet_checks and report.probe < state.probe:
                return "stale"
            latest[service] = report
        groups = {self.rt.topics.group(s): r.consumes for s, r in latest.items()}
        if await self.lag.total_lag(groups):
            return "busy"
        return "quiet"


async def run_clock_driver(rt: Runtime) -> None:
    if not rt.settings.test_clocks_enabled:
        return
    await ClockDriver(rt).run()
