"""Issue 17: SMTP PIPELINING (RFC 2920). To a server that announces it, MAIL FROM, RCPT TO and
DATA go in one write and their replies are read in order, each checked as before (a refused
recipient fails the mail for good, a protocol-sequence reply postpones it); to a server that
does not, one command at a time. Over the real PostgreSQL and real SMTP conversations: the
test server (which, announcing PIPELINING, holds its replies until the group's DATA, so a
client waiting for each reply would hang) and the stack's maildev (which announces it)."""

from __future__ import annotations

import email
import email.policy
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.notifications import service
from services.notifications.delivery import delivery_desk
from services.notifications.mailer import SmtpSender, wire_mail
from tests.integration.notifications_support import RefusingSmtp, address
from tests.integration.test_notifications_mail_safety import queue, runtime_with, status_of
from tests.support import Backing, MailCatcher, wait_for

pytestmark = pytest.mark.integration


async def statuses(pool: asyncpg.Pool) -> dict[str, tuple[str, str | None]]:
    rows = await pool.fetch("SELECT recipient, status, last_error FROM deliveries")
    return {r["recipient"]: (r["status"], r["last_error"]) for r in rows}


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "one-at-a-time"])
async def test_mails_go_out_pipelined_when_the_server_announces_it_else_one_at_a_time(
    backing: Backing, pipelining: bool
) -> None:
    mails = [address(f"p{n}") for n in range(3)]
    async with RefusingSmtp(pipelining=pipelining) as smtp, runtime_with(smtp, backing) as rt:
        sender = SmtpSender("127.0.0.1", smtp.port, timeout=5)
        await queue(rt.pool, *mails)
        assert await service.deliver_due(delivery_desk(rt), sender, limit=10) == 3
        assert sender.pipelining is pipelining
        await sender.close()
        assert set((await statuses(rt.pool)).values()) == {("sent", None)}
    assert sorted(smtp.accepted) == sorted(mails)
    [session] = smtp.sessions
    assert session == ["EHLO", *["MAIL", "RCPT", "DATA"] * 3, "QUIT"]
    ids = {
        email.message_from_bytes(raw, policy=email.policy.default)["Message-ID"]
        for raw in smtp.received
    }
    assert len(ids) == 3


async def test_a_refused_recipient_in_a_pipelined_envelope_fails_that_mail_only(
    backing: Backing,
) -> None:
    """The 550 to RCPT TO (DATA then answered 554, as Postfix does) is a permanent refusal,
    recorded as before (``failed``, the server's words); the transaction is reset and the next
    mail goes out on the same connection."""
    refused, fine = f"reject-{uuid.uuid4().hex[:8]}@example.com", address("fine")
    async with RefusingSmtp(pipelining=True) as smtp, runtime_with(smtp, backing) as rt:
        sender = SmtpSender("127.0.0.1", smtp.port, timeout=5)
        bad, good = await queue(rt.pool, refused, fine)
        for _ in (bad, good):  # one at a time: the refused one first
            assert await service.deliver_due(delivery_desk(rt), sender, limit=1) == 1
        await sender.close()
        assert await status_of(rt.pool, bad) == ("failed", "550 5.1.1")
        assert await status_of(rt.pool, good) == ("sent", None)
        failed = await rt.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE event_type = 'EmailFailed'"
        )
        assert failed == 1
    assert smtp.accepted == [fine]
    [session] = smtp.sessions
    assert session == ["EHLO", "MAIL", "RCPT", "DATA", "RSET", "MAIL", "RCPT", "DATA", "QUIT"]


async def test_a_bad_sequence_reply_in_a_pipelined_envelope_postpones_and_drops_the_session(
    backing: Backing,
) -> None:
    kari = address("kari")
    async with RefusingSmtp(pipelining=True) as smtp, runtime_with(smtp, backing) as rt:
        sender = SmtpSender("127.0.0.1", smtp.port, timeout=5)
        [mail] = await queue(rt.pool, kari)
        smtp.refuse_mail_503 = 1
        assert await service.deliver_due(delivery_desk(rt), sender, limit=5) == 1
        status, error = await status_of(rt.pool, mail)
        assert status == "pending" and error is not None and error.startswith("503")
        await sender.close()
    assert smtp.accepted == []
    assert smtp.sessions == [["EHLO", "MAIL", "RCPT", "DATA", "QUIT"]]


async def test_pipelined_mail_reaches_the_real_mail_catcher(backing: Backing) -> None:
    """maildev (the stack's catcher) announces PIPELINING: the pipelined hand-over is accepted
    by a real server and the mail arrives whole."""
    host, _, port = backing.smtp_url.removeprefix("smtp://").partition(":")
    sender = SmtpSender(host, int(port), timeout=5)
    recipients = [address(f"real{n}") for n in range(2)]
    for n, recipient in enumerate(recipients):
        mail = wire_mail(
            sender="Subscriptions <no-reply@subscriptions.example>",
            recipient=recipient,
            subject=f"Pipelined {n} æøå",
            text="Hei Kari,\nblåbær.\n",
            html="<p>Hei Kari, blåbær.</p>",
            message_id=f"<{uuid.uuid4()}@subscription-platform>",
            date=datetime.now(UTC),
        )
        await sender.begin("no-reply@subscriptions.example", recipient)
        await sender.finish(mail)
        assert sender.pipelining
    await sender.close()
    catcher = MailCatcher(backing)

    async def arrived() -> list[str]:
        mails = await catcher.messages()
        got = [m["subject"] for r in recipients for m in mails if r in m["to"]]
        return got if len(got) == len(recipients) else []

    subjects = await wait_for(arrived, what="both pipelined mails at the catcher")
    assert sorted(subjects) == ["Pipelined 0 æøå", "Pipelined 1 æøå"]
