"""Waking notifications' delivery workers (issue 17): a queued mail wakes one idle worker, not
all of them (each woken worker runs a claim, a commit, even when another took the mail)."""

from __future__ import annotations

import asyncio

from services.notifications.delivery import Wakes


async def sleepers(wakes: Wakes, workers: int) -> list[asyncio.Task[bool]]:
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
    wakes.one()  # nobody idle: the first busy worker to finish claims again
    assert not any(event.is_set() for event in wakes.events)
    assert wakes.take_missed() is True
    assert wakes.take_missed() is False  # one worker claims, not every one that finishes


async def test_a_worker_that_finished_its_batch_sleeps_unless_mail_came_meanwhile() -> None:
    """After a batch that was not full a worker claims again only when a notification found
    every worker busy; otherwise that claim would find nothing and cost a commit."""
    wakes = Wakes(2)
    assert wakes.take_missed() is False  # nothing queued while busy: sleep
    [task, other] = await sleepers(wakes, 2)
    wakes.one()  # an idle worker is there: it is woken, nothing is kept
    assert wakes.take_missed() is False
    wakes.all()
    await asyncio.gather(task, other)


async def test_mail_queued_while_a_woken_worker_gathers_wakes_nobody_else() -> None:
    """A woken worker pauses ``linger`` before it claims: notifications meanwhile are its
    batch's, so they wake no other worker (whose claim would find those mails taken or be one
    more claim and one more ``sent`` record)."""
    wakes = Wakes(2, linger=30)
    tasks = await sleepers(wakes, 2)
    wakes.one()
    _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    gathering = asyncio.create_task(wakes.gather())
    await asyncio.sleep(0)
    assert wakes.gathering == 1
    wakes.one()  # queued while the woken worker gathers
    wakes.one()
    assert len(wakes.idle) == 1 and not wakes.missed  # nobody else woken, nothing kept
    gathering.cancel()
    await asyncio.gather(gathering, return_exceptions=True)
    assert wakes.gathering == 0
    wakes.all()
    await asyncio.gather(*pending)
