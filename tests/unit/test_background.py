"""Background loops always stop and shutdown steps are bounded (shared.background; issue 12,
finding 10: a teardown hung until pytest-timeout's 300 s)."""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest

from shared.background import ShutdownTimeout, cancel_all, sleep_until_woken, within
from shared.runtime import supervised


async def idle_loop(wake: asyncio.Event) -> None:
    """The shape of the outbox relay, the timer loop and the delivery workers."""
    while True:
        wake.clear()
        await sleep_until_woken(wake, 30)


@pytest.mark.parametrize("turns_between_wake_and_cancel", [0, 1, 2, 3])
async def test_a_loop_woken_just_before_its_cancel_still_stops(
    turns_between_wake_and_cancel: int,
) -> None:
    """With ``asyncio.wait_for(wake.wait(), t)`` (Python 3.11) turns 0-2 swallow the cancel
    and the loop runs on for ever: the service's shutdown then waits for it for ever."""
    wake = asyncio.Event()
    task = asyncio.create_task(idle_loop(wake))
    for _ in range(3):
        await asyncio.sleep(0)  # the loop is now asleep on ``wake``
    wake.set()
    for _ in range(turns_between_wake_and_cancel):
        await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and task.cancelled()


async def test_sleep_until_woken_says_whether_it_was_woken() -> None:
    wake = asyncio.Event()
    assert await sleep_until_woken(wake, 0.01) is False
    wake.set()
    assert await sleep_until_woken(wake, 5) is True


async def refuses_to_stop(release: asyncio.Event) -> None:
    while not release.is_set():
        with contextlib.suppress(asyncio.CancelledError):
            await release.wait()


async def test_within_gives_up_on_a_step_that_refuses_to_stop() -> None:
    release = asyncio.Event()
    started = time.monotonic()
    with pytest.raises(ShutdownTimeout, match=r"the stubborn step did not finish within 0\.2 s"):
        await within(0.2, "the stubborn step", refuses_to_stop(release))
    assert time.monotonic() - started < 2
    release.set()


async def test_within_passes_a_finished_step_s_error_on() -> None:
    async def fails() -> None:
        raise ValueError("broken")

    with pytest.raises(ValueError, match="broken"):
        await within(5, "a step", fails())


async def test_cancel_all_names_the_tasks_still_running() -> None:
    release = asyncio.Event()
    stubborn = asyncio.create_task(refuses_to_stop(release), name="stubborn-loop")
    polite = asyncio.create_task(asyncio.sleep(3600), name="polite-loop")
    await asyncio.sleep(0)
    with pytest.raises(ShutdownTimeout, match=r"still running 0\.2 s after cancel: stubborn-loop"):
        await cancel_all([stubborn, polite], 0.2)
    assert polite.cancelled()
    release.set()
    await asyncio.wait_for(stubborn, 5)


async def test_supervised_does_not_restart_a_loop_whose_clean_up_fails_while_stopping() -> None:
    """A loop whose ``finally`` raises while it is cancelled (a consumer that fails to stop)
    used to be logged and started again: the cancel was spent and the task never ended."""
    runs = 0

    async def loop() -> None:
        nonlocal runs
        runs += 1
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("the consumer could not leave its group")

    task = asyncio.create_task(supervised("loop", loop, first_delay=0.01))
    await asyncio.sleep(0)
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=5)
    assert task in done and runs == 1
    with pytest.raises(RuntimeError, match="could not leave its group"):
        task.result()
