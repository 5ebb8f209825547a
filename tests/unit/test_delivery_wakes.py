"""Waking notifications' delivery workers (issue 17): a queued mail wakes one idle worker, not
all of them (each woken worker runs a claim, a commit, even when another took the mail)."""

from __future__ import annotations

import asyncio

from services.notifications.delivery import Wakes


async def sleepers(wakes: Wakes, workers: int) -> list[asyncio.Task[None]]:
    tasks = [asyncio.create_task(wakes.sleep(n, 30)) for n in range(workers)]
    for _ in range(workers):
        await asyncio.sleep(0)  # one turn of the loop: each task has started to wait
    assert len(wakes.idle) == workers
    return tasks


async def test_a_notification_wakes_one_idle_worker() -> None:
    wakes = Wakes(3)
    tasks = await sleepers(wakes, 3)
    wakes.one()
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    assert len(done) == 1 and len(pending) == 2
    assert len(wakes.idle) == 2  # the woken one is no longer counted idle
    wakes.all()
    await asyncio.gather(*pending)
    assert wakes.idle == []


async def test_with_every_worker_busy_a_notification_wakes_nobody() -> None:
    wakes = Wakes(2)
    wakes.one()  # nobody idle: busy workers claim again when they finish anyway
    assert not any(event.is_set() for event in wakes.events)
