"""The lifecycle process."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter

from shared.runtime import ServiceSpec

from . import api, test_clocks
from .handlers import BATCH_TIMERS, TIMERS, consumer

router = APIRouter()
router.include_router(api.subscriptions)
router.include_router(api.clocks)

SPEC = ServiceSpec(
    name="lifecycle",
    router=router,
    consumer=consumer,
    migrations=Path(__file__).parent / "migrations",
    background=[test_clocks.run_clock_driver],
    timers=TIMERS,
    batch_timers=BATCH_TIMERS,
)
