"""The invoicing process."""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

from .api import router
from .handlers import TIMERS, consumer, keep_exchange_rates_scheduled

SPEC = ServiceSpec(
    name="invoicing",
    router=router,
    consumer=consumer,
    migrations=Path(__file__).parent / "migrations",
    background=[keep_exchange_rates_scheduled],
    timers=TIMERS,
)
