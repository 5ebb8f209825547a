"""Issue 17: a timer loop asleep is not woken by timers scheduled for after it wakes anyway."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import cast

import asyncpg

from shared.outbox import Outbox
from shared.time.clock import FrozenClock
from shared.timers import NOTIFY_CHANNEL, TimerLoop
from shared.topics import Topics

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def loop() -> TimerLoop:
    clock = FrozenClock(NOW)
    outbox = Outbox("lifecycle", Topics("unused."), clock)
    return TimerLoop(cast(asyncpg.Pool, None), {}, outbox=outbox, clock=clock)


def notify(timers: TimerLoop, payload: str) -> bool:
    timers._wake.clear()
    timers.wake(None, 1, NOTIFY_CHANNEL, payload)
    return timers._wake.is_set()


def test_a_sleeping_loop_ignores_timers_due_after_it_wakes_up_anyway() -> None:
    timers = loop()
    timers._sleeping_until = NOW.timestamp() + 1.0
    assert not notify(timers, str(NOW.timestamp() + 365 * 86400))  # a renewal date
    assert not notify(timers, str(NOW.timestamp() + 1.0))
    assert notify(timers, str(NOW.timestamp() + 0.5))  # due before it wakes up
    assert notify(timers, "")  # a test clock moved, or timers of a test-clock account
    assert notify(timers, "not a time")


def test_a_running_loop_keeps_every_wake_up() -> None:
    """While it claims (not asleep), a notification may be for what it has just missed."""
    timers = loop()
    assert timers._sleeping_until is None
    assert notify(timers, str(NOW.timestamp() + 365 * 86400))
