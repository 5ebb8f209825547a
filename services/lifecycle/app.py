"""The lifecycle process."""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

from .api import router
from .handlers import BATCH_TIMERS, TIMERS, consumer

SPEC = ServiceSpec(
    name="lifecycle",
    router=router,
    consumer=consumer,
    migrations=Path(__file__).parent / "migrations",
    timers=TIMERS,
    batch_timers=BATCH_TIMERS,
)
