"""Fixtures shared by the journeys (issue 7): the four services as OS processes with test clocks
enabled (one deployment per test module), and a ``Journey`` per test."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest

from tests.e2e.journeys import SERVICES, Journey
from tests.support import Backing, Deployment, ServiceProcess, deployment


@pytest.fixture(scope="module")
async def clocked_platform(
    backing: Backing, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Deployment]:
    logs = tmp_path_factory.mktemp("journey-logs")
    async with deployment(backing, SERVICES) as dep:
        dep.extra_env["PLATFORM_TEST_CLOCKS_ENABLED"] = "true"
        dep.extra_env["PLATFORM_TIMER_POLL_SECONDS"] = "0.2"
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


@pytest.fixture
async def journey(
    clocked_platform: Deployment, backing: Backing, request: pytest.FixtureRequest
) -> AsyncIterator[Journey]:
    async with httpx.AsyncClient(timeout=15) as client:
        j = Journey(clocked_platform, backing, client)
        started = time.monotonic()
        yield j
        total = sum(seconds for _, seconds in j.timings)
        print(
            f"\n  {request.node.name}: {time.monotonic() - started:.1f} s in all;"
            f" clock steps {total:.1f} s: " + ", ".join(f"{what} {s:.1f}s" for what, s in j.timings)
        )
