"""The delivery workers: send queued mails over SMTP, each (event, address) at most once (R12).

``delivery_concurrency`` workers each keep one SMTP connection open and lease a batch of due
mails (``FOR UPDATE SKIP LOCKED``, a lease in the row, committed). The same statement commits
the whole batch ``handing_over``: the hand-over mark, before the batch's first MAIL FROM. For
each mail:

1. MAIL FROM / RCPT TO (written with DATA in one go when the server pipelines, see
   ``mailer.SmtpSender``; the replies are checked in the same order). A 5xx here is a
   permanent refusal: ``failed`` + ``EmailFailed``, never retried. A 4xx or no connection:
   back to ``pending`` with backoff (``next_attempt_at``, so retries survive restarts).
2. Before DATA, a batch whose mark is older than one SMTP timeout renews it (one statement,
   a compare-and-set on the claim token: a mail the sweep has meanwhile taken is skipped, so
   two workers can never both hand the same mail over). A fast batch never renews.
3. DATA. On 250 the mail is *accepted*: the worker goes on with the next mail of its batch.
4. The accepted mails of the batch are committed ``sent`` together, each with its
   ``EmailSent`` (outbox), in one transaction: at the end of the batch (also when it ends in an
   error), or earlier once the oldest of them was accepted more than one SMTP timeout ago, so
   they are recorded long before ``handover_deadline`` (six timeouts) could hand them over
   again.

Nothing is lost: a mail whose outcome is unknown is handed over again with the same
Message-ID (stored with the delivery when it is queued), so a receiver can recognise the
repeat. A mail left ``handing_over`` (the process died after the claim, or lost its database
before recording the answer) is due again after ``handover_deadline``; a connection broken
before the server's answer to DATA puts it back to ``pending`` with backoff. Each such resend
counts in ``platform_mails_possible_duplicates_total``.

The window, decided [ours] (issue 17, bench/RESULTS.md):

- Recording ``sent`` one batch at a time instead of one mail at a time saves a transaction per
  mail but lets a crash double up to ``delivery_batch_size`` mails per worker
  (``delivery_concurrency`` x ``delivery_batch_size`` in all; with the defaults 4 x 20) where
  it was one per worker. Only mails the server had already taken (DATA answered, or in DATA
  when the process died) can arrive twice, always with their Message-ID.
- Marking the whole batch by its claim instead of each mail just before its DATA saves a
  statement and a commit per mail. What it costs: after a crash every mail of the dead
  worker's batch waits for the sweep (``handover_deadline``, at least 10 s, 60 s with the
  default timeout, where a mail not yet marked waited for its lease, 80 s) and is counted as a
  possible duplicate, although those the worker had not begun arrive once. The mails that can
  really arrive twice are the same as above. ``PLATFORM_DELIVERY_BATCH_SIZE=1`` restores one
  mail per worker for both.

After any error between MAIL FROM and the end of DATA the SMTP session is reset (RSET, or a new
connection) before the next MAIL FROM, and a protocol-sequence reply (503) is transient.

Logs carry delivery ids and SMTP reply codes only: no addresses, subjects or bodies.

This module runs the workers (the loop, the SMTP adapter they use, the sweep of stopped
hand-overs); the steps of one hand-over are ``service.hand_over``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta

from shared.background import sleep_until_woken
from shared.runtime import Runtime
from shared.unit_of_work import Work

from . import service
from .mailer import MailSender, SmtpSender
from .repository import DELIVERY_CHANNEL, SqlRepository
from .service import MAILS_POSSIBLY_DOUBLED, DeliveryDesk, UnitOfWork

log = logging.getLogger(__name__)


def handover_deadline(timeout: float) -> timedelta:
    """Older hand-overs than this cannot belong to a live worker (its DATA would have timed
    out and its hand-over been recorded), so they are handed over again."""
    return timedelta(seconds=max(10.0, 6 * timeout))


def delivery_desk(rt: Runtime) -> DeliveryDesk:
    """The hand-over's view of the database: single committed steps on the pool, and one
    transaction (with the outbox) for a mark that emits an event."""

    @asynccontextmanager
    async def transaction() -> AsyncIterator[UnitOfWork]:
        async with rt.pool.acquire() as conn, conn.transaction():
            yield Work.on(SqlRepository(conn), conn, rt.outbox, rt.clock)

    return DeliveryDesk(
        steps=SqlRepository(rt.pool),
        transaction=transaction,
        clock=rt.clock,
        mail_from=rt.settings.mail_from,
        smtp_timeout=rt.settings.smtp_timeout_seconds,
    )


class Wakes:
    """Wakes the delivery workers: one idle worker per queued-mail notification (waking them
    all made every idle worker run an empty claim, a commit each, for every event handled);
    all of them after a sweep. A worker that leases a full batch wakes another, so a backlog
    keeps every SMTP connection busy. A notification that finds every worker busy is kept
    (``missed``): the next worker to finish claims again instead of going to sleep, and only
    then (claiming again after every batch cost an empty claim, a commit, per batch).

    A woken worker first gathers for ``linger`` seconds (``delivery_linger_seconds``) and then
    claims: the mails queued meanwhile wake nobody else and go out in its one batch (one claim,
    one ``sent`` record) instead of one claim and one record each."""

    def __init__(self, workers: int, linger: float = 0.0) -> None:
        self.events = [asyncio.Event() for _ in range(workers)]
        self.idle: list[int] = []
        self.missed = False
        self.linger = linger
        self.gathering = 0  # woken workers about to claim

    def one(self, *_: object) -> None:
        if self.gathering:
            return  # a worker claims after its gathering pause: this mail is in its batch
        if self.idle:
            self.events[self.idle.pop(0)].set()
        else:
            self.missed = True

    async def gather(self) -> None:
        """The pause of a woken worker before it claims."""
        if self.linger <= 0:
            return
        self.gathering += 1
        try:
            await asyncio.sleep(self.linger)
        finally:
            self.gathering -= 1

    def take_missed(self) -> bool:
        """Whether mail was queued while every worker was busy (and forget it: one worker
        claims; if it leases a full batch it wakes another)."""
        missed, self.missed = self.missed, False
        return missed

    def all(self, *_: object) -> None:
        for event in self.events:
            event.set()

    async def sleep(self, worker: int, seconds: float) -> bool:
        """Until woken (True) or ``seconds`` passed (False, a poll)."""
        self.idle.append(worker)
        try:
            return await sleep_until_woken(self.events[worker], seconds)
        finally:
            if worker in self.idle:
                self.idle.remove(worker)


async def _work(rt: Runtime, sender: MailSender, wakes: Wakes, worker: int) -> None:
    batch = rt.settings.delivery_batch_size
    desk = delivery_desk(rt)
    wake = wakes.events[worker]
    try:
        while True:
            wake.clear()
            try:
                leased = await service.deliver_due(desk, sender, batch)
                if leased >= batch:
                    wakes.one()  # more may be due: another worker helps
                    continue
                if wakes.take_missed():  # mail was queued while every worker was busy
                    continue
            except Exception as error:  # database trouble: try again on the next tick
                log.warning("delivery worker: %r", error)
            if await wakes.sleep(worker, rt.settings.delivery_poll_seconds):
                await wakes.gather()
    finally:
        with contextlib.suppress(Exception):
            await sender.close()


def smtp_sender_factory(rt: Runtime) -> Callable[[], MailSender]:
    s = rt.settings
    host, port = s.smtp_host_port

    def make() -> MailSender:
        return SmtpSender(
            host,
            port,
            timeout=s.smtp_timeout_seconds,
            security=s.smtp_security,
            username=s.smtp_username,
            password=s.smtp_password.get_secret_value() if s.smtp_password else None,
        )

    return make


async def run_delivery_loop(rt: Runtime) -> None:
    make_sender = smtp_sender_factory(rt)
    wakes = Wakes(max(1, rt.settings.delivery_concurrency), rt.settings.delivery_linger_seconds)
    listener = await rt.pool.acquire()
    workers = [
        asyncio.create_task(_work(rt, make_sender(), wakes, n)) for n in range(len(wakes.events))
    ]
    deadline = handover_deadline(rt.settings.smtp_timeout_seconds)
    try:
        await listener.add_listener(DELIVERY_CHANNEL, wakes.one)
        while True:
            try:
                expired = await SqlRepository(rt.pool).expire_handovers(rt.clock.now() - deadline)
                if expired:
                    MAILS_POSSIBLY_DOUBLED.labels("stopped_hand_over").inc(expired)
                    log.warning("%d deliveries sent again after a stopped hand-over", expired)
                    wakes.all()
            except Exception as error:
                log.warning("delivery sweep: %r", error)
            await asyncio.sleep(deadline.total_seconds() / 2)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await listener.remove_listener(DELIVERY_CHANNEL, wakes.one)
        await rt.pool.release(listener)
