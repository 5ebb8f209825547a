"""The delivery loop: sends queued mails over SMTP, once each.

Each delivery is claimed (``FOR UPDATE SKIP LOCKED``), sent, and marked sent together with its
``EmailSent`` event in one transaction. The only window for a second send is a crash after the
SMTP server accepted the mail and before that transaction commits: one SMTP round trip plus one
commit. The stable Message-ID lets the receiving side drop such a resend.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import timedelta

from shared.contracts import EmailFailed, EmailSent
from shared.runtime import Runtime

from . import repository
from .handlers import DELIVERY_CHANNEL
from .mailer import MailSender, PermanentFailure, SmtpSender, TransientFailure, compose

log = logging.getLogger(__name__)
RETRY_DELAYS = (5, 30, 120, 600, 1800)  # seconds, then every hour


def retry_delay(attempts: int) -> timedelta:
    return timedelta(seconds=RETRY_DELAYS[attempts] if attempts < len(RETRY_DELAYS) else 3600)


async def deliver_one(rt: Runtime, sender: MailSender) -> bool:
    """Send one due mail; False when nothing is due."""
    async with rt.pool.acquire() as conn, conn.transaction():
        now = rt.clock.now()
        row = await repository.claim_due(conn, now)
        if row is None:
            return False
        message = compose(
            sender=rt.settings.mail_from,
            recipient=row["recipient"],
            subject=row["subject"],
            text=row["body_text"],
            html=row["body_html"],
            message_key=str(row["id"]),
        )
        try:
            await sender.send(message)
        except PermanentFailure as error:
            await repository.mark_failed(conn, row["id"], str(error))
            await rt.outbox.emit(
                conn,
                EmailFailed(
                    delivery_id=row["id"],
                    source_event_id=row["event_id"],
                    recipient=row["recipient"],
                    reason=str(error),
                    permanent=True,
                ),
                account_id=row["account_id"],
            )
            return True
        except TransientFailure as error:
            log.warning("delivery %s postponed: %s", row["id"], error)
            await repository.postpone(
                conn, row["id"], str(error), now + retry_delay(row["attempts"])
            )
            return True
        await repository.mark_sent(conn, row["id"], now)
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
        return True


async def run_delivery_loop(rt: Runtime) -> None:
    host, port = rt.settings.smtp_host_port
    sender = SmtpSender(host, port)
    wake = asyncio.Event()
    listener = await rt.pool.acquire()
    try:
        await listener.add_listener(DELIVERY_CHANNEL, lambda *_: wake.set())
        while True:
            wake.clear()
            try:
                while await deliver_one(rt, sender):
                    pass
            except Exception as error:  # database trouble: try again on the next tick
                log.warning("delivery loop: %r", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), rt.settings.delivery_poll_seconds)
    finally:
        await rt.pool.release(listener)
