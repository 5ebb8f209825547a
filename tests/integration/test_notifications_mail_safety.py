"""Issue 12, findings 1 and 6, over the real Kafka, PostgreSQL and a real SMTP conversation:
hostile account names never add a header to the mail on the wire, and a database error or a
protocol-sequence reply in the middle of a hand-over loses no mail."""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifications import domain, service
from services.notifications.delivery import delivery_desk
from services.notifications.mailer import SmtpSender, header_text
from services.notifications.repository import SqlRepository
from shared.contracts import AccountOpened, RolesChanged
from shared.runtime import Runtime
from shared.time.clock import FrozenClock
from tests.integration.notifications_support import (
    RefusingSmtp,
    address,
    envelope,
    notifications_app,
    notifications_settings,
    person,
    publish,
)
from tests.mail_header_corpus import CORPUS
from tests.support import Backing, deployment, wait_for

pytestmark = pytest.mark.integration


async def test_r10_hostile_account_names_never_add_a_header_to_the_admin_mail(
    backing: Backing,
) -> None:
    """Finding 1: each corpus name opens an account (AccountOpened + RolesChanged, as ordering
    publishes them); the admin-appointed mail that reaches the SMTP server has exactly one To,
    no Bcc or Cc, and the name in its Subject reads back as the text it was."""
    # PostgreSQL text holds no NUL: that one is refused at the API's edge (finding 4)
    accounts = {address("admin"): name for name in CORPUS if "\x00" not in name}
    async with RefusingSmtp() as smtp, deployment(backing, ("notifications",)) as dep:
        settings = notifications_settings(dep, smtp_url=smtp.smtp_url)
        async with notifications_app(settings):
            events = []
            for admin, name in accounts.items():
                account = uuid.uuid4()
                opened = AccountOpened(
                    name=name, country="NO", currency="NOK", language="en", time_zone="UTC"
                )
                roles = RolesChanged(buyer=person(admin), primary_admin=person(admin))
                events += [envelope(account, opened), envelope(account, roles)]
            await publish(backing, dep, *events)

            async def all_received() -> bool:
                return set(smtp.accepted) >= set(accounts)

            await wait_for(all_received, timeout=60, what="every admin's mail")

    by_admin: dict[str, list[email.message.EmailMessage]] = {}
    for raw in smtp.received:
        head = raw.split(b"\r\n\r\n", 1)[0]
        assert all(0x20 <= byte < 0x7F for byte in head.replace(b"\r\n", b""))
        assert all(len(line) <= 78 for line in head.split(b"\r\n"))
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        assert message["Bcc"] is None and message["Cc"] is None
        [to] = message.get_all("To") or []
        assert len(message.get_all("Subject") or []) == 1
        by_admin.setdefault(str(to), []).append(message)
    assert set(by_admin) == set(accounts)
    for admin, name in accounts.items():
        subjects = {str(m["Subject"]) for m in by_admin[admin]}
        assert f"You are now the primary administrator of {header_text(name)}" in subjects or (
            f"You are now an administrator of {header_text(name)}" in subjects
        ), subjects


async def queue(pool: asyncpg.Pool, *recipients: str) -> list[uuid.UUID]:
    """Mails queued the way the consumer queues them (``SqlRepository.add_deliveries``)."""
    ids = []
    async with pool.acquire() as conn:
        repo = SqlRepository(conn)
        for recipient in recipients:
            await repo.add_deliveries(
                event_id=uuid.uuid4(),
                event_type="OrderPlaced",
                account_id=uuid.uuid4(),
                mails=[
                    (
                        domain.Recipient(recipient, "Kari", "en", ("buyer",), "order_confirmation"),
                        domain.RenderedMail("Order confirmation ORD-1", "text", "<p>html</p>"),
                    )
                ],
                now=datetime.now(UTC),
            )
            ids.append(
                await conn.fetchval("SELECT id FROM deliveries WHERE recipient = $1", recipient)
            )
    return ids


@dataclass
class FailingOnce(SqlRepository):
    """The real steps, but the database goes away once, at a slow batch's renewal of its
    hand-over mark (between RCPT TO and DATA)."""

    failures: int = 1

    async def renew_handing_over(
        self, delivery_ids: list[uuid.UUID], token: uuid.UUID, now: datetime
    ) -> set[uuid.UUID]:
        if self.failures:
            self.failures -= 1
            raise asyncpg.exceptions.AdminShutdownError("terminating connection")
        return await super().renew_handing_over(delivery_ids, token, now)


class SlowEnvelope(SmtpSender):
    """The real sender, but each envelope takes ``seconds`` on ``clock``."""

    def __init__(self, clock: FrozenClock, port: int, seconds: float) -> None:
        super().__init__("127.0.0.1", port, timeout=5)
        self.clock = clock
        self.seconds = seconds

    async def begin(self, sender: str, recipient: str) -> None:
        await super().begin(sender, recipient)
        self.clock.advance(timedelta(seconds=self.seconds))


