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

from aiokafka import AIOKafkaConsumer

from shared.auth import Principal
from shared.errors import not_found
from shared.runtime import Runtime
from shared.time.test_clocks import ClockMessage, LagMeter

from . import domain
from .repository import PostgresRepository, TestClock, UnitOfWork
from .schemas import Advance, NewClock

log = logging.getLogger(__name__)


# --- use cases (the door is api.py) -----------------------------------------------------------


async def create_test_clock(uow: UnitOfWork, caller: Principal, command: NewClock) -> TestClock:
    """A clock frozen at ``frozen_time``; accounts opened with its id follow it."""
    domain.operator_only(caller.kind)
    clock = TestClock(
        id=uuid.uuid4(),
        name=command.name,
        now=command.frozen_time,
        target=command.frozen_time,
        status="advancing",
        step=0,
        created_at=await uow.time.now(),
    )
    await uow.repo.insert_test_clock(clock)
    return await get_test_clock(uow, caller, clock.id)


async def get_test_clock(uow: UnitOfWork, caller: Principal, clock_id: uuid.UUID) -> TestClock:
    domain.operator_only(caller.kind)
    clock = await uow.repo.get_test_clock(clock_id)
    if clock is None:
        raise not_found("test clock")
    return clock


async def advance_test_clock(
    uow: UnitOfWork, caller: Principal, clock_id: uuid.UUID, command: Advance
) -> TestClock:
    """Forward only, to ``command.to``; the clock driver (test_clocks.py) steps it there."""
    clock = await get_test_clock(uow, caller, clock_id)
    domain.check_forward(clock.target, command.to)
    await uow.repo.set_test_clock_target(clock_id, command.to)
    return await get_test_clock(uow, caller, clock_id)


# --- the driver ----------------------------------------------------------------------------


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
        async with self.rt.pool.acquire() as conn:
            advancing = await PostgresRepository(conn).advancing_test_clocks()
        for clock in advancing:
            await self.drive(clock.id, clock.now, clock.target, clock.step)

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
            async with self.rt.pool.acquire() as conn:
                await PostgresRepository(conn).mark_test_clock_ready(clock_id, target)
            del self.steps[clock_id]
            return
        dues = [
            r.next_due_at
            for s in self.services
            if (r := self.reports.get((clock_id, s))) and r.next_due_at is not None
        ]
        next_now = min([target, *dues])
        async with self.rt.pool.acquire() as conn:
            await PostgresRepository(conn).next_test_clock_step(clock_id, next_now)
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
