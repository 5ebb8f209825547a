"""Background loops that always stop, and shutdown steps that cannot wait forever.

Why this module exists (issue 12, finding 10): a test's teardown hung until pytest-timeout's
300 s. Python 3.11's ``asyncio.wait_for(event.wait(), t)`` swallows a cancellation that
arrives just after the event was set (the inner wait has finished, so ``wait_for`` returns
its result instead of raising ``CancelledError``). A loop idling that way on its NOTIFY
wake-up then never ends; the service's shutdown, gathering its tasks, waited forever, and so
did ``Pool.close`` for the connection the loop still held.

So: loops sleep with ``sleep_until_woken`` (``asyncio.timeout``, which keeps an outside
cancellation), and every shutdown step runs under ``within``, which never waits past its
bound, not even for a task that refuses to be cancelled (``asyncio.wait_for`` would: on
timeout it waits for the cancelled task to finish).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger(__name__)


class ShutdownTimeout(RuntimeError):
    """A shutdown step did not finish in its time; the message names what hung."""


async def sleep_until_woken(wake: asyncio.Event, seconds: float) -> bool:
    """Wait until ``wake`` is set or ``seconds`` pass; True if woken. A cancellation of the
    caller always propagates (unlike ``asyncio.wait_for`` on Python 3.11)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await wake.wait()
            return True
    return False


async def within(seconds: float, what: str, step: Awaitable[Any]) -> None:
    """Run ``step``; if it has not finished after ``seconds``, cancel it (without waiting for
    it) and raise ``ShutdownTimeout`` naming ``what``."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        task.cancel()
        raise ShutdownTimeout(f"{what} did not finish within {seconds:g} s")
    task.result()


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], seconds: float) -> None:
    """Cancel ``tasks`` and wait up to ``seconds`` for them to end; raise ``ShutdownTimeout``
    naming the ones still running (they are left cancelled, never awaited forever)."""
    tasks = list(tasks)
    for task in tasks:
        task.cancel()
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            log.warning("%s ended with %r while stopping", task.get_name(), task.exception())
    if pending:
        names = ", ".join(sorted(t.get_name() for t in pending))
        raise ShutdownTimeout(f"background tasks still running {seconds:g} s after cancel: {names}")