@asynccontextmanager
async def runtime_with(smtp: RefusingSmtp, backing: Backing) -> AsyncIterator[Runtime]:
    """A migrated notifications database and its runtime; its own delivery workers claim
    nothing (batches of 0: the test drives the hand-over itself)."""
    async with deployment(backing, ("notifications",)) as dep:
        settings = notifications_settings(
            dep, smtp_url=smtp.smtp_url, delivery_poll_seconds=3600, delivery_batch_size=0
        )
        async with notifications_app(settings) as app:
            yield app.state.runtime


async def status_of(pool: asyncpg.Pool, delivery_id: uuid.UUID) -> tuple[str, str | None]:
    row = await pool.fetchrow(
        "SELECT status, last_error FROM deliveries WHERE id = $1", delivery_id
    )
    assert row is not None
    return row["status"], row["last_error"]


async def test_a_database_error_mid_hand_over_resets_the_smtp_session(backing: Backing) -> None:
    """Finding 6: the database fails after MAIL FROM / RCPT TO; the next mail still goes out
    (before the fix its MAIL FROM met "503 nested MAIL command" and was failed for good)."""
    first, second = address("first"), address("second")
    async with RefusingSmtp() as smtp, runtime_with(smtp, backing) as rt:
        desk = delivery_desk(rt)
        desk.steps = FailingOnce(rt.pool)
        stopped, later = await queue(rt.pool, first, second)
        desk.clock = clock = FrozenClock(datetime.now(UTC))
        sender = SlowEnvelope(clock, smtp.port, seconds=desk.smtp_timeout + 1)
        with pytest.raises(asyncpg.exceptions.AdminShutdownError):
            await service.deliver_due(desk, sender, limit=1)
        assert await service.deliver_due(desk, sender, limit=1) == 1
        assert await status_of(rt.pool, later) == ("sent", None)
        assert await status_of(rt.pool, stopped) == ("handing_over", None)  # the sweep's
        await sender.close()
    assert smtp.accepted == [second]
    [session] = smtp.sessions
    assert session[:6] == ["EHLO", "MAIL", "RCPT", "RSET", "MAIL", "RCPT"]


class Watching(SmtpSender):
    """The real sender; at each MAIL FROM it reads every delivery's status and attempts."""

    def __init__(self, pool: asyncpg.Pool, port: int) -> None:
        super().__init__("127.0.0.1", port, timeout=5)
        self.pool = pool
        self.seen: list[set[tuple[str, int, bool]]] = []

    async def begin(self, sender: str, recipient: str) -> None:
        rows = await self.pool.fetch(
            "SELECT status, attempts, handed_over_at IS NOT NULL AS marked FROM deliveries"
        )
        self.seen.append({(r["status"], r["attempts"], r["marked"]) for r in rows})
        await super().begin(sender, recipient)


async def test_r12_the_claim_marks_the_whole_batch_handing_over_before_its_first_mail(
    backing: Backing,
) -> None:
    """Issue 17 [ours]: the batch's hand-over mark is its claim's statement (no statement per
    mail before DATA): at the first MAIL FROM every mail of the batch is ``handing_over``,
    counted as attempted once, and a fast batch ends with each recorded ``sent``."""
    async with RefusingSmtp() as smtp, runtime_with(smtp, backing) as rt:
        sender = Watching(rt.pool, smtp.port)
        await queue(rt.pool, address("a"), address("b"), address("c"))
        assert await service.deliver_due(delivery_desk(rt), sender, limit=10) == 3
        await sender.close()
        rows = await rt.pool.fetch("SELECT status, attempts FROM deliveries")
    assert sender.seen[0] == {("handing_over", 1, True)}
    assert {(r["status"], r["attempts"]) for r in rows} == {("sent", 1)}
    assert len(smtp.accepted) == 3


async def test_a_bad_sequence_reply_is_transient_and_the_mail_goes_out_later(
    backing: Backing,
) -> None:
    """Finding 6: "503 5.5.1 bad sequence of commands" is the session's fault, not the mail's:
    the mail is postponed (never ``failed``), the session is dropped, the retry delivers it."""
    kari = address("kari")
    async with RefusingSmtp() as smtp, runtime_with(smtp, backing) as rt:
        desk = delivery_desk(rt)
        sender = SmtpSender("127.0.0.1", smtp.port, timeout=5)
        [mail] = await queue(rt.pool, kari)
        clock = FrozenClock(datetime.now(UTC))
        desk.clock = clock
        smtp.refuse_mail_503 = 1
        assert await service.deliver_due(desk, sender, limit=5) == 1
        status, error = await status_of(rt.pool, mail)
        assert status == "pending" and error is not None and error.startswith("503")
        clock.advance(domain.retry_delay(0))
        assert await service.deliver_due(desk, sender, limit=5) == 1
        assert await status_of(rt.pool, mail) == (
            "sent",
            "503 5.5.1 Error: bad sequence of commands",
        )
        await sender.close()
    assert smtp.accepted == [kari]
    assert len(smtp.sessions) == 2  # the session that answered 503 was dropped
