"""The notifications process."""

from __future__ import annotations

from pathlib import Path

from shared.runtime import ServiceSpec

from .api import router
from .delivery import run_delivery_loop
from .handlers import consumer
from .repository import unsent_mail_of_clock

SPEC = ServiceSpec(
    name="notifications",
    router=router,
    consumer=consumer,
    migrations=Path(__file__).parent / "migrations",
    background=[run_delivery_loop],
    pending_probe=unsent_mail_of_clock,
)
