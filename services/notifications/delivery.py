"""The delivery workers: send queued mails over SMTP, each (event, address) at most once (R12).

``delivery_concurrency`` workers each keep one SMTP connection open and lease a batch of due
mails (``FOR UPDATE SKIP LOCKED``, a lease in the row, committed). For each mail:

1. MAIL FROM / RCPT TO. A 5xx here is a permanent refusal: ``failed`` + ``EmailFailed``, never
   retried. A 4xx or no connection: back to ``pending`` with backoff (``next_attempt_at``, so
   retries survive restarts).
2. Commit ``handing_over`` (only if this worker still holds the lease: a compare-and-set on the
   claim token, so two workers can never both hand the same mail over).
3. DATA. On 250, commit ``sent`` together with ``EmailSent`` (outbox).

The window for doubt is between 2 and 3: one DATA round trip (bounded by the SMTP timeout)
plus one commit. A mail left ``handing_over`` (the process died there, or the connection broke
before the server's answer) is never sent again: it becomes ``unconfirmed`` and shows in the
delivery log, so a crash can cost at most ``delivery_concurrency`` mails their certainty and
never sends one twice. The Message-ID is stable per delivery, so even a manual resend is
recognisable downstream.

Logs carry delivery ids and SMTP reply codes only: no addresses, subjects or bodies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Literal

import asyncpg

from shared.contracts import EmailFailed, EmailSent
from shared.runtime import Runtime

from . import repository
from .handlers import DELIVERY_CHANNEL
from .mailer import (
    MailSender,
    PermanentFailure,
    SmtpSender,
    TransientFailure,
    Unconfirmed,
    Unreachable,
    compose,
)

log = logging.getLogger(__name__)
RETRY_DELAYS = (5, 30, 120, 300, 600)  # seconds after the 1st, 2nd, ... failed attempt
RETRY_CEILING = 900
Outcome = Literal["sent", "failed", "postponed", "unreachable", "unconfirmed", "skipped"]


def retry_delay(attempts: int) -> timedelta:
    """Backoff after ``attempts`` failed attempts (0-based count before this failure)."""
    return timedelta(
        seconds=RETRY_DELAYS[attempts] if attempts < len(RETRY_DELAYS) else RETRY_CEILING
    )


def handover_deadline(timeout: float) -> timedelta:
    """Older hand-overs than this cannot belong to a live worker (its DATA would have timed
    out), so their fate is unknown."""
    return timedelta(seconds=max(60.0, 6 * timeout))


async def _postpone(rt: Runtime, rows: list[asyncpg.Record], token: uuid.UUID, error: str) -> None:
    now = rt.clock.now()
    await repository.postpone(
        rt.pool,
        [r["id"] for r in rows],
        token,
        error,
        [now + retry_delay(r["attempts"]) for r in rows],
    )


async def _fail(rt: Runtime, row: asyncpg.Record, token: uuid.UUID, reason: str) -> None:
    async with rt.pool.acquire() as conn, conn.transaction():
        if await repository.mark_failed(conn, row["id"], token, reason, rt.clock.now()):
            await rt.outbox.emit(
                conn,
                EmailFailed(
                    delivery_id=row["id"],
                    source_event_id=row["event_id"],
                    recipient=row["recipient"],
                    reason=reason,
                    permanent=True,
                ),
                account_id=row["account_id"],
            )


async def _record_sent(rt: Runtime, row: asyncpg.Record, token: uuid.UUID) -> None:
    """The server holds the mail: record it, retrying while the database is away (until the
    hand-over deadline, after which the row reads ``unconfirmed``; a late success still wins)."""
    delay = 0.2
    while True:
        try:
            async with rt.pool.acquire() as conn, conn.transaction():
                if await repository.mark_sent(conn, row["id"], token, rt.clock.now()):
                    await rt.outbox.emit(
                        conn,
                        EmailSent(
                            delivery_id=row["id"],
                            source_event_id=row["event_id"],
                            source_event_type=row["event_type"],
                            template=row["template"],
                            recipient=row["recipient"],
                            roles=list(row["roles"]),
                            subject=row["subject"],
                        ),
                        account_id=row["account_id"],
                    )
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            log.warning("delivery %s sent, recording it failed: %r", row["id"], error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def deliver_one(
    rt: Runtime, sender: MailSender, row: asyncpg.Record, token: uuid.UUID
) -> Outcome:
    try:
        message = compose(
            sender=rt.settings.mail_from,
            recipient=row["recipient"],
            subject=row["subject"],
            text=row["body_text"],
            html=row["body_html"],
            message_key=str(row["id"]),
        )
    except ValueError:  # a header with CR/LF: refused, never sent
        await repository.mark_failed(
            rt.pool, row["id"], token, "invalid header value", rt.clock.now()
        )
        log.error("delivery %s refused: invalid header value", row["id"])
        return "failed"
    try:
        await sender.begin(rt.settings.mail_from, row["recipient"])
    except PermanentFailure as error:
        log.info("delivery %s refused: %s", row["id"], error)
        await _fail(rt, row, token, str(error))
        return "failed"
    except TransientFailure as error:
        log.info("delivery %s postponed: %s", row["id"], error)
        await _postpone(rt, [row], token, str(error))
        return "unreachable" if isinstance(error, Unreachable) else "postponed"

    if not await repository.mark_handing_over(rt.pool, row["id"], token, rt.clock.now()):
        await sender.abort()  # the lease ran out and another worker has it
        return "skipped"
    try:
        await sender.finish(message)
    except PermanentFailure as error:
        log.info("delivery %s refused: %s", row["id"], error)
        await _fail(rt, row, token, str(error))
        return "failed"
    except TransientFailure as error:
        log.info("delivery %s postponed: %s", row["id"], error)
        await _postpone(rt, [row], token, str(error))
        return "postponed"
    except Unconfirmed as error:
        log.warning("delivery %s unconfirmed: %s", row["id"], error)
        await repository.mark_unconfirmed(rt.pool, row["id"], token, str(error))
        return "unconfirmed"
    await _record_sent(rt, row, token)
    return "sent"


async def deliver_batch(rt: Runtime, sender: MailSender, limit: int) -> int:
    """Lease up to ``limit`` due mails and send them in turn; returns how many were leased."""
    now = rt.clock.now()
    token = uuid.uuid4()
    # Short, so a dead worker's mails wait about a minute. A live worker that outruns it loses
    # nothing but effort: the hand-over mark is a compare-and-set on the token.
    lease = now + timedelta(seconds=60 + 2 * rt.settings.smtp_timeout_seconds)
    rows = await repository.claim_due(rt.pool, now, token, lease, limit)
    for index, row in enumerate(rows):
        if await deliver_one(rt, sender, row, token) == "unreachable":
            rest = rows[index + 1 :]
            if rest:
                await _postpone(rt, rest, token, "server unreachable")
            break
    return len(rows)


async def _work(rt: Runtime, sender: MailSender, wake: asyncio.Event) -> None:
    batch = rt.settings.delivery_batch_size
    try:
        while True:
            wake.clear()
            try:
                if await deliver_batch(rt, sender, batch):
                    continue
            except Exception as error:  # database trouble: try again on the next tick
                log.warning("delivery worker: %r", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), rt.settings.delivery_poll_seconds)
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
    wakes = [asyncio.Event() for _ in range(max(1, rt.settings.delivery_concurrency))]

    def wake_all(*_: object) -> None:
        for wake in wakes:
            wake.set()

    listener = await rt.pool.acquire()
    workers = [asyncio.create_task(_work(rt, make_sender(), wake)) for wake in wakes]
    deadline = handover_deadline(rt.settings.smtp_timeout_seconds)
    try:
        await listener.add_listener(DELIVERY_CHANNEL, wake_all)
        while True:
            try:
                expired = await repository.expire_handovers(rt.pool, rt.clock.now() - deadline)
                if expired:
                    log.warning("%d deliveries unconfirmed after a stopped hand-over", expired)
            except Exception as error:
                log.warning("delivery sweep: %r", error)
            await asyncio.sleep(deadline.total_seconds() / 2)
    finally:
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        with contextlib.suppress(Exception):
            await listener.remove_listener(DELIVERY_CHANNEL, wake_all)
        await rt.pool.release(listener)
